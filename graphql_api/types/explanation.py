"""``Explanation``: why an item scores as it does for a user."""

from __future__ import annotations

import strawberry

from graphql_api.engine import Engine
from graphql_api.types.contribution import Contribution
from graphql_api.types.driver import Driver
from graphql_api.types.item import Item
from graphql_api.types.path_step import PathStep
from graphql_api.types.signal import Signal
from hybrid.explain import Explanation as DomainExplanation


@strawberry.type(description="Why an item scores as it does for a user: exact signal parts, then evidence.")
class Explanation:
    """The parts most clients select (score, contributions, drivers, the sentence and the genres it
    names) are plain fields; the rest (shares, tags, the graph path, the item) are resolvers, so
    the domain explanation computes them only when selected."""

    user_id: strawberry.ID
    score: float
    contributions: list[Contribution] = strawberry.field(description="Per-signal parts; they add up to score.")
    main_signal: Signal | None
    driver_signal: Signal | None
    drivers: list[Driver]
    shared_genres: list[str]
    sentence: str
    engine: strawberry.Private[Engine]
    domain: strawberry.Private[DomainExplanation]

    @strawberry.field(
        description="Each signal's share of the positive contributions (they add up to 1 when any is positive)."
    )
    def shares(self) -> list[Contribution]:
        return Contribution.from_domain(self.domain.shares)

    @strawberry.field
    def shared_tags(self) -> list[str]:
        return self.domain.shared_tags

    @strawberry.field
    def graph_path(self) -> list[PathStep] | None:
        path = self.domain.graph_path
        return [PathStep.from_domain(s) for s in path] if path is not None else None

    @strawberry.field
    def item(self) -> Item:
        return Item.from_domain(self.engine.record(self.domain.item_row))

    @classmethod
    def from_domain(cls, expl: DomainExplanation, engine: Engine) -> Explanation:
        """``engine``: the bundle the explanation comes from."""
        return cls(
            user_id=strawberry.ID(expl.user_id),
            score=float(expl.score),
            contributions=Contribution.from_domain(expl.contributions),
            main_signal=Signal.from_domain(expl.main_signal) if expl.main_signal else None,
            driver_signal=Signal.from_domain(expl.driver_signal) if expl.driver_signal else None,
            drivers=[Driver.from_domain(d, engine) for d in expl.drivers],
            shared_genres=expl.shared_genres,
            sentence=expl.sentence,
            engine=engine,
            domain=expl,
        )
