"""Why an item was recommended: exact signal contributions, then evidence for each.

1. Contributions: w_s * c_s * score_s for every signal; by the fused identity they add up to the
   item's score exactly (../shared/DESIGN.md), so shares of the score are honest.
2. Drivers: the history items that pull the item up most in the signal that matters most (ALS
   for a collaborative recommendation, LightGCN for a graph one, content for a content one, svd
   for an item-item one, sequence for a what-comes-next one; when popularity leads, the first of
   these the bundle has). Every signal's fold-in splits by history item
   (``FactorModel.history_terms``): u = sum_j u_j, so the folded-in score sum_j <u_j, i_item> has
   one exact term per history item, its pull. svd, sequence and content: u_j = w_j p_j over rows
   of their ``projection_`` (w_j by recency; for sequence only the last ``window`` items; for
   content the unit TF-IDF rows, weights over their sum); ALS: u_j = c_j A^-1 y_j, the user's
   solve applied to the history item (implicit's ``explain``); LightGCN: u_j = f_j / sqrt(d_j n),
   f_j the item's row of the spectral basis's extension V S^-1 M (a trained user's history gives
   back its trained vector). Drivers rank the pulls as <a_j, b_i> from ``FactorModel.pull_operands``
   (by default a_j = u_j, b_i = i_item; ALS splits them as <c_j y_j, A^-1 y_i>, svd moves its
   per-column shrinkage to the item's side). For svd, sequence and content the terms add up to
   the served score; a trained ALS or LightGCN user's stored vector is training's, which the fold-in of the same
   history approximates (ALS: the same system, solved by training's conjugate-gradient steps; LightGCN: to
   the basis residual).
3. Shared genres and tags between the item and the user's history, most frequent first.
4. A shortest path in the user-item graph over the user's 2-hop neighbourhood in the training
   interactions: you -> an item you saw -> another user who saw it -> this item (a search over
   the CSC columns of the training matrix).
5. One sentence a person can read.

Item text (titles, genres, tags, counts) is read from ``ItemText``, arrays indexed by item row
built once per bundle (``item_text``), not from the pandas table per item.
"""

from __future__ import annotations

import re
import threading
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, NamedTuple

import numba
import numpy as np

from hybrid.item_table import ItemTable, as_list
from hybrid.screening import exact_dot
from models.signals import SIGNALS, driver_signals

if TYPE_CHECKING:
    from hybrid.bundle import Bundle

__all__ = ["Driver", "PathStep", "Explanation", "explain_pair", "explain_items", "SIGNAL_LABELS", "ItemText",
           "item_text"]

SIGNAL_LABELS: dict[str, str] = {s.name: s.label for s in SIGNALS}
_DRIVER_SIGNALS = driver_signals()


class Driver(NamedTuple):
    """A history item and how strongly it points at the recommended item (a named tuple: an
    explained list builds some thirty)."""

    item_id: str
    title: str
    similarity: float
    """How hard the history item pulls the recommended item up in the driver signal: its term of
    the folded-in user's score for the item (``FactorModel.pull_operands``: ALS c_j <A^-1 y_j,
    y_item>; svd, sequence, content and lightgcn w_j <p_j, i_item> over their fold-in rows)."""
    row: int
    """The history item's row in the bundle's catalogue."""


@dataclass(frozen=True)
class PathStep:
    kind: str
    """'user' or 'item'."""
    id: str
    """External id ('you' for the user asking when it has no id in the bundle)."""
    label: str


@dataclass(frozen=True)
class Explanation:
    """Why an item scores as it does for a user.

    The contributions, shares and drivers are computed with the explanation (for a whole list at
    once, by ``explain_items``); the rest of the evidence (shared genres and tags, the graph path,
    the sentence) is computed the first time it is read, so a client that asks for contributions
    only does not pay for a graph search.
    """

    user_id: str
    item_id: str
    title: str
    score: float
    contributions: dict[str, float]
    """Per-signal parts of the score; they add up to ``score``."""
    shares: dict[str, float]
    """Each signal's share of the positive contributions (sums to 1 when any is positive)."""
    main_signal: str | None
    drivers: list[Driver]
    driver_signal: str | None
    item_row: int
    """The item's row in the bundle's catalogue."""
    _evidence: _HistoryEvidence = field(repr=False, compare=False)
    _driver_rows: list[int] = field(repr=False, compare=False)

    @cached_property
    def shared_genres(self) -> list[str]:
        """The item's genres that the rest of the history carries, most frequent first."""
        return self._evidence.shared_labels(self.item_row, "genres")

    @cached_property
    def shared_tags(self) -> list[str]:
        """The item's tags that the rest of the history carries, most frequent first."""
        return self._evidence.shared_labels(self.item_row, "tags")

    @cached_property
    def graph_path(self) -> list[PathStep] | None:
        """you -> an item you saw -> another user who saw it -> this item (or you -> this item)."""
        return self._evidence.path(self.item_row, self.item_id, self.title, self._driver_rows)

    @cached_property
    def sentence(self) -> str:
        """One sentence a person can read."""
        path = self.graph_path if self.main_signal == "lightgcn" else None  # only a graph reason names it
        return _sentence(self.main_signal, self.shares, self.drivers, path, self.shared_genres, self._evidence.text,
                         self.item_row)


