"""``UpsertedItem``: one item of an upsertItems answer."""

from __future__ import annotations

import strawberry

from graphql_api.service import ItemUpsert
from graphql_api.types.item_change import ItemChange


@strawberry.type(description="An item as the catalogue now holds it, and what the upsert did to it.")
class UpsertedItem:
    id: strawberry.ID
    title: str
    genres: list[str]
    tags: list[str]
    year: int | None
    change: ItemChange

    @classmethod
    def from_domain(cls, upsert: ItemUpsert) -> UpsertedItem:
        item = upsert.item
        return cls(id=strawberry.ID(item.id), title=item.title, genres=list(item.genres), tags=list(item.tags),
                   year=item.year, change=ItemChange(upsert.change))
