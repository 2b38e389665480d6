"""``SimilarItems``: the answer to ``similarItems`` for a known item."""

from __future__ import annotations

import strawberry

from graphql_api.engine import Engine
from graphql_api.types.item import Item
from graphql_api.types.similar_item import SimilarItem
from graphql_api.types.similarity_signal import SimilaritySignal
from hybrid.recommender import SimilarItem as DomainSimilarItem


@strawberry.type(description="Items most like a given item.")
class SimilarItems:
    signal: SimilaritySignal
    model_version: str
    items: list[SimilarItem]
    item: Item = strawberry.field(description="The item the list is about.")
    item_id: strawberry.Private[str]

    @classmethod
    def from_domain(cls, item_id: str, signal: SimilaritySignal, items: list[DomainSimilarItem],
                    engine: Engine) -> SimilarItems:
        return cls(signal=signal, model_version=engine.version,
                   items=[SimilarItem.from_domain(i, engine) for i in items],
                   item=Item.from_domain(engine.record_of(item_id)), item_id=item_id)