class _Labels:
    """Case-folded labels of one metadata column (genres or tags), by item row.

    ``keys`` holds, per item, one case-folded label id for each distinct raw label (so "Drama"
    and "drama" on one item count twice, as a count over raw labels would); ``own`` holds the
    item's own labels as (label id, display form) in first-seen order, the last display form of a
    case-folded label winning.
    """

    def __init__(self, cells: Sequence[Sequence[str]]) -> None:
        ids: dict[str, int] = {}
        indptr = [0]
        indices: list[int] = []
        self.own: list[tuple[tuple[int, str], ...]] = []
        for cell in cells:
            labels = as_list(cell)
            for g in set(labels):
                indices.append(ids.setdefault(g.casefold(), len(ids)))
            indptr.append(len(indices))
            mine: dict[int, str] = {}
            for g in labels:
                mine[ids.setdefault(g.casefold(), len(ids))] = g
            self.own.append(tuple(mine.items()))
        self.n_labels = len(ids)
        self.indptr = np.asarray(indptr, dtype=np.int64)
        self.indices = np.asarray(indices, dtype=np.int64)

    def counts(self, rows: np.ndarray) -> np.ndarray:
        """How many of the items ``rows`` carry each label (label id -> count)."""
        starts, ends = self.indptr[rows], self.indptr[rows + 1]
        lengths = ends - starts
        if lengths.sum() == 0:
            return np.zeros(self.n_labels, dtype=np.int64)
        offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
        picked = self.indices[offsets + np.arange(int(lengths.sum()))]
        return np.bincount(picked, minlength=self.n_labels)

    def shared(self, item_row: int, rows: np.ndarray, counts: np.ndarray | None = None) -> list[str]:
        """The item's labels that some of ``rows`` carry, most frequent first (then the item's order);
        ``counts``: ``self.counts(rows)`` when the caller has it."""
        own = self.own[item_row]
        if not own or len(rows) == 0:
            return []
        if counts is None:
            counts = self.counts(rows)
        shared = [(k, g) for k, g in own if counts[k] > 0]
        if len(shared) > 1:
            shared.sort(key=lambda kg: -counts[kg[0]])
        return [g for _, g in shared]


class ItemText:
    """What explanations and answers show of items, as arrays indexed by item row."""

    def __init__(self, items_table: ItemTable, ids: np.ndarray) -> None:
        self.table = items_table
        self.titles = np.array(
            [t if t else str(i) for t, i in zip(items_table.title.tolist(), ids, strict=True)], dtype=object
        )
        """The title, or the item id where the title is missing or empty."""
        self.genres = _Labels(items_table.genres)
        self.tags = _Labels(items_table.tags)
        self.added = items_table.added
        """True for an item added while serving (hybrid/catalogue.py)."""
        self.counts: list[int] = items_table.count.tolist()
        """The item table's interaction count."""


_TEXT: dict[int, ItemText] = {}
_TEXT_LOCK = threading.Lock()


def item_text(bundle: Bundle) -> ItemText:
    """The bundle's ItemText, built on first use and kept while the bundle lives."""
    key = id(bundle)
    text = _TEXT.get(key)
    if text is not None and text.table is bundle.items_table:
        return text
    with _TEXT_LOCK:
        text = _TEXT.get(key)
        if text is None or text.table is not bundle.items_table:
            fresh = text is None
            text = ItemText(bundle.items_table, bundle.items.ids)
            _TEXT[key] = text
            if fresh:
                weakref.finalize(bundle, _TEXT.pop, key, None)
    return text


def explain_pair(
    bundle: Bundle,
    *,
    user_id: str,
    user_row: int | None,
    history: np.ndarray,
    query: np.ndarray,
    item_row: int,
    max_drivers: int = 3,
    max_neighbours: int = 50,
) -> Explanation:
    """Explain one (user, item) pair.

    ``query`` is the fused query the item was ranked with, ``history`` the user's item rows oldest
    first (the trained ones, or the override the request used; svd and sequence weigh them by
    recency, as their ``fold_in`` does), ``user_row`` the user's row in the training graph (None
    for a user unknown to the bundle).
    """
    return explain_items(bundle, user_id=user_id, user_row=user_row, history=history, query=query,
                         item_rows=[item_row], max_drivers=max_drivers, max_neighbours=max_neighbours)[0]


