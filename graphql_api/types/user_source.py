"""The ``UserSource`` enum: where a user's vectors came from."""

from __future__ import annotations

from enum import Enum

import strawberry


@strawberry.enum(description="Where the user vectors of an answer came from.")
class UserSource(Enum):
    TRAINED = "trained"
    FOLDED_IN = "folded_in"
    NO_HISTORY = "no_history"
