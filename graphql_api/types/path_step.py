"""``PathStep``: one node of a path in the user-item graph."""

from __future__ import annotations

import strawberry

from hybrid.explain import PathStep as DomainPathStep


@strawberry.type(description="A node on the path user -> seen item -> co-user -> recommended item.")
class PathStep:
    kind: str = strawberry.field(description="'user' or 'item'.")
    id: strawberry.ID
    label: str

    @classmethod
    def from_domain(cls, step: DomainPathStep) -> PathStep:
        return cls(kind=step.kind, id=strawberry.ID(step.id), label=step.label)
