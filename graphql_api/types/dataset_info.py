"""``DatasetInfo``: the data a bundle was trained on."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import strawberry


@strawberry.type(description="The dataset a bundle was trained on.")
class DatasetInfo:
    source: str | None
    content_hash: str | None
    users: int | None
    items: int | None
    interactions: int | None

    @classmethod
    def from_domain(cls, facts: Mapping[str, Any]) -> DatasetInfo:
        def num(key: str) -> int | None:
            value = facts.get(key)
            return int(value) if isinstance(value, (int, float)) else None

        return cls(
            source=facts.get("source"),
            content_hash=facts.get("content_hash"),
            users=num("users"),
            items=num("items"),
            interactions=num("interactions"),
        )
