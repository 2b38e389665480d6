"""Helpers for fields that resolve an ``Item``.

Ids that come from the request's own bundle (recommended, similar, explained items, drivers) are
resolved at once from the engine's item records: a dict lookup, no awaitable per item. Ids that
may be unknown to the served bundle (a user's history after a reload) go through the request's
DataLoader.
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


def bundle_item(info: Any, item_id: str) -> Item:
    """The item of an id taken from the request's bundle (UnknownIdError if it is not there)."""
    return Item.from_domain(info.context.engine.record_of(item_id))
