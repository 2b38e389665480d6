"""The ``SimilaritySignal`` enum: which item vectors ``similarItems`` compares."""

from __future__ import annotations

from enum import Enum

import strawberry


@strawberry.enum(description="Item vectors to compare: one signal's, or FUSED (tuned-weight mix of them).")
class SimilaritySignal(Enum):
    FUSED = "fused"
    COLLABORATIVE = "als"
    CONTENT = "content"
    GRAPH = "lightgcn"
