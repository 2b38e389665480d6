"""Serving over a loaded bundle: candidates -> per-signal scores -> blend -> filter/rank -> explain.

One request runs these stages:

1. **user vectors** (the candidate side): a user the bundle knows uses its trained vectors; a user
   with interactions given in the request (``history_override``, e.g. trained history plus the
   API's online events) is folded in per signal with each model's ``fold_in``; a user with no
   interactions at all is a *cold start* and gets the answer its variant's ``cold_start`` policy
   names:

   - ``popularity`` (the default, and what ``tuned``, ``als``, ``lightgcn``, ``popularity`` and
     per-request weights use): the blend {popularity: 1}, i.e. the most popular items that pass
     the filter (falling back to ``content`` when the bundle has no popularity signal);
   - ``content`` (the ``content`` variant): the content signal against the content profile of the
     100 most popular items that pass the filter, i.e. the items most typical of what is popular in
     the requested slice (falling back to ``popularity`` when the bundle has no content signal).

2. **blend**: the fused query [w_s * u_s] for the variant's weights (sticky assignment, a named
   variant, or validated per-request weights);
3. **filter/rank**: the usearch index returns the exact top-n of the items that pass the filter and
   are not in the user's history;
4. **scores and explanation**: every item's per-signal contributions (they add up to its score),
   and on request an Explanation (hybrid/explain.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from etl.topk import topk
from hybrid.bundle import Bundle
from hybrid.explain import Explanation, explain_items, item_text
from hybrid.index import ItemFilter
from hybrid.variants import Variant

__all__ = ["History", "UserState", "ContributionTable", "RecommendedItem", "Recommendations", "RankingPlan",
           "SimilarItem", "HybridRecommender"]

_CONTENT_PROFILE_ITEMS = 100


@dataclass(frozen=True)
class History:
    """A user's interactions as item rows, with optional values (ratings, confidences)."""

    items: np.ndarray
    values: np.ndarray | None = None

    def __post_init__(self) -> None:
        items = np.asarray(self.items, dtype=np.int64).ravel()
        object.__setattr__(self, "items", items)
        if self.values is not None:
            values = np.asarray(self.values, dtype=np.float32).ravel()
            if values.shape != items.shape:
                raise ValueError(f"history has {values.size} values for {items.size} items")
            object.__setattr__(self, "values", values)

    def __len__(self) -> int:
        return int(self.items.size)

    def extend(self, items: np.ndarray, values: np.ndarray | None = None) -> History:
        """This history followed by new interactions (values default to 1 where absent)."""
        items = np.asarray(items, dtype=np.int64).ravel()
        if self.values is None and values is None:
            return History(np.concatenate([self.items, items]))
        old = self.values if self.values is not None else np.ones(len(self), np.float32)
        new = np.ones(items.size, np.float32) if values is None else np.asarray(values, np.float32).ravel()
        return History(np.concatenate([self.items, items]), np.concatenate([old, new]))


@dataclass(frozen=True)
class UserState:
    """Where a request's user vectors came from."""

    user_id: str
    user_row: int | None
    """Row in the bundle's users; None for a user the bundle does not know."""
    parts: dict[str, np.ndarray]
    """Each signal's user vector."""
    history: History
    source: str
    """'trained', 'folded_in' or 'no_history'."""

    @property
    def cold_start(self) -> bool:
        """True when the bundle has no trained vectors for the user."""
        return self.user_row is None or self.source == "no_history"


class ContributionTable:
    """Per-signal contributions of a ranked list's items, computed for the whole list the first
    time one is read (an answer that does not show them never pays for them)."""

    def __init__(self, bundle: Bundle, query: np.ndarray, rows: np.ndarray) -> None:
        self._bundle, self._query, self._rows = bundle, query, rows
        self._table: list[dict[str, float]] | None = None

    def __getitem__(self, k: int) -> dict[str, float]:
        """The k-th item's {signal: contribution}."""
        if self._table is None:
            fusion = self._bundle.fusion
            parts = fusion.contributions(self._query, self._bundle.index.item_vectors(self._rows))
            columns = [np.ravel(parts[s]).tolist() for s in fusion.signals]
            self._table = [dict(zip(fusion.signals, values, strict=True)) for values in zip(*columns, strict=True)]
        return self._table[k]


