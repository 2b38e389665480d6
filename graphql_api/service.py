"""What the resolvers do, apart from GraphQL: validation, fold-in of online events, recording
interactions and deleting a user's data. Resolvers only translate to and from schema types.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from graphql_api.context import Context
from graphql_api.engine import MAX_FIRST, Engine, OnlineHistory, check_first
from graphql_api.errors import BadInput
from graphql_api.events import Event
from graphql_api.input_limits import MAX_STRING_LENGTH
from graphql_api.store import DeletionReport
from hybrid.explain import Explanation, explain_items
from hybrid.index import ItemFilter
from hybrid.recommender import RankingPlan, Recommendations, SimilarItem

MAX_ID_LENGTH = MAX_STRING_LENGTH
MAX_ID_BATCH = 500
MAX_VALUE = 1e6
MAX_EPOCH = 253_402_300_799  # 9999-12-31T23:59:59Z


def check_id(value: str, field_name: str) -> str:
    value = str(value)
    if not value or len(value) > MAX_ID_LENGTH:
        raise BadInput(f"{field_name} must be 1 to {MAX_ID_LENGTH} characters, got {len(value)}", field=field_name)
    return value


# -- recommendations -------------------------------------------------------------------------------

@dataclass
class RecommendationRun:
    """One answered recommendations request, able to explain its items on demand."""

    engine: Engine
    plan: RankingPlan
    result: Recommendations
    history: OnlineHistory
    neighbours: int = 10
    explanations: dict[int, Explanation] = field(default_factory=dict)

    @property
    def user_known(self) -> bool:
        return self.engine.user_known(self.result.user_id) and not self.history.trained_hidden

    def explain(self, item_row: int) -> Explanation:
        """The explanation of one recommended item (computed when a client selects it).

        A selection applies to every item of the list, so the first call explains them all at once
        (hybrid.explain.explain_items shares the per-user work); a row outside the list is
        explained alone.
        """
        if item_row not in self.explanations:
            rows = [i.item_row for i in self.result.items if i.item_row not in self.explanations]
            if item_row not in rows:
                rows = [item_row]
            state = self.plan.state
            found = explain_items(
                self.engine.bundle,
                user_id=state.user_id,
                user_row=state.user_row,
                history=state.history.items,
                query=self.plan.query,
                item_rows=rows,
                max_neighbours=self.neighbours,
            )
            self.explanations.update(zip(rows, found, strict=True))
        return self.explanations[item_row]


async def recommend(
    ctx: Context,
    user_id: str,
    first: int,
    variant: str | None,
    weights: Mapping[str, float] | None,
    item_filter: Mapping[str, Any] | None,
    exclude_seen: bool,
) -> RecommendationRun:
    engine = ctx.engine
    user_id = check_id(user_id, "userId")
    check_first(first)
    engine.check_blend(variant, weights)
    flt = engine.item_filter(item_filter)
    recommender = engine.recommender
    async with ctx.runtime.searches.slot() as slot:  # concurrent requests' searches run as one batch
        state = await ctx.loaders.user_state.load(user_id)
        history = engine.online_history(state)
        plan = recommender.plan(
            user_id,
            first,
            variant=variant,
            weights=engine.restrict_weights(weights),
            item_filter=flt,
            exclude_seen=exclude_seen,
            history_override=history.override,
        )
        rows, scores = await slot.search(engine.bundle.index, plan.query, plan.n, plan.exclude, plan.allowed)
    result = recommender.answer(plan, rows, scores)
    ctx.variants.append(result.variant)
    return RecommendationRun(engine, plan, result, history, neighbours=ctx.settings.explain_neighbours)


async def explain(
    ctx: Context, user_id: str, item_id: str, variant: str | None, weights: Mapping[str, float] | None
) -> Explanation | None:
    """None when the bundle does not know the item."""
    engine = ctx.engine
    user_id = check_id(user_id, "userId")
    engine.check_blend(variant, weights)
    if engine.item_rows([item_id])[0] < 0:
        return None
    state = await ctx.loaders.user_state.load(user_id)
    history = engine.online_history(state)
    return engine.recommender.explain(
        user_id, str(item_id), variant=variant, weights=engine.restrict_weights(weights),
        history_override=history.override,
    )


def similar_items(
    ctx: Context, item_id: str, first: int, signal: str, item_filter: Mapping[str, Any] | None
) -> list[SimilarItem] | None:
    """None when the bundle does not know the item."""
    engine = ctx.engine
    check_first(first)
    if signal != "fused" and signal not in engine.signals:
        have = ", ".join(s for s in engine.signals if s != "popularity")
        raise BadInput(f"bundle {engine.version} has no {signal!r} signal for similarity; it has {have}",
                       field="signal")
    flt: ItemFilter | None = engine.item_filter(item_filter)
    if engine.item_rows([item_id])[0] < 0:
        return None
    try:
        return engine.recommender.similar_items(str(item_id), first, signal, flt)
    except ValueError as err:  # e.g. a bundle with popularity only
        raise BadInput(str(err), field="signal") from err


# -- users ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class HistoryEntry:
    item_id: str
    value: float
    timestamp: int | None
    source: str


@dataclass(frozen=True)
class UserView:
    user_id: str
    known: bool
    trained_interactions: int
    online_interactions: int
    deleted_at: float | None
    recent: list[HistoryEntry]


async def user(ctx: Context, user_id: str, first: int = MAX_FIRST) -> UserView:
    """The user's facts and up to ``first`` history entries (online newest first, then trained)."""
    engine = ctx.engine
    user_id = check_id(user_id, "userId")
    state = await ctx.loaders.user_state.load(user_id)
    history = engine.online_history(state)
    hidden = history.trained_hidden
    trained = engine.trained_history(user_id) if not hidden else None
    online = [
        HistoryEntry(e.item_id, e.value, e.timestamp, "online") for e in reversed(state.events)
    ]
    recent = online[:first]
    if trained is not None and len(recent) < first:
        values = trained.values if trained.values is not None else np.ones(len(trained), np.float32)
        ids = engine.bundle.items.ids
        recent += [
            HistoryEntry(str(ids[r]), float(v), None, "trained")
            for r, v in list(zip(trained.items.tolist(), values.tolist(), strict=True))[: first - len(recent)]
        ]
    return UserView(
        user_id=user_id,
        known=engine.user_known(user_id) and not hidden,
        trained_interactions=0 if trained is None else len(trained),
        online_interactions=len(state.events),
        deleted_at=state.deleted_at,
        recent=recent,
    )


