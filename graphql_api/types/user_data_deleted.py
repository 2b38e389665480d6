"""``UserDataDeleted``: the answer to ``deleteUserData``."""

from __future__ import annotations

import strawberry

from graphql_api.store import DeletionReport


@strawberry.type(description="What deleteUserData removed. The deletion is recorded: the next training run "
                             "leaves the user out, and until then the served bundle's trained data for the "
                             "user is not used.")
class UserDataDeleted:
    user_id: strawberry.ID
    events_removed: int = strawberry.field(description="Recorded interactions purged (log and Redis).")
    cached_answers_removed: int
    online_state_removed: bool
    exposures_removed: int = strawberry.field(description="Experiment exposures of the user purged (log and Redis).")
    trained_data_excluded: bool = strawberry.field(
        description="True when the served bundle holds trained data for the user (now ignored; gone after retraining)."
    )

    @classmethod
    def from_domain(cls, user_id: str, report: DeletionReport, in_bundle: bool) -> UserDataDeleted:
        return cls(
            user_id=strawberry.ID(user_id),
            events_removed=report.events,
            cached_answers_removed=report.cached_answers,
            online_state_removed=report.online_state,
            exposures_removed=report.exposures,
            trained_data_excluded=in_bundle,
        )
