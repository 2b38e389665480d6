"""``ItemsUpserted``: the answer to ``upsertItems``."""

from __future__ import annotations

import strawberry

from graphql_api.service import ItemsReport
from graphql_api.types.upserted_item import UpsertedItem


@strawberry.type(description="What upsertItems changed. The items are durable when this answers; every replica "
                             "serves them within about a second, and the next training run learns them.")
class ItemsUpserted:
    added: int = strawberry.field(description="Items with ids the catalogue did not hold.")
    updated: int = strawberry.field(description="Held items given new metadata.")
    unchanged: int = strawberry.field(description="Items whose metadata the catalogue held already.")
    items: list[UpsertedItem] = strawberry.field(description="Each distinct id of the batch once (a repeated "
                                                             "id's last row wins).")
    served: bool = strawberry.field(description="True when this server answers with them already (recommendations, "
                                                "similarItems, searchItems).")
    model_version: str

    @classmethod
    def from_domain(cls, report: ItemsReport) -> ItemsUpserted:
        changes = [u.change for u in report.items]
        return cls(added=changes.count("added"), updated=changes.count("updated"),
                   unchanged=changes.count("unchanged"), items=[UpsertedItem.from_domain(u) for u in report.items],
                   served=report.served, model_version=report.version)
