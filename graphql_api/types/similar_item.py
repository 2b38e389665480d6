"""``SimilarItem``: one entry of a similar-items list."""

from __future__ import annotations

import strawberry

from graphql_api.types.contribution import Contribution
from graphql_api.types.item import Item
from graphql_api.types.loaded_item import bundle_item
from hybrid.recommender import SimilarItem as DomainSimilarItem


@strawberry.type(description="An item like the given one, by cosine of item vectors.")
class SimilarItem:
    rank: int
    score: float = strawberry.field(description="Cosine similarity (FUSED: tuned-weight mix of per-signal cosines).")
    contributions: list[Contribution] = strawberry.field(description="Per-signal weighted cosines; they add up to score.")
    item_id: strawberry.Private[str]

    @strawberry.field
    def item(self, info: strawberry.Info) -> Item:
        return bundle_item(info, self.item_id)

    @classmethod
    def from_domain(cls, item: DomainSimilarItem) -> SimilarItem:
        return cls(rank=item.rank, score=float(item.score), contributions=Contribution.from_domain(item.signals),
                   item_id=item.item_id)