def explain_items(
    bundle: Bundle,
    *,
    user_id: str,
    user_row: int | None,
    history: np.ndarray,
    query: np.ndarray,
    item_rows: Sequence[int] | np.ndarray,
    max_drivers: int = 3,
    max_neighbours: int = 50,
) -> list[Explanation]:
    """``explain_pair`` of each of ``item_rows``, in order, for one user and query.

    A recommendation list is explained item by item with the same history and query: what depends
    only on those (the sorted history, the labels it carries, the contributions as one product) is
    done once instead of once per item, and the drivers of all items that share a driver signal
    come from one kernel call. The items' other evidence is computed when first read.
    """
    ordered = np.asarray(history, dtype=np.int64).ravel()
    history = np.unique(ordered)
    rows = np.asarray(item_rows, dtype=np.int64).ravel()
    if len(rows) == 0:
        return []
    n_items = len(bundle.items)  # the drivers' kernel reads rows without bounds checks
    for name, got in (("history", history), ("item_rows", rows)):
        bad = got[(got < 0) | (got >= n_items)]
        if bad.size:
            raise ValueError(f"{name} has item rows outside [0, {n_items}): {bad[:5].tolist()}")
    text = item_text(bundle)
    vecs = bundle.index.item_vectors(rows)
    parts = bundle.fusion.contributions(np.asarray(query, np.float32), vecs)
    evidence = _HistoryEvidence(bundle, text, ordered, history, str(user_id), user_row, max_neighbours)
    row_list = rows.tolist()
    signals = list(parts)
    # plain floats once per signal: float() of a numpy scalar per item and signal costs more
    columns = [np.ravel(parts[s]).tolist() for s in signals]
    fallback = next((s for s in _DRIVER_SIGNALS if s in bundle.signals), None)

    items = []
    for values in zip(*columns):
        contrib = dict(zip(signals, values))
        positive = {s: max(v, 0.0) for s, v in contrib.items()}
        total = sum(positive.values())
        shares = {s: (v / total if total > 0 else 0.0) for s, v in positive.items()}
        main = max(contrib, key=contrib.__getitem__) if total > 0 else None
        items.append((contrib, shares, main, main if main in _DRIVER_SIGNALS else fallback))

    drivers: list[tuple[list[Driver], list[int]]] = [([], []) for _ in row_list]
    for signal in dict.fromkeys(item[3] for item in items):
        if signal is not None:
            at = [k for k, item in enumerate(items) if item[3] == signal]
            found = evidence.drivers(signal, [row_list[k] for k in at], max_drivers)
            for k, got in zip(at, found, strict=True):
                drivers[k] = got

    ids, titles = bundle.items.ids, text.titles
    return [
        Explanation(str(user_id), str(ids[item_row]), str(titles[item_row]), float(sum(contrib.values())), contrib,
                    shares, main, item_drivers, driver_signal, item_row, evidence, driver_rows)
        for item_row, (contrib, shares, main, driver_signal), (item_drivers, driver_rows)
        in zip(row_list, items, drivers, strict=True)
    ]


# -- evidence ------------------------------------------------------------------------------------
def lowest_common(a: np.ndarray, b: np.ndarray, skip: int | None = None) -> int | None:
    """The lowest value in both sorted arrays of distinct values other than ``skip``; None when none.

    Reads the shorter array from its front in growing chunks, each looked up in the longer one by
    binary search, and stops at the first chunk with a common value: two popular items' viewers
    (tens of thousands each at 25M interactions) usually share one near the front, where marking
    one item's viewers in a mask over every user and gathering the other's cost a pass over both
    (the explained query's graph paths were a third of its server CPU on the 25M bundle).
    """
    short, long = (a, b) if len(a) <= len(b) else (b, a)
    if len(long) == 0:
        return None
    start, size = 0, 64
    while start < len(short):
        chunk = short[start : start + size]
        found = long[np.minimum(np.searchsorted(long, chunk), len(long) - 1)] == chunk
        if skip is not None:
            found &= chunk != skip
        if found.any():
            return int(chunk[int(np.argmax(found))])
        start, size = start + size, size * 4
    return None


