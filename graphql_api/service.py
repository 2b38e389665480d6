"""What the resolvers do, apart from GraphQL: validation, fold-in of online events, recording
interactions and deleting a user's data. Resolvers only translate to and from schema types.

While an experiment runs (hybrid.experiments), a recommendations request that names neither a
variant nor weights is served its user's arm, and the list shown is logged as an exposure before
the answer leaves; an interaction may name the exposure it answers (joined per arm: clicks,
conversions, NDCG of what was done against what was shown).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from etl.events_log import Event, Exposure
from etl.items_log import CatalogueItem
from graphql_api.context import Context
from graphql_api.engine import MAX_FIRST, Engine, OnlineHistory, check_first
from graphql_api.errors import BadInput, EventStoreUnavailable
from graphql_api.input_limits import MAX_STRING_LENGTH
from graphql_api.items import validate_items
from graphql_api.logs import get_logger
from graphql_api.store import DeletionReport
from hybrid.experiments import ActiveExperiment, exposure_id
from hybrid.explain import Explanation, explain_items
from hybrid.index import ItemFilter
from hybrid.recommender import RankingPlan, Recommendations, SimilarItem
from hybrid.variants import Variant

MAX_ID_LENGTH = MAX_STRING_LENGTH
MAX_ID_BATCH = 500
MAX_VALUE = 1e6
MAX_EPOCH = 253_402_300_799  # 9999-12-31T23:59:59Z
log = get_logger("service")


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
    exposure: Exposure | None = None
    """The logged exposure when the answer was served under an experiment's arm."""
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
    experiment = ctx.experiment
    arm = None  # a request that names a variant or weights chose its blend: not part of the experiment
    if experiment is not None and variant is None and weights is None and experiment.bundle_version == engine.version:
        arm = experiment.assign(user_id)
    async with ctx.runtime.searches.slot() as slot:  # concurrent requests' searches run as one batch
        state = await ctx.loaders.user_state.load(user_id)
        history = engine.online_history(state)
        plan = recommender.plan(
            user_id,
            first,
            variant=arm if arm is not None else variant,
            weights=engine.restrict_weights(weights),
            item_filter=flt,
            exclude_seen=exclude_seen,
            history_override=history.override,
        )
        rows, scores = await slot.search(engine.bundle.index, plan.query, plan.n, plan.exclude, plan.allowed)
    result = recommender.answer(plan, rows, scores)
    ctx.variants.append(result.variant)
    exposure = None
    if experiment is not None and arm is not None:
        exposure = await _log_exposure(ctx, experiment, result, ",".join(state.tags.values()))
    return RecommendationRun(engine, plan, result, history, neighbours=ctx.settings.explain_neighbours,
                             exposure=exposure)


async def _log_exposure(ctx: Context, experiment: ActiveExperiment, result: Recommendations,
                        generation: str) -> Exposure | None:
    """Log the list shown as an exposure; None (and the answer not cached) when no durable place takes it."""
    items = tuple(result.item_ids)
    exposure = Exposure(exposure_id(experiment.experiment, result.user_id, result.variant, result.bundle_version, items),
                        result.user_id, experiment.name, result.variant, result.bundle_version, items)
    try:
        written = await ctx.store.record_exposures([exposure], generation)
    except EventStoreUnavailable as err:
        ctx.uncacheable = True
        ctx.metrics.errors.labels(kind="exposure_not_logged").inc()
        log.warning("exposure not logged: the answer carries no exposure id", extra={"error": str(err)})
        return None
    if written:
        ctx.metrics.exposures.labels(experiment=exposure.experiment, variant=exposure.variant).inc()
    return exposure


