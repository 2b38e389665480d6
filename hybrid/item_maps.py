"""Item vectors of collaborative signals for items nobody has interacted with, mapped from content.

A signal learned from interactions (ALS, LightGCN, svd, sequence) has nothing to say about an
item added while serving (hybrid/catalogue.py). At publish time a ridge map per such signal is
fitted on the warm items (at least ``min_count`` interactions in the fitted split), from the content
signal's unit metadata row plus a constant to the signal's item vector; an added item's vector in
that signal is its content row through the map: what a warm item with that metadata looks like on
average. Content's own vector comes from the metadata, and popularity's coordinate is that of an
item without interactions. The maps are small ((content dim + 1) x signal dim each) and travel in
the bundle as ``item_maps.npz`` (a bundle without it serves added items with zero vectors there).

Only added items are mapped. A catalogue item that was in training without interactions keeps its
trained vectors: giving those mapped vectors, scaled by gamma, was measured on ml-latest-small's
validation split (six signals fit on 'fit', the README's tuned weights; cold recall@10 = share of validation interactions on them reached in the top-10):
gamma 0 NDCG@10 0.1695, cold recall 0; gamma 0.5: 0.1687 (-0.5%), 0.0008; gamma 1: 0.1609 (-5%),
0.0089; gamma 1.5: 0.1537, 0.0130; gamma 2: 0.1438, 0.0130. No setting reaches issue 24's cold
recall target at the NDCG it allows, so the blend does not use them (see the issue's notes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.base import FactorModel
from models.signals import SIGNALS

__all__ = ["ItemMaps", "MAPPED_KINDS", "fit_item_maps"]

MAPPED_KINDS: tuple[str, ...] = tuple(s.kind for s in SIGNALS if s.mapped_from_content)
"""Model kinds whose item vectors are mapped from content for added items."""
FILE = "item_maps.npz"


@dataclass(frozen=True)
class ItemMaps:
    """signal -> (content dim + 1, signal dim) ridge map; the last row is the constant's."""

    maps: dict[str, np.ndarray]

    def apply(self, content_rows: np.ndarray) -> dict[str, np.ndarray]:
        """Each mapped signal's item vectors (float32) for content rows (n, content dim)."""
        rows = np.asarray(content_rows, dtype=np.float64)
        x = np.hstack([rows, np.ones((len(rows), 1))])
        out = {}
        for s, m in self.maps.items():
            if m.shape[0] != x.shape[1]:
                raise ValueError(f"item map of {s} takes {m.shape[0] - 1} content dims, got {rows.shape[1]}")
            out[s] = (x @ m).astype(np.float32)
        return out

    def save(self, folder: Path) -> None:
        np.savez(folder / FILE, **self.maps)

    @classmethod
    def load(cls, folder: Path) -> ItemMaps | None:
        """The maps of a bundle folder; None for a bundle published without them."""
        path = folder / FILE
        if not path.exists():
            return None
        with np.load(path, allow_pickle=False) as z:
            return cls({name: np.asarray(z[name]) for name in z.files})


def fit_item_maps(models: Mapping[str, FactorModel], min_count: int = 3,
                  regularization: float = 10.0) -> ItemMaps | None:
    """Ridge maps from content rows to each mapped signal's item vectors, fitted on the items with
    at least ``min_count`` interactions in the models' fitted split (``seen_``); None without a
    content signal or with fewer warm items than content dims."""
    content = next((m for m in models.values() if m.kind == "content"), None)
    if content is None:
        return None
    counts = np.diff(content.seen_.tocsc().indptr)
    warm = counts >= min_count
    x = np.hstack([np.asarray(content.embedding_, np.float64), np.ones((len(counts), 1))])[warm]
    if len(x) < x.shape[1]:
        return None
    gram = x.T @ x + regularization * np.eye(x.shape[1])
    maps = {}
    for s, model in models.items():
        if model.kind in MAPPED_KINDS:
            y = np.asarray(model.item_factors_, np.float64)[warm]
            maps[s] = np.linalg.solve(gram, x.T @ y)
    return ItemMaps(maps)