class _HistoryEvidence:
    """What the explanations of one user's items share: the history, the labels it carries, the
    user's end of the graph path.

    Explanations read their evidence lazily, maybe from several threads: the label counts are
    guarded by a lock.
    """

    def __init__(self, bundle: Bundle, text: ItemText, ordered: np.ndarray, history: np.ndarray, user_id: str,
                 user_row: int | None, max_neighbours: int) -> None:
        self.bundle = bundle
        self.text = text
        self.ordered = ordered
        """The history as given, oldest first."""
        self.history = history
        """Sorted and unique."""
        self.rows = history.tolist()
        self.members = set(self.rows)
        self.user_row = user_row
        self.max_neighbours = max_neighbours
        self.you = PathStep("user", user_id, "you")
        self._counts: dict[str, list[int]] = {}
        self._lock = threading.Lock()

    def drivers(self, signal: str, item_rows: list[int], k: int) -> list[tuple[list[Driver], list[int]]]:
        """Per item of ``item_rows``: the history items (the item itself left out) that pull it up
        most in ``signal`` (``Driver.similarity``), at most ``k`` and only those that point at the
        item at all (above rounding noise), ties by row; and their rows."""
        if k <= 0 or not self.rows:
            return [([], []) for _ in item_rows]
        targets = np.asarray(item_rows, dtype=np.int64)
        # pull(j, i) = <vectors[j], factors[i]>: each history item's term of the signal's score of
        # each item (FactorModel.pull_operands), in unit-stride float32 rows (the kernel's products
        # do not vectorise over strided ones: 4.6x as long when it read the fused columns in place)
        history, vectors, factors = self.bundle.fusion.models[signal].pull_operands(self.ordered, targets)
        if len(history) == 0:
            return [([], []) for _ in item_rows]
        found = np.full((len(targets), k), -1, dtype=np.int64)
        sims = np.zeros((len(targets), k), dtype=np.float64)
        _top_pulls(vectors, np.arange(len(history)), history, factors, targets, k, found, sims)
        ids, titles = self.bundle.items.ids, self.text.titles
        out: list[tuple[list[Driver], list[int]]] = []
        for item_found, item_sims in zip(found.tolist(), sims.tolist(), strict=True):
            rows = [r for r in item_found if r >= 0]
            out.append(([Driver(str(ids[r]), str(titles[r]), v, r) for r, v in zip(rows, item_sims)], rows))
        return out

    def shared_labels(self, item_row: int, name: str) -> list[str]:
        """The item's labels of ``name`` ('genres' or 'tags') that the rest of the history carries,
        most frequent first."""
        labels: _Labels = getattr(self.text, name)
        if item_row in self.members:
            return labels.shared(item_row, self.history[self.history != item_row])
        with self._lock:  # the whole history: its label counts serve every item outside it
            counts = self._counts.get(name)
            if counts is None:
                counts = self._counts[name] = labels.counts(self.history).tolist()
        return labels.shared(item_row, self.history, counts)

    def path(self, item_row: int, item_id: str, title: str, driver_rows: list[int]) -> list[PathStep] | None:
        """Shortest path user -> seen item -> co-user -> target over the user's 2-hop neighbourhood.

        The neighbourhood is the user's first ``max_neighbours`` history items, stronger drivers
        first (then by row), and for each the users who saw both it and the target. Edges weigh 1,
        the user's edges 1 + 1e-3 * rank, so the shortest path is the direct one when the target
        is among those items, else the one through the best-ranked item that shares a viewer with
        the target, through the lowest-row such viewer. None when no such path exists.
        """
        if not self.rows:
            return None
        lead = [r for r in driver_rows if r in self.members][: self.max_neighbours]
        target = PathStep("item", item_id, title)
        if item_row in self.members and item_row in list(self._neighbours(lead)):
            return [self.you, target]
        by_item = self.bundle.seen_by_item  # each item's viewers sorted by row
        indptr, indices = by_item.indptr, by_item.indices
        watchers = indices[indptr[item_row] : indptr[item_row + 1]]
        user = self.user_row
        if len(watchers) == 0 or (user is not None and len(watchers) == 1 and int(watchers[0]) == user):
            return None
        for h in self._neighbours(lead):
            co_user = lowest_common(watchers, indices[indptr[h] : indptr[h + 1]], skip=user)
            if co_user is not None:
                uid = str(self.bundle.users.ids[co_user])
                return [self.you, PathStep("item", str(self.bundle.items.ids[h]), str(self.text.titles[h])),
                        PathStep("user", uid, f"user {uid}"), target]
        return None

    def _neighbours(self, lead: list[int]) -> Iterator[int]:
        """The path's history items in order: ``lead`` (the drivers), then the rest by row, at most
        ``max_neighbours`` in all."""
        yield from lead
        room = self.max_neighbours - len(lead)
        for h in self.rows[: self.max_neighbours + len(lead)]:
            if room <= 0:
                return
            if h not in lead:
                room -= 1
                yield h


