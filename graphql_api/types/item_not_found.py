"""``ItemNotFound``: the typed answer for an item id the bundle does not know."""

from __future__ import annotations

import strawberry


@strawberry.type(description="The item id is not in the served bundle's catalogue.")
class ItemNotFound:
    item_id: strawberry.ID
    message: str

    @classmethod
    def from_domain(cls, item_id: str, version: str) -> ItemNotFound:
        return cls(item_id=strawberry.ID(item_id), message=f"unknown item id {item_id!r} in bundle {version}")
