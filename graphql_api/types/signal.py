"""The ``Signal`` enum: the parts a blended score is made of, one member per registered signal
(models/signals.py), so a new signal appears in the schema."""

from __future__ import annotations

from enum import Enum, EnumMeta

import strawberry

from models.signals import SIGNALS


def _from_domain(cls: type[Enum], name: str) -> Enum:
    """The enum member of a bundle signal name ('als', 'content', ...); ValueError for any other name."""
    member = _BY_NAME.get(name)
    return member if member is not None else cls(name)


def _signal_enum() -> type[Enum]:
    members = EnumMeta.__prepare__("Signal", (Enum,))
    for spec in SIGNALS:
        members[spec.graphql] = spec.name
    members["__module__"] = __name__
    members["from_domain"] = classmethod(_from_domain)
    return EnumMeta("Signal", (Enum,), members)


Signal = strawberry.enum(_signal_enum(),
                         description="A signal of the hybrid; every score splits exactly into one part per signal.")

_BY_NAME = {m.value: m for m in Signal}
"""Bundle signal name -> member (a dict lookup; calling the enum costs several times more)."""