@numba.njit(nogil=True, cache=True, boundscheck=False)
def _top_pulls(vectors, at, history, factors, targets, k, found, sims):  # pragma: no cover - jitted
    """Drivers of each target item ``targets[i]`` (item vector ``factors[i]``): the (at most) ``k``
    history items j with the largest pulls <vectors[at[j]], factors[i]>, by (-pull, j), leaving out the target
    itself and pulls at or below its floor (1e-6 |target| times the largest norm of the other
    history vectors: rounding noise); their item rows ``history[j]`` into ``found[i]`` (-1 after
    the last) and pulls into ``sims[i]``. ``history`` is sorted, so ties go to the lower row.

    A pull is summed in float64 the same way for every (j, i): it does not depend on the other
    targets (explaining one item or a list gives the same drivers), and equal vectors pull equally.

    Why a kernel (``python bench/driver_pulls.py --bundle-root ROOT``: the same rule in numpy,
    interleaved call by call, 200 users of the six-signal ml-latest-small bundle, 10 items explained
    a call, 2026-12-05, load 2.3): 13-100 us a call against numpy's 50-190 for sequence, content,
    lightgcn and svd (1.8-4x), but 200 against 130 for ALS, whose terms are long and dense; the same
    drivers on every call. An explained page costs ~2.3 ms of server CPU (README "Serving"), so the
    kernel saves 2-4% of it when one of the four leads and costs 3% when ALS does.
    """
    n = at.size
    norms = np.empty(n)
    for j in range(n):
        norms[j] = np.sqrt(exact_dot(vectors, at[j], vectors[at[j]]))
    for i in range(targets.size):
        t = targets[i]
        target = factors[i]
        top = 0.0
        for j in range(n):
            if history[j] != t and norms[j] > top:
                top = norms[j]
        floor = 1e-6 * np.sqrt(exact_dot(factors, i, target)) * top
        count = 0
        for j in range(n):
            if history[j] == t:
                continue
            pull = exact_dot(vectors, at[j], target)
            if not pull > floor or (count == k and not pull > sims[i, k - 1]):
                continue
            if count < k:
                count += 1
            p = count - 1
            while p > 0 and sims[i, p - 1] < pull:  # after the equal ones: ties keep ascending rows
                sims[i, p], found[i, p] = sims[i, p - 1], found[i, p - 1]
                p -= 1
            sims[i, p], found[i, p] = pull, history[j]


# -- words ---------------------------------------------------------------------------------------
_YEAR = re.compile(r"\s*\(\d{4}\)\s*$")


@lru_cache(maxsize=1 << 14)
def _short(title: str) -> str:
    """'Toy Story (1995)' -> 'Toy Story'."""
    return _YEAR.sub("", title) or title


def _join(names: list[str]) -> str:
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def _sentence(main: str | None, shares: dict[str, float], drivers: list[Driver], path: list[PathStep] | None,
              genres: list[str], text: ItemText, item_row: int) -> str:
    if main is None:
        head = "Recommended as the best remaining match (no signal scores it positively)"
    else:
        share = shares[main]
        label = SIGNAL_LABELS.get(main, main)
        qualifier = "mostly " if share < 0.995 else ""
        head = f"Recommended {qualifier}for its {label} signal ({share:.0%})"
    reason = _reason(main, drivers, path, text, item_row)
    sentence = head + (f": {reason}" if reason else "")
    if text.added[item_row]:
        sentence = "New in the catalogue. " + sentence
    if genres:
        sentence += f"; shares {', '.join(genres[:3])} with your history"
    return sentence + "."


def _reason(main: str | None, drivers: list[Driver], path: list[PathStep] | None, text: ItemText,
            item_row: int) -> str:
    names = _join([_short(d.title) for d in drivers[:2]])
    if main == "als" and drivers:
        return f"people who watched {names} also watched this"
    if main == "lightgcn" and path and len(path) >= 4:
        seen = _short(path[1].label)
        return f"it is close to you in the viewing graph: others who watched {seen}, as you did, watched this"
    if main == "lightgcn" and drivers:
        return f"viewers connected to {names} in the viewing graph watched this"
    if main == "content" and drivers:
        return f"it is similar in content to {names}"
    if main == "svd" and drivers:
        return f"people who watched {names} also watched this"
    if main == "sequence" and drivers:
        return f"it is often watched after {names}"
    if main == "popularity":
        return f"it is popular ({text.counts[item_row]} people watched it)"
    return ""
