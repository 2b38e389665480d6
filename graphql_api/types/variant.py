"""``Variant``: a named blend."""

from __future__ import annotations

import strawberry

from graphql_api.types.signal_weight import SignalWeight
from hybrid.variants import Variant as DomainVariant


@strawberry.type(description="A named blend of the signals; clients pick one with recommendations(variant:).")
class Variant:
    name: str
    description: str
    weights: list[SignalWeight]
    traffic_share: float = strawberry.field(description="Share of users assigned to it when they name no variant.")
    cold_start: str = strawberry.field(description="What a user without interactions gets: 'popularity' or 'content'.")

    @classmethod
    def from_domain(cls, variant: DomainVariant, traffic_share: float) -> Variant:
        return cls(
            name=variant.name,
            description=variant.description,
            weights=SignalWeight.from_domain(variant.weights),
            traffic_share=float(traffic_share),
            cold_start=variant.cold_start,
        )
