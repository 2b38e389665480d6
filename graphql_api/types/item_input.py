"""``ItemInput``: one item of an upsertItems batch."""

from __future__ import annotations

from typing import Any

import strawberry


@strawberry.input(description="An item to add to the catalogue, or new metadata for one it holds.")
class ItemInput:
    id: strawberry.ID = strawberry.field(description="1 to 256 characters, no surrounding whitespace.")
    title: str = strawberry.field(description="1 to 256 characters.")
    genres: list[str] = strawberry.field(default_factory=list, description="At most 20, each 1 to 64 characters.")
    tags: list[str] = strawberry.field(default_factory=list, description="At most 50, each 1 to 64 characters.")
    year: int | None = strawberry.field(default=None, description="1800 to 2100.")

    def to_domain(self) -> dict[str, Any]:
        """The row graphql_api.items.validate_items checks."""
        return {"id": str(self.id), "title": self.title, "genres": list(self.genres), "tags": list(self.tags),
                "year": self.year}
