"""``InteractionInput``: one interaction of a recordInteractions batch."""

from __future__ import annotations

from datetime import datetime

import strawberry

from graphql_api.service import InteractionSpec


@strawberry.input(description="An interaction to record.")
class InteractionInput:
    user_id: strawberry.ID
    item_id: strawberry.ID
    value: float = strawberry.field(default=1.0, description="Rating or strength, > 0 (a view is 1).")
    timestamp: datetime | None = strawberry.field(default=None, description="When it happened (default: now).")
    exposure_id: strawberry.ID | None = strawberry.field(
        default=None, description="The exposureId of the recommendations answer this interaction follows.")

    def to_domain(self) -> InteractionSpec:
        return InteractionSpec(str(self.user_id), str(self.item_id), float(self.value), self.timestamp,
                               None if self.exposure_id is None else str(self.exposure_id))
