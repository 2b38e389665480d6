"""A helper for fields that resolve an ``Item`` through the request's DataLoader.

Only for ids that may be unknown to the served bundle (a user's history after a reload). Items of
the bundle's own answers (recommended, similar, explained items, drivers) are plain fields built
from the engine's item records in ``from_domain``: a resolver call per item costs more than the
record.
"""

from __future__ import annotations

from typing import Any

from graphql_api.types.item import Item


async def load_item(info: Any, item_id: str) -> Item:
    """The item of a known id, through the request's DataLoader."""
    record = await info.context.loaders.item.load(item_id)
    if record is None:  # pragma: no cover - ids come from the same bundle
        raise LookupError(f"item {item_id!r} vanished from its own bundle")
    return Item.from_domain(record)
