"""``Interaction``: one entry of a user's history."""

from __future__ import annotations

from datetime import UTC, datetime

import strawberry

from graphql_api.service import HistoryEntry
from graphql_api.types.interaction_source import InteractionSource
from graphql_api.types.item import Item
from graphql_api.types.loaded_item import load_item


@strawberry.type(description="An interaction of a user with an item.")
class Interaction:
    value: float
    timestamp: datetime | None = strawberry.field(
        description="When it happened (online interactions; the bundle keeps no times for trained ones)."
    )
    source: InteractionSource
    item_id: strawberry.Private[str]

    @strawberry.field
    async def item(self, info: strawberry.Info) -> Item:
        return await load_item(info, self.item_id)

    @classmethod
    def from_domain(cls, entry: HistoryEntry) -> Interaction:
        ts = None if entry.timestamp is None else datetime.fromtimestamp(entry.timestamp, tz=UTC)
        return cls(value=float(entry.value), timestamp=ts, source=InteractionSource(entry.source),
                   item_id=entry.item_id)
