"""``Recommendations``: the answer to ``recommendations``."""

from __future__ import annotations

import strawberry

from graphql_api.service import RecommendationRun
from graphql_api.types.recommended_item import RecommendedItem
from graphql_api.types.signal_weight import SignalWeight
from graphql_api.types.user_source import UserSource


@strawberry.type(description="Top items for a user under one blend variant.")
class Recommendations:
    user_id: strawberry.ID
    variant: str = strawberry.field(
        description="The variant used: the requested one, the user's sticky assignment (the running experiment's "
                    "arm, if one runs), or 'custom' for weights."
    )
    experiment: str | None = strawberry.field(
        description="The experiment this answer was served under (null: none runs, or the request named a variant "
                    "or weights, which leaves it out of the experiment)."
    )
    exposure_id: strawberry.ID | None = strawberry.field(
        description="Names this list as shown to this user (logged); pass it to recordInteraction(exposureId:) so "
                    "that what the user does is joined to what was shown. The same list shown again has the same id."
    )
    weights: list[SignalWeight] = strawberry.field(
        description="The blend weights actually used (the cold-start blend for a cold start)."
    )
    model_version: str
    user_known: bool = strawberry.field(description="False: the served bundle has no trained data for this user.")
    cold_start: bool = strawberry.field(description="True: the bundle has no trained vectors for the user.")
    cold_start_reason: str | None = strawberry.field(description="What a cold-start answer is made of.")
    user_source: UserSource
    online_interactions: int = strawberry.field(description="Interactions recorded since the bundle, folded in.")
    items: list[RecommendedItem]

    @classmethod
    def from_domain(cls, run: RecommendationRun) -> Recommendations:
        r = run.result
        return cls(
            user_id=strawberry.ID(r.user_id),
            variant=r.variant,
            experiment=run.exposure.experiment if run.exposure is not None else None,
            exposure_id=strawberry.ID(run.exposure.exposure_id) if run.exposure is not None else None,
            weights=SignalWeight.from_domain(r.weights),
            model_version=r.bundle_version,
            user_known=run.user_known,
            cold_start=r.cold_start,
            cold_start_reason=r.cold_start_reason,
            user_source=UserSource(r.user_source),
            online_interactions=len(run.history.online),
            items=[RecommendedItem.from_domain(i, run) for i in r.items],
        )
