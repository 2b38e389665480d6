"""``RecommendedItem``: one entry of a recommendation list."""

from __future__ import annotations

import strawberry

from graphql_api.service import RecommendationRun
from graphql_api.types.contribution import Contribution
from graphql_api.types.explanation import Explanation
from graphql_api.types.item import Item
from hybrid.recommender import RecommendedItem as DomainRecommendedItem


@strawberry.type(description="A recommended item with its score split by signal.")
class RecommendedItem:
    rank: int = strawberry.field(description="1-based position in the list.")
    score: float = strawberry.field(description="The blended score: the sum of the contributions.")
    item: Item
    item_row: strawberry.Private[int]
    run: strawberry.Private[RecommendationRun]
    domain: strawberry.Private[DomainRecommendedItem]

    @strawberry.field(description="Per-signal parts of the score (w_s * c_s * score_s); they add up to it.")
    def contributions(self) -> list[Contribution]:
        return Contribution.from_domain(self.domain.contributions)  # computed for the list when first selected

    @strawberry.field(description="Why this item is recommended (computed only when selected).")
    def explanation(self) -> Explanation:
        return Explanation.from_domain(self.run.explain(self.item_row), self.run.engine)

    @classmethod
    def from_domain(cls, item: DomainRecommendedItem, run: RecommendationRun) -> RecommendedItem:
        return cls(
            rank=item.rank,
            score=item.score,
            item=Item.from_domain(run.engine.record(item.item_row)),
            item_row=item.item_row,
            run=run,
            domain=item,
        )
