"""The ``InteractionSource`` enum: trained history or an online interaction."""

from __future__ import annotations

from enum import Enum

import strawberry


@strawberry.enum(description="TRAINED: in the bundle's training data; ONLINE: recorded through the API since.")
class InteractionSource(Enum):
    TRAINED = "trained"
    ONLINE = "online"
