"""``BlendWeightsInput``: per-request blend weights, one field per registered signal
(models/signals.py: its GraphQL name, lower-cased), so a new signal appears in the schema."""

from __future__ import annotations

from typing import Any

import strawberry

from models.signals import SIGNALS

_FIELDS = {s.graphql.lower(): s.name for s in SIGNALS}
"""Input field -> bundle signal name."""


def _to_domain(self: Any) -> dict[str, float]:
    """{bundle signal name: weight} of the weights given."""
    given = ((name, getattr(self, field)) for field, name in _FIELDS.items())
    return {name: float(w) for name, w in given if w is not None}


def _blend_weights_input() -> type:
    namespace: dict[str, Any] = {"__module__": __name__, "__annotations__": {}, "to_domain": _to_domain}
    for field in _FIELDS:
        namespace["__annotations__"][field] = float | None
        namespace[field] = None
    return type("BlendWeightsInput", (), namespace)


BlendWeightsInput = strawberry.input(
    _blend_weights_input(),
    description="Per-request blend weights (signals left out weigh 0; at least one must be > 0).",
)
