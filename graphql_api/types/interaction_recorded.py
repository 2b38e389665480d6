"""``InteractionRecorded``: an accepted interaction."""

from __future__ import annotations

from datetime import UTC, datetime

import strawberry

from etl.events_log import Event


@strawberry.type(description="The interaction is durable and the user's next recommendations reflect it.")
class InteractionRecorded:
    event_id: strawberry.ID
    user_id: strawberry.ID
    item_id: strawberry.ID
    value: float
    timestamp: datetime
    model_version: str
    exposure_id: strawberry.ID | None = strawberry.field(description="The exposure this interaction was joined to.")

    @classmethod
    def from_domain(cls, event: Event, version: str) -> InteractionRecorded:
        return cls(
            event_id=strawberry.ID(event.event_id),
            user_id=strawberry.ID(event.user_id),
            item_id=strawberry.ID(event.item_id),
            value=event.value,
            timestamp=datetime.fromtimestamp(event.timestamp, tz=UTC),
            model_version=version,
            exposure_id=None if event.exposure_id is None else strawberry.ID(event.exposure_id),
        )
