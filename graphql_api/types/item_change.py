"""The ``ItemChange`` enum: what an upsert did to one item."""

from __future__ import annotations

from enum import Enum

import strawberry


@strawberry.enum(description="ADDED: an id the catalogue did not hold; UPDATED: new metadata for a held id; "
                             "UNCHANGED: the catalogue held this exact metadata already (nothing written).")
class ItemChange(Enum):
    ADDED = "added"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