# -- mutations ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class InteractionSpec:
    user_id: str
    item_id: str
    value: float
    timestamp: datetime | None


@dataclass(frozen=True)
class Rejection:
    index: int
    item_id: str
    reason: str


def _epoch(ts: datetime | None, now: float) -> int:
    """Seconds since the epoch; BadInput before 1970 (ingest rejects negative timestamps) or after
    year 9999 (not a datetime in UTC)."""
    if ts is None:
        return int(now)
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    epoch = int(ts.timestamp())
    if not 0 <= epoch <= MAX_EPOCH:
        raise BadInput(f"timestamp must be between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59Z, "
                       f"got {ts.isoformat()}", field="timestamp")
    return epoch


async def record(ctx: Context, specs: Sequence[InteractionSpec]) -> tuple[list[Event], list[Rejection]]:
    """Validate, make durable, fold in: the next answer for these users reflects the events.

    Malformed input (bad value, too many) raises BadInput for the whole call; an item the bundle
    does not know rejects that interaction only.
    """
    engine = ctx.engine
    if len(specs) > ctx.settings.max_batch:
        raise BadInput(f"batch holds {len(specs)} interactions; at most {ctx.settings.max_batch} per call",
                       field="batch")
    if not specs:
        raise BadInput("batch is empty", field="batch")
    for k, s in enumerate(specs):
        check_id(s.user_id, "userId")
        check_id(s.item_id, "itemId")
        ctx.require("write", s.user_id)  # a key bound to a user writes only that user's history
        if not (math.isfinite(s.value) and 0 < s.value <= MAX_VALUE):
            where = f" (interaction {k})" if len(specs) > 1 else ""
            raise BadInput(f"value must be finite, > 0 and <= {MAX_VALUE:g}, got {s.value}{where}", field="value")
    now = time.time()
    epochs = [_epoch(s.timestamp, now) for s in specs]  # BadInput before anything is stored
    rows = engine.item_rows([s.item_id for s in specs])
    accepted: list[Event] = []
    rejected: list[Rejection] = []
    for k, (s, row) in enumerate(zip(specs, rows, strict=True)):
        if row < 0:
            rejected.append(Rejection(k, s.item_id, f"unknown item id {s.item_id!r} in bundle {engine.version}"))
            continue
        accepted.append(Event(user_id=s.user_id, item_id=s.item_id, value=float(s.value),
                              timestamp=epochs[k], accepted_at=now))
    await ctx.store.record(accepted)
    ctx.metrics.events.inc(len(accepted))
    return accepted, rejected


async def delete_user(ctx: Context, user_id: str) -> tuple[DeletionReport, bool]:
    """Purge the user's online data and record the deletion; the flag says the bundle holds the user."""
    user_id = check_id(user_id, "userId")
    ctx.require("admin", user_id)
    report = await ctx.store.delete_user(user_id)
    return report, ctx.engine.user_known(user_id)


