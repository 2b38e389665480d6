"""The Mutation root."""

from __future__ import annotations

from datetime import datetime

import strawberry

from graphql_api import service
from graphql_api.context import Context
from graphql_api.permissions import RequiresAdmin, RequiresWrite
from graphql_api.types.interaction_input import InteractionInput
from graphql_api.types.interaction_recorded import InteractionRecorded
from graphql_api.types.interactions_recorded import InteractionsRecorded
from graphql_api.types.item_input import ItemInput
from graphql_api.types.item_not_found import ItemNotFound
from graphql_api.types.items_upserted import ItemsUpserted
from graphql_api.types.results import RecordInteractionResult
from graphql_api.types.user_data_deleted import UserDataDeleted

Info = strawberry.Info[Context, None]


@strawberry.type
class Mutation:
    @strawberry.mutation(
        permission_classes=[RequiresWrite],
        description="Record an interaction: durable when this answers, and the user's next recommendations "
                    "reflect it.",
    )
    async def record_interaction(
        self,
        info: Info,
        user_id: strawberry.ID,
        item_id: strawberry.ID,
        value: float = 1.0,
        timestamp: datetime | None = None,
        exposure_id: strawberry.ID | None = None,
    ) -> RecordInteractionResult:
        spec = service.InteractionSpec(str(user_id), str(item_id), value, timestamp,
                                       None if exposure_id is None else str(exposure_id))
        accepted, rejected = await service.record(info.context, [spec])
        version = info.context.engine.version
        if rejected:
            return ItemNotFound.from_domain(str(item_id), version)
        return InteractionRecorded.from_domain(accepted[0], version)

    @strawberry.mutation(permission_classes=[RequiresWrite], description="Record a batch of interactions.")
    async def record_interactions(self, info: Info, batch: list[InteractionInput]) -> InteractionsRecorded:
        accepted, rejected = await service.record(info.context, [i.to_domain() for i in batch])
        return InteractionsRecorded.from_domain(accepted, rejected, info.context.engine.version)

    @strawberry.mutation(
        permission_classes=[RequiresAdmin],
        description="Purge a user's recorded events, cached answers and online state, and record the deletion "
                    "so that the next training run leaves the user out.",
    )
    async def delete_user_data(self, info: Info, user_id: strawberry.ID) -> UserDataDeleted:
        report, in_bundle = await service.delete_user(info.context, str(user_id))
        return UserDataDeleted.from_domain(str(user_id), report, in_bundle)

    @strawberry.mutation(
        permission_classes=[RequiresAdmin],
        description="Add items to the served catalogue, or give held ones new metadata, without retraining: "
                    "durable when this answers, served by every replica within about a second (recommendations, "
                    "similarItems, searchItems, recordInteraction), learned by the next training run. Idempotent; "
                    "a bad row rejects the whole batch (BAD_USER_INPUT naming the row and the field).",
    )
    async def upsert_items(self, info: Info, items: list[ItemInput]) -> ItemsUpserted:
        report = await service.upsert_items(info.context, [i.to_domain() for i in items])
        return ItemsUpserted.from_domain(report)
