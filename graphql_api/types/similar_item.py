"""``SimilarItem``: one entry of a similar-items list."""

from __future__ import annotations

import strawberry

from graphql_api.types.contribution import Contribution
from graphql_api.engine import Engine
from graphql_api.types.item import Item
from hybrid.recommender import SimilarItem as DomainSimilarItem


@strawberry.type(description="An item like the given one, by cosine of item vectors.")
class SimilarItem:
    rank: int
    score: float = strawberry.field(description="Cosine similarity (FUSED: tuned-weight mix of per-signal cosines).")
    contributions: list[Contribution] = strawberry.field(description="Per-signal weighted cosines; they add up to score.")
    item: Item
    item_id: strawberry.Private[str]

    @classmethod
    def from_domain(cls, item: DomainSimilarItem, engine: Engine) -> SimilarItem:
        return cls(rank=item.rank, score=float(item.score), contributions=Contribution.from_domain(item.signals),
                   item=Item.from_domain(engine.record(item.item_row)), item_id=item.item_id)
