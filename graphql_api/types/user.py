"""``User``: what the API knows about a user."""

from __future__ import annotations

from datetime import UTC, datetime

import strawberry

from graphql_api.engine import check_first
from graphql_api.service import HistoryEntry, UserView
from graphql_api.types.interaction import Interaction


@strawberry.type(description="A user: trained data in the served bundle plus interactions recorded since.")
class User:
    id: strawberry.ID
    known: bool = strawberry.field(description="False: the served bundle has no trained data for this user.")
    trained_interactions: int
    online_interactions: int = strawberry.field(description="Interactions recorded through the API, folded in.")
    deleted_at: datetime | None = strawberry.field(description="When the user's data was last deleted.")
    history: strawberry.Private[list[HistoryEntry]]

    @strawberry.field(description="Online interactions, newest first, then trained ones. Needs a key with the "
                                  "read scope (for this user, when the key is bound to one) where keys exist.")
    def recent_history(self, info: strawberry.Info, first: int = 20) -> list[Interaction]:
        info.context.require("read", str(self.id))
        check_first(first)
        return [Interaction.from_domain(e) for e in self.history[:first]]

    @classmethod
    def from_domain(cls, view: UserView) -> User:
        return cls(
            id=strawberry.ID(view.user_id),
            known=view.known,
            trained_interactions=view.trained_interactions,
            online_interactions=view.online_interactions,
            deleted_at=None if view.deleted_at is None else datetime.fromtimestamp(view.deleted_at, tz=UTC),
            history=view.recent,
        )
