"""``Contribution``: one signal's part of a score."""

from __future__ import annotations

from collections.abc import Mapping

import strawberry

from graphql_api.types.signal import Signal


@strawberry.type(description="One signal's part of a score; the parts of a score add up to it.")
class Contribution:
    signal: Signal
    value: float

    @classmethod
    def from_domain(cls, parts: Mapping[str, float]) -> list[Contribution]:
        """Contributions from a {signal name: value} mapping, in the bundle's signal order."""
        return [cls(signal=Signal.from_domain(s), value=float(v)) for s, v in parts.items()]
