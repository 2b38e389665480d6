"""The ``Signal`` enum: the parts a blended score is made of."""

from __future__ import annotations

from enum import Enum

import strawberry

from graphql_api.engine import SIGNAL_NAMES


@strawberry.enum(description="A signal of the hybrid; every score splits exactly into one part per signal.")
class Signal(Enum):
    COLLABORATIVE = "als"
    CONTENT = "content"
    GRAPH = "lightgcn"
    POPULARITY = "popularity"
    SPECTRAL = "svd"
    SEQUENTIAL = "sequence"

    @classmethod
    def from_domain(cls, name: str) -> Signal:
        """The enum member of a bundle signal name ('als', 'content', 'lightgcn', 'popularity',
        'svd', 'sequence'); ValueError for any other name."""
        member = _BY_NAME.get(name)
        return member if member is not None else cls(name)


_BY_NAME = {m.value: m for m in Signal}
"""Bundle signal name -> member (a dict lookup; calling the enum costs several times more)."""
assert {m.value: m.name for m in Signal} == SIGNAL_NAMES