@dataclass(frozen=True)
class RecommendedItem:
    item_id: str
    item_row: int
    rank: int
    """1-based."""
    score: float
    title: str
    table: ContributionTable = field(repr=False, compare=False)
    explanation: Explanation | None = None

    @property
    def contributions(self) -> dict[str, float]:
        """Per-signal parts of ``score``; they add up to it."""
        return self.table[self.rank - 1]


@dataclass(frozen=True)
class Recommendations:
    user_id: str
    items: list[RecommendedItem]
    variant: str
    """The variant the request resolved to (assigned, requested, or 'custom')."""
    weights: dict[str, float]
    """The blend weights actually used (the cold-start blend for a cold start)."""
    cold_start: bool
    cold_start_reason: str | None
    user_source: str
    """'trained', 'folded_in' or 'no_history'."""
    bundle_version: str = ""

    def __len__(self) -> int:
        return len(self.items)

    @property
    def item_ids(self) -> list[str]:
        return [r.item_id for r in self.items]


@dataclass(frozen=True)
class RankingPlan:
    """A recommendation request before its ranking: the user, the blend and the fused query."""

    state: UserState
    variant: Variant
    weights: dict[str, float]
    """The blend weights used (the cold-start blend for a cold start)."""
    query: np.ndarray
    """The fused query the items are ranked by."""
    cold_start_reason: str | None
    n: int
    """Items wanted."""
    exclude: np.ndarray
    """Item rows the ranking leaves out (the user's history unless seen items are wanted)."""
    allowed: np.ndarray | None
    """The item filter's mask over item rows (None: every item)."""


@dataclass(frozen=True)
class SimilarItem:
    item_id: str
    item_row: int
    rank: int
    score: float
    """Cosine similarity (fused: the weighted mean of per-signal cosines)."""
    title: str
    signals: dict[str, float] = field(default_factory=dict)
    """Per-signal weighted cosines; they add up to ``score``."""


