"""``BlendWeightsInput``: per-request blend weights."""

from __future__ import annotations

import strawberry


@strawberry.input(description="Per-request blend weights (signals left out weigh 0; at least one must be > 0).")
class BlendWeightsInput:
    collaborative: float | None = None
    content: float | None = None
    graph: float | None = None
    popularity: float | None = None
    spectral: float | None = None
    sequential: float | None = None

    def to_domain(self) -> dict[str, float]:
        """{bundle signal name: weight} of the weights given."""
        pairs = {"als": self.collaborative, "content": self.content, "lightgcn": self.graph,
                 "popularity": self.popularity, "svd": self.spectral, "sequence": self.sequential}
        return {s: float(w) for s, w in pairs.items() if w is not None}
