"""``Item``: a catalogue item."""

from __future__ import annotations

import strawberry

from graphql_api.engine import ItemRecord


@strawberry.type(description="A catalogue item (a movie) of the served bundle.")
class Item:
    id: strawberry.ID
    title: str
    genres: list[str]
    tags: list[str]
    year: int | None
    mean_rating: float | None = strawberry.field(description="Mean rating in the training data (null: never rated).")
    popularity: int = strawberry.field(
        description="Interactions with the item in the dataset the bundle was built from (what the "
                    "minPopularity filter compares)."
    )

    @classmethod
    def from_domain(cls, record: ItemRecord) -> Item:
        return cls(
            id=strawberry.ID(record.id),
            title=record.title,
            genres=list(record.genres),
            tags=list(record.tags),
            year=record.year,
            mean_rating=record.mean_rating,
            popularity=record.popularity,
        )
