"""``ItemFilterInput``: which items may be recommended."""

from __future__ import annotations

from typing import Any

import strawberry


@strawberry.input(description="Only items that pass every given condition are returned.")
class ItemFilterInput:
    genres: list[str] | None = strawberry.field(default=None, description="Any of these genres (case-insensitive).")
    year_min: int | None = None
    year_max: int | None = None
    min_mean_rating: float | None = None
    min_popularity: int | None = strawberry.field(default=None, description="Fewest interactions (Item.popularity).")

    def to_domain(self) -> dict[str, Any]:
        """Keyword arguments of hybrid.index.ItemFilter."""
        spec = {
            "genres": tuple(self.genres) if self.genres is not None else None,
            "year_min": self.year_min,
            "year_max": self.year_max,
            "min_mean_rating": self.min_mean_rating,
            "min_count": self.min_popularity,
        }
        return {k: v for k, v in spec.items() if v is not None}
