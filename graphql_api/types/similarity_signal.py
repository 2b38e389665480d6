"""The ``SimilaritySignal`` enum: which item vectors ``similarItems`` compares (FUSED, or one of
the registered signals offered for similarity, models/signals.py)."""

from __future__ import annotations

from enum import Enum

import strawberry

from models.signals import SIGNALS

SimilaritySignal = strawberry.enum(
    Enum("SimilaritySignal", [("FUSED", "fused"), *((s.graphql, s.name) for s in SIGNALS if s.similarity)],
         module=__name__),
    description="Item vectors to compare: one signal's, or FUSED (tuned-weight mix of them).",
)
