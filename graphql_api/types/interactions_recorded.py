"""``InteractionsRecorded``: the answer to ``recordInteractions``."""

from __future__ import annotations

import strawberry

from etl.events_log import Event
from graphql_api.service import Rejection
from graphql_api.types.rejected_interaction import RejectedInteraction


@strawberry.type(description="How many interactions of a batch were recorded, and which were rejected.")
class InteractionsRecorded:
    accepted: int
    event_ids: list[strawberry.ID]
    rejected: list[RejectedInteraction]
    model_version: str

    @classmethod
    def from_domain(cls, accepted: list[Event], rejected: list[Rejection], version: str) -> InteractionsRecorded:
        return cls(
            accepted=len(accepted),
            event_ids=[strawberry.ID(e.event_id) for e in accepted],
            rejected=[RejectedInteraction.from_domain(r) for r in rejected],
            model_version=version,
        )
