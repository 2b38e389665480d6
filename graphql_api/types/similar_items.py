"""``SimilarItems``: the answer to ``similarItems`` for a known item."""

from __future__ import annotations

import strawberry

from graphql_api.types.item import Item
from graphql_api.types.loaded_item import bundle_item
from graphql_api.types.similar_item import SimilarItem
from graphql_api.types.similarity_signal import SimilaritySignal
from hybrid.recommender import SimilarItem as DomainSimilarItem


@strawberry.type(description="Items most like a given item.")
class SimilarItems:
    signal: SimilaritySignal
    model_version: str
    items: list[SimilarItem]
    item_id: strawberry.Private[str]

    @strawberry.field(description="The item the list is about.")
    def item(self, info: strawberry.Info) -> Item:
        return bundle_item(info, self.item_id)

    @classmethod
    def from_domain(cls, item_id: str, signal: SimilaritySignal, items: list[DomainSimilarItem],
                    version: str) -> SimilarItems:
        return cls(signal=signal, model_version=version, items=[SimilarItem.from_domain(i) for i in items],
                   item_id=item_id)