async def explain(
    ctx: Context, user_id: str, item_id: str, variant: str | None, weights: Mapping[str, float] | None
) -> Explanation | None:
    """None when the bundle does not know the item."""
    engine = ctx.engine
    user_id = check_id(user_id, "userId")
    engine.check_blend(variant, weights)
    if engine.item_rows([item_id])[0] < 0:
        return None
    blend: str | Variant | None = variant
    experiment = ctx.experiment
    if experiment is not None and variant is None and weights is None and experiment.bundle_version == engine.version:
        blend = experiment.assign(user_id)  # explained under the arm the user is served
    state = await ctx.loaders.user_state.load(user_id)
    history = engine.online_history(state)
    return engine.recommender.explain(
        user_id, str(item_id), variant=blend, weights=engine.restrict_weights(weights),
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
    exposure_id: str | None = None
    """The exposure (``Recommendations.exposureId``) this interaction answers."""


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
    exposures: dict[tuple[str, str], Exposure] = {}  # (user, exposure id): an id holds for its own user only
    for s in specs:
        if s.exposure_id is not None and (s.user_id, s.exposure_id) not in exposures:
            check_id(s.exposure_id, "exposureId")
            found = await ctx.store.exposure(s.user_id, s.exposure_id)
            if found is None:
                raise BadInput(f"unknown exposure id {s.exposure_id!r} for user {s.user_id!r}: give the exposureId "
                               "of a recommendations answer served to this user", field="exposureId")
            exposures[s.user_id, s.exposure_id] = found
    rows = engine.item_rows([s.item_id for s in specs])
    if (rows < 0).any():
        rows = await _current_rows(ctx, [s.item_id for s in specs], rows)
    accepted: list[Event] = []
    rejected: list[Rejection] = []
    for k, (s, row) in enumerate(zip(specs, rows, strict=True)):
        if row < 0:
            rejected.append(Rejection(k, s.item_id, f"unknown item id {s.item_id!r} in bundle {engine.version}"))
            continue
        accepted.append(Event(user_id=s.user_id, item_id=s.item_id, value=float(s.value),
                              timestamp=epochs[k], accepted_at=now, exposure_id=s.exposure_id))
    await ctx.store.record(accepted)
    ctx.metrics.events.inc(len(accepted))
    _count_outcomes(ctx, accepted, exposures)
    return accepted, rejected


async def _current_rows(ctx: Context, item_ids: list[str], rows: np.ndarray) -> np.ndarray:
    """``rows`` with the ids the request's engine does not know looked up in the current one, after
    a look at the added catalogue: an item added since the request began, or on another replica
    and not polled here yet, is accepted."""
    await ctx.runtime.refresh_catalogue()
    current = ctx.runtime.engine
    if current is ctx.engine:
        return rows
    return np.where(rows >= 0, rows, current.item_rows(item_ids))


def _count_outcomes(ctx: Context, events: Iterable[Event], exposures: Mapping[tuple[str, str], Exposure]) -> None:
    """Per-arm metrics of interactions that name an exposure: a click is an interaction with a shown
    item, a conversion a click whose value reaches the experiment's conversion value; each outcome
    adds the NDCG of its item against the shown list (1/log2(rank+1); 0 when it was not shown)."""
    for e in events:
        x = exposures.get((e.user_id, e.exposure_id or ""))
        if x is None:
            continue
        labels = {"experiment": x.experiment, "variant": x.variant}
        ctx.metrics.outcomes.labels(**labels).inc()
        if e.item_id in x.items:
            ctx.metrics.clicks.labels(**labels).inc()
            ctx.metrics.outcome_ndcg.labels(**labels).inc(1.0 / math.log2(x.items.index(e.item_id) + 2))
            if e.value >= ctx.runtime.experiments.conversion_value(x.experiment):
                ctx.metrics.conversions.labels(**labels).inc()


async def delete_user(ctx: Context, user_id: str) -> tuple[DeletionReport, bool]:
    """Purge the user's online data and record the deletion; the flag says the bundle holds the user."""
    user_id = check_id(user_id, "userId")
    ctx.require("admin", user_id)
    report = await ctx.store.delete_user(user_id)
    return report, ctx.engine.user_known(user_id)


# -- the catalogue ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ItemUpsert:
    item: CatalogueItem
    change: str
    """'added' (an id the served catalogue did not hold), 'updated' or 'unchanged'."""


@dataclass(frozen=True)
class ItemsReport:
    items: list[ItemUpsert]
    served: bool
    """This process serves every item of the batch as given."""
    version: str


async def upsert_items(ctx: Context, rows: Sequence[Mapping[str, Any]]) -> ItemsReport:
    """Validate a batch (InvalidItem for the first bad row: nothing stored), make it durable, and
    serve it here before answering; other replicas serve it from their next catalogue poll."""
    ctx.require("admin")
    items = validate_items(rows)
    results = await ctx.store.upsert_items(items)
    known = ctx.engine.item_rows([i.id for i in items]) >= 0
    if any(r.changed for r in results) or any(ctx.runtime.added.get(i.id) != i for i in items):
        await ctx.runtime.refresh_catalogue(force=True)
    runtime = ctx.runtime
    changes = [ItemUpsert(r.item, "unchanged" if not r.changed else "updated" if r.known or k else "added")
               for r, k in zip(results, known, strict=True)]
    served = all(runtime.added.get(i.id) == i for i in items)
    if any(r.changed for r in results):
        log.info("items upserted", extra={"added": sum(c.change == "added" for c in changes),
                                          "updated": sum(c.change == "updated" for c in changes),
                                          "served": served})
    return ItemsReport(changes, served, runtime.engine.version)
