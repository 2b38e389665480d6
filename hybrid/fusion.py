"""Fused embeddings: one inner product equals the weighted sum of per-signal scores.

Each signal s has user vectors u_s and item vectors i_s with score_s = <u_s, i_s>. With a
normalisation scalar c_s per signal (unit spread of its scores on validation pairs), items are
indexed as [c_s * i_s for s] and a query for blend weights w is [w_s * u_s for s], so

    <query, item> = sum_s w_s * c_s * score_s(u, i)

and every score splits exactly into per-signal contributions (../shared/DESIGN.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from models.base import FactorModel
from models.signals import SIGNALS

#: Signals in their fixed order inside the fused vector (others follow in the order given).
SIGNAL_ORDER: tuple[str, ...] = tuple(s.name for s in SIGNALS if s.fixed_place)


def normalisation_scale(model: FactorModel, pairs: sp.csr_matrix, max_pairs: int = 200_000, seed: int = 0) -> float:
    """1 / standard deviation of the model's scores over (user, item) pairs (e.g. validation).

    Scores of the observed pairs and of as many random pairs, so the spread reflects how the
    signal separates positives from the rest; a constant signal gets scale 1.
    """
    coo = pairs.tocoo()
    rng = np.random.default_rng(seed)
    take = rng.choice(coo.nnz, size=min(coo.nnz, max_pairs // 2), replace=False) if coo.nnz else np.zeros(0, int)
    users = np.concatenate([coo.row[take], rng.integers(0, pairs.shape[0], len(take))])
    items = np.concatenate([coo.col[take], rng.integers(0, pairs.shape[1], len(take))])
    if len(users) == 0:
        return 1.0
    scores = np.einsum("ij,ij->i", model.user_factors_[users], model.item_factors_[items])
    spread = float(np.std(scores))
    return 1.0 / spread if spread > 1e-12 else 1.0


MAX_WEIGHT = 1e6
"""Largest blend weight: weights are relative, and a larger one overflows the float32 query."""


def check_weights(weights: Mapping[str, float], signals: tuple[str, ...]) -> dict[str, float]:
    """Validated blend weights: known signals only, finite, non-negative, not all zero.

    Signals missing from ``weights`` get 0. Raises ValueError naming the bad entry.
    """
    unknown = sorted(set(weights) - set(signals))
    if unknown:
        raise ValueError(f"unknown signal(s) in weights: {unknown}; known: {list(signals)}")
    out = {s: float(weights.get(s, 0.0)) for s in signals}
    for name, w in out.items():
        if not np.isfinite(w) or w < 0:
            raise ValueError(f"weight for {name} must be finite and >= 0, got {w}")
        if w > MAX_WEIGHT:
            raise ValueError(f"weight for {name} must be <= {MAX_WEIGHT:g}, got {w:g}")
    if sum(out.values()) <= 0:
        raise ValueError("weights are all zero: at least one signal needs a positive weight")
    return out


@dataclass
class Fusion:
    """Signals, their scales, and the layout of the fused vector."""

    models: dict[str, FactorModel]
    scales: dict[str, float]

    def __post_init__(self) -> None:
        missing = [s for s in self.models if s not in self.scales]
        if missing:
            raise ValueError(f"no normalisation scale for signal(s) {missing}")
        self.signals: tuple[str, ...] = tuple(s for s in SIGNAL_ORDER if s in self.models) + tuple(
            s for s in self.models if s not in SIGNAL_ORDER
        )
        offsets = np.cumsum([0] + [self.models[s].dim for s in self.signals])
        self.slices: dict[str, slice] = {s: slice(int(offsets[k]), int(offsets[k + 1])) for k, s in enumerate(self.signals)}
        self.dim = int(offsets[-1])

    @classmethod
    def fit_scales(cls, models: Mapping[str, FactorModel], pairs: sp.csr_matrix) -> Fusion:
        return cls(dict(models), {s: normalisation_scale(m, pairs) for s, m in models.items()})

    def item_vectors(self, item_rows: np.ndarray | None = None) -> np.ndarray:
        """[c_s * i_s for s] for the given item rows (all items when None), float32."""
        parts = []
        for s in self.signals:
            factors = self.models[s].item_factors_
            part = factors if item_rows is None else factors[np.asarray(item_rows, dtype=np.int64)]
            parts.append(np.asarray(part, dtype=np.float32) * np.float32(self.scales[s]))
        return np.ascontiguousarray(np.concatenate(parts, axis=1))

    def query(self, user_parts: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
        """[w_s * u_s for s]; user_parts[s] has shape (dim_s,) or (n, dim_s)."""
        w = check_weights(weights, self.signals)
        parts = [np.asarray(user_parts[s], dtype=np.float32) * np.float32(w[s]) for s in self.signals]
        return np.concatenate(parts, axis=-1)

    def user_parts(self, user_rows: np.ndarray) -> dict[str, np.ndarray]:
        """Each signal's user vectors for trained user rows."""
        return {s: self.models[s].user_vectors(user_rows) for s in self.signals}

    def contributions(self, query: np.ndarray, items: np.ndarray) -> dict[str, np.ndarray]:
        """Per-signal parts of <query, item>; they add up to the fused score.

        query: (dim,) or (n, dim); items: fused item vectors, (m, dim) -> arrays of shape (..., m).
        """
        return {s: query[..., sl] @ items[:, sl].T for s, sl in self.slices.items()}
