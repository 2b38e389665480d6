"""``RejectedInteraction``: an entry of a batch that was not accepted."""

from __future__ import annotations

import strawberry

from graphql_api.service import Rejection


@strawberry.type(description="A batch entry that was not recorded, and why.")
class RejectedInteraction:
    index: int = strawberry.field(description="0-based position in the batch.")
    item_id: strawberry.ID
    reason: str

    @classmethod
    def from_domain(cls, rejection: Rejection) -> RejectedInteraction:
        return cls(index=rejection.index, item_id=strawberry.ID(rejection.item_id), reason=rejection.reason)