class HybridRecommender:
    """Recommendations, similar items and explanations from one loaded bundle."""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        self.fusion = bundle.fusion
        self._popular: np.ndarray | None = None

    # -- stage 1: user vectors -----------------------------------------------------------------
    def history(self, user_id: str) -> History:
        """The user's training interactions, oldest first (empty for a user the bundle does not
        know); extend it with newer events to build a ``history_override``."""
        row = self._user_row(user_id)
        if row is None:
            return History(np.zeros(0, np.int64), np.zeros(0, np.float32))
        seen = self.bundle.history
        lo, hi = seen.indptr[row], seen.indptr[row + 1]
        return History(seen.indices[lo:hi].copy(), np.asarray(seen.data[lo:hi], np.float32))

    def user_state(self, user_id: str, history_override: History | Any = None) -> UserState:
        """User vectors per signal: trained, folded in from a given history, or none."""
        user_id = str(user_id)
        row = self._user_row(user_id)
        if history_override is None:
            if row is not None:
                parts = {s: np.asarray(v[0], np.float32) for s, v in self.fusion.user_parts(np.array([row])).items()}
                return UserState(user_id, row, parts, self.history(user_id), "trained")
            history = History(np.zeros(0, np.int64))
        else:
            history = self._as_history(history_override)
        if len(history) == 0:
            parts = {s: self.fusion.models[s].fold_in(history.items, history.values) for s in self.fusion.signals}
            return UserState(user_id, row, parts, history, "no_history")
        parts = {
            s: np.asarray(self.fusion.models[s].fold_in(history.items, history.values), np.float32)
            for s in self.fusion.signals
        }
        return UserState(user_id, row, parts, history, "folded_in")

    # -- stage 2: the blend ------------------------------------------------------------------------
    def blend(
        self,
        state: UserState,
        variant: str | Variant | None = None,
        weights: Mapping[str, float] | None = None,
        allowed: np.ndarray | None = None,
    ) -> tuple[Variant, dict[str, float], np.ndarray, str | None]:
        """(variant, weights used, fused query, cold-start reason) for a user state; ``variant`` is a
        name of the bundle's, or a Variant itself (an experiment's arm)."""
        chosen = variant if isinstance(variant, Variant) else self.bundle.variants.resolve(state.user_id, variant, weights)
        used = dict(chosen.weights)
        parts = state.parts
        reason = None
        if state.source == "no_history":
            used, parts, reason = self._cold_blend(chosen, parts, allowed)
        elif state.user_row is None:
            reason = (
                f"user unknown to bundle {self.bundle.version}: "
                f"vectors folded in from {len(state.history)} interactions"
            )
        return chosen, used, self.fusion.query(parts, used), reason

    def _cold_blend(
        self, chosen: Variant, parts: dict[str, np.ndarray], allowed: np.ndarray | None
    ) -> tuple[dict[str, float], dict[str, np.ndarray], str]:
        signals = self.fusion.signals
        policy = chosen.cold_start
        if policy == "content" and "content" not in signals:
            policy = "popularity"
        if policy == "popularity" and "popularity" not in signals:
            policy = "content" if "content" in signals else None
        if policy == "popularity":
            weights = {s: float(s == "popularity") for s in signals}
            return weights, parts, "no interactions: the most popular items (variant cold-start policy 'popularity')"
        if policy == "content":
            popular = self._popular_items(allowed)[:_CONTENT_PROFILE_ITEMS]
            parts = dict(parts)
            # fold-ins take histories oldest first: the most popular item goes last, as the newest
            parts["content"] = np.asarray(self.fusion.models["content"].fold_in(popular[::-1], None), np.float32)
            weights = {s: float(s == "content") for s in signals}
            return weights, parts, (
                "no interactions: content profile of the most popular items that pass the filter "
                "(variant cold-start policy 'content')"
            )
        raise ValueError(f"no cold-start answer: the bundle has neither a popularity nor a content signal ({signals})")

    # -- stages 3-4: filter, rank, score, explain ---------------------------------------------------
    def recommend(
        self,
        user_id: str,
        n: int = 10,
        *,
        variant: str | None = None,
        weights: Mapping[str, float] | None = None,
        item_filter: ItemFilter | None = None,
        exclude_seen: bool = True,
        history_override: History | Any = None,
        explain: bool = False,
    ) -> Recommendations:
        """Top-n items for a user (fewer when the filter leaves fewer).

        ``history_override`` replaces the trained history (item rows, or (items, values), or a
        History); use ``history(user_id).extend(...)`` to add online events to the trained ones.
        The three steps are public for callers that rank several requests' queries together (the
        API's batched searches): ``plan``, ``FusedIndex.search`` of its query, ``answer``.
        """
        plan = self.plan(user_id, n, variant=variant, weights=weights, item_filter=item_filter,
                         exclude_seen=exclude_seen, history_override=history_override)
        rows, scores = self.bundle.index.search(plan.query, plan.n, exclude=plan.exclude, allowed=plan.allowed)
        return self.answer(plan, rows, scores, explain=explain)

    def plan(
        self,
        user_id: str,
        n: int = 10,
        *,
        variant: str | Variant | None = None,
        weights: Mapping[str, float] | None = None,
        item_filter: ItemFilter | None = None,
        exclude_seen: bool = True,
        history_override: History | Any = None,
    ) -> RankingPlan:
        """Stages 1-2 of ``recommend``: the user's vectors, the blend and what ranking leaves out."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        state = self.user_state(user_id, history_override)
        allowed = None if item_filter is None or item_filter.is_empty else item_filter.mask(self.bundle.catalog)
        chosen, used, query, reason = self.blend(state, variant, weights, allowed)
        exclude = state.history.items if exclude_seen else np.zeros(0, np.int64)
        return RankingPlan(state, chosen, used, query, reason, n, exclude, allowed)

    def answer(self, plan: RankingPlan, rows: np.ndarray, scores: np.ndarray, explain: bool = False) -> Recommendations:
        """Stage 4 of ``recommend``: the ranked items (``FusedIndex.search`` of the plan's query)
        with their per-signal contributions, and explanations when asked."""
        state, query = plan.state, plan.query
        table = ContributionTable(self.bundle, query, rows)
        ids, titles = self.bundle.items.ids, item_text(self.bundle).titles
        expls = self._explain(state, query, rows) if explain else [None] * len(rows)
        items = [
            RecommendedItem(str(ids[row]), row, k + 1, score, str(titles[row]), table, expls[k])
            for k, (row, score) in enumerate(zip(rows.tolist(), scores.tolist(), strict=True))
        ]
        return Recommendations(
            user_id=state.user_id,
            items=items,
            variant=plan.variant.name,
            weights=plan.weights,
            cold_start=state.cold_start,
            cold_start_reason=plan.cold_start_reason,
            user_source=state.source,
            bundle_version=self.bundle.version,
        )

    def explain(
        self,
        user_id: str,
        item_id: str,
        *,
        variant: str | Variant | None = None,
        weights: Mapping[str, float] | None = None,
        history_override: History | Any = None,
    ) -> Explanation:
        """Why ``item_id`` scores as it does for ``user_id`` under the same blend recommend uses.

        UnknownIdError for an item the bundle does not know.
        """
        row = self.bundle.items.row(item_id)
        state = self.user_state(user_id, history_override)
        _, used, query, _ = self.blend(state, variant, weights)
        return self._explain(state, query, [row])[0]

    def _explain(self, state: UserState, query: np.ndarray, item_rows: Any) -> list[Explanation]:
        return explain_items(
            self.bundle,
            user_id=state.user_id,
            user_row=state.user_row,
            history=state.history.items,
            query=query,
            item_rows=item_rows,
        )

    # -- similar items ----------------------------------------------------------------------------
    def similar_items(
        self, item_id: str, n: int = 10, signal: str = "fused", item_filter: ItemFilter | None = None
    ) -> list[SimilarItem]:
        """Items most like ``item_id`` by cosine of one signal's item vectors, or 'fused'.

        'fused' adds per-signal cosines weighted by the tuned weights (popularity left out: it has
        no item-to-item similarity). An item with no training interactions has no collaborative
        vectors, so it is compared through its content part alone.
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        row = self.bundle.items.row(item_id)
        weights = self._similarity_weights(row, signal)
        scores = np.zeros(len(self.bundle.items), dtype=np.float32)
        per_signal = {}
        for s, w in weights.items():
            part = np.float32(w) * self.bundle.index.cosines(row, self.fusion.slices[s])
            per_signal[s] = part
            scores += part
        eligible = np.ones(len(scores), dtype=bool) if item_filter is None else item_filter.mask(self.bundle.catalog)
        eligible[row] = False
        cand = np.flatnonzero(eligible)
        if len(cand) == 0:
            return []
        s = scores[cand]
        order, _ = topk(s, n)
        order = order[order >= 0]
        titles = item_text(self.bundle).titles
        return [
            SimilarItem(
                str(self.bundle.items.ids[cand[j]]),
                int(cand[j]),
                k + 1,
                float(s[j]),
                str(titles[cand[j]]),
                {t: float(per_signal[t][cand[j]]) for t in per_signal},
            )
            for k, j in enumerate(order)
        ]

    def _similarity_weights(self, row: int, signal: str) -> dict[str, float]:
        signals = [s for s in self.fusion.signals if s != "popularity"]
        if signal != "fused":
            if signal not in signals:
                raise ValueError(f"unknown similarity signal {signal!r}; known: {['fused', *signals]}")
            return {signal: 1.0}
        if not signals:
            raise ValueError("the bundle has no signal with item-to-item similarity (only popularity)")
        seen_by_item = self.bundle.seen_by_item
        cold = seen_by_item.indptr[row + 1] == seen_by_item.indptr[row]
        if cold and "content" in signals:
            signals = ["content"]
        tuned = self.bundle.weights
        weights = {s: tuned.get(s, 0.0) for s in signals}
        if sum(weights.values()) <= 0:
            weights = dict.fromkeys(signals, 1.0)
        total = sum(weights.values())
        return {s: w / total for s, w in weights.items() if w > 0}

    # -- helpers --------------------------------------------------------------------------------
    def _user_row(self, user_id: str) -> int | None:
        users = self.bundle.users
        return users.row(user_id) if user_id in users else None

    def _as_history(self, value: Any) -> History:
        if isinstance(value, History):
            history = value
        elif isinstance(value, tuple) and len(value) == 2:
            history = History(value[0], value[1])
        else:
            history = History(np.asarray(value))
        n_items = len(self.bundle.items)
        bad = history.items[(history.items < 0) | (history.items >= n_items)]
        if bad.size:
            raise ValueError(f"history has item rows outside [0, {n_items}): {bad[:5].tolist()}")
        return history

    def _popular_items(self, allowed: np.ndarray | None) -> np.ndarray:
        if self._popular is None:
            counts = np.diff(self.bundle.seen_by_item.indptr)
            self._popular = topk(counts.astype(np.float64), len(counts))[0]
        order = self._popular
        return order if allowed is None else order[allowed[order]]
