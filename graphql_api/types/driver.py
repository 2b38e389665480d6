"""``Driver``: a history item that pulls a recommendation up."""

from __future__ import annotations

import strawberry

from graphql_api.types.item import Item
from graphql_api.types.loaded_item import bundle_item
from hybrid.explain import Driver as DomainDriver


@strawberry.type(description="An item of the user's history and how strongly it points at the explained item.")
class Driver:
    similarity: float = strawberry.field(description="Inner product of the two items' vectors in the driver signal.")
    item_id: strawberry.Private[str]

    @strawberry.field
    def item(self, info: strawberry.Info) -> Item:
        return bundle_item(info, self.item_id)

    @classmethod
    def from_domain(cls, driver: DomainDriver) -> Driver:
        return cls(similarity=float(driver.similarity), item_id=driver.item_id)
