"""``Metric``: one test figure of the served model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import strawberry


@strawberry.type(description="A test metric (nested names joined by '.', e.g. 'hybrid.ndcg@10').")
class Metric:
    name: str
    value: float

    @classmethod
    def from_domain(cls, metrics: Mapping[str, Any], prefix: str = "") -> list[Metric]:
        """Flatten a nested metrics mapping; non-numeric entries are left out."""
        out: list[Metric] = []
        for key, value in metrics.items():
            name = f"{prefix}{key}"
            if isinstance(value, Mapping):
                out.extend(cls.from_domain(value, f"{name}."))
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                out.append(cls(name=name, value=float(value)))
        return out
