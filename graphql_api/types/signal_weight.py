"""``SignalWeight``: a blend weight."""

from __future__ import annotations

from collections.abc import Mapping

import strawberry

from graphql_api.types.signal import Signal


@strawberry.type(description="The weight of one signal in a blend.")
class SignalWeight:
    signal: Signal
    weight: float

    @classmethod
    def from_domain(cls, weights: Mapping[str, float]) -> list[SignalWeight]:
        return [cls(signal=Signal.from_domain(s), weight=float(w)) for s, w in weights.items()]
