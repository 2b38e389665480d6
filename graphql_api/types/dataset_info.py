"""``DatasetInfo``: the data a bundle was trained on."""

from __future__ import annotations

import strawberry

from hybrid.manifest import DatasetFacts


@strawberry.type(description="The dataset a bundle was trained on.")
class DatasetInfo:
    source: str | None
    content_hash: str | None
    users: int | None
    items: int | None
    interactions: int | None

    @classmethod
    def from_domain(cls, facts: DatasetFacts) -> DatasetInfo:
        return cls(
            source=facts.source,
            content_hash=facts.content_hash,
            users=facts.users,
            items=facts.items,
            interactions=facts.interactions,
        )
