"""``Driver``: a history item that pulls a recommendation up."""

from __future__ import annotations

import strawberry

from graphql_api.engine import Engine
from graphql_api.types.item import Item
from hybrid.explain import Driver as DomainDriver


@strawberry.type(description="An item of the user's history and how strongly it points at the explained item.")
class Driver:
    similarity: float = strawberry.field(
        description="How hard the history item pulls the explained item up in the driver signal: the inner product "
        "of the two items' vectors (COLLABORATIVE, GRAPH), or the history item's own term of the user's score, "
        "these terms adding up to the score over the whole history (CONTENT, SPECTRAL, SEQUENTIAL)."
    )
    item: Item

    @classmethod
    def from_domain(cls, driver: DomainDriver, engine: Engine) -> Driver:
        """``engine``: the bundle the driver comes from (its item is a plain field, built here)."""
        return cls(similarity=float(driver.similarity), item=Item.from_domain(engine.record(driver.row)))
