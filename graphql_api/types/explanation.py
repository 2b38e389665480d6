"""``Explanation``: why an item scores as it does for a user."""

from __future__ import annotations

import strawberry

from graphql_api.types.contribution import Contribution
from graphql_api.types.driver import Driver
from graphql_api.engine import Engine
from graphql_api.types.item import Item
from graphql_api.types.path_step import PathStep
from graphql_api.types.signal import Signal
from hybrid.explain import Explanation as DomainExplanation


@strawberry.type(description="Why an item scores as it does for a user: exact signal parts, then evidence.")
class Explanation:
    user_id: strawberry.ID
    score: float
    contributions: list[Contribution] = strawberry.field(description="Per-signal parts; they add up to score.")
    shares: list[Contribution] = strawberry.field(
        description="Each signal's share of the positive contributions (they add up to 1 when any is positive)."
    )
    main_signal: Signal | None
    driver_signal: Signal | None
    drivers: list[Driver]
    shared_genres: list[str]
    shared_tags: list[str]
    graph_path: list[PathStep] | None
    sentence: str
    item: Item
    item_id: strawberry.Private[str]

    @classmethod
    def from_domain(cls, expl: DomainExplanation, engine: Engine) -> Explanation:
        """``engine``: the bundle the explanation comes from (items are plain fields, built here)."""
        return cls(
            user_id=strawberry.ID(expl.user_id),
            score=float(expl.score),
            contributions=Contribution.from_domain(expl.contributions),
            shares=Contribution.from_domain(expl.shares),
            main_signal=Signal.from_domain(expl.main_signal) if expl.main_signal else None,
            driver_signal=Signal.from_domain(expl.driver_signal) if expl.driver_signal else None,
            drivers=[Driver.from_domain(d, engine) for d in expl.drivers],
            shared_genres=list(expl.shared_genres),
            shared_tags=list(expl.shared_tags),
            graph_path=[PathStep.from_domain(s) for s in expl.graph_path] if expl.graph_path is not None else None,
            sentence=expl.sentence,
            item=Item.from_domain(engine.record_of(expl.item_id)),
            item_id=expl.item_id,
        )
