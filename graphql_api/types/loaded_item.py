"""A helper for fields that resolve an ``Item`` through the request's DataLoader."""

from __future__ import annotations

from typing import Any

from graphql_api.types.item import Item


async def load_item(info: Any, item_id: str) -> Item:
    """The item of a known id (ids from the bundle itself, so never missing)."""
    record = await info.context.loaders.item.load(item_id)
    if record is None:  # pragma: no cover - ids come from the same bundle
        raise LookupError(f"item {item_id!r} vanished from its own bundle")
    return Item.from_domain(record)
