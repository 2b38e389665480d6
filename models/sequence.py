"""Sequential item-item signal: what users go on to next, in low rank (kind 'sequence').

The other signals read a history as a set (svd weighs it by recency, still as a set of items
co-occurring). This one reads its order: T[i, j] counts how often item j came within
``max_gap`` interactions after item i in a user's time-ordered history (weight 1/gap), rows
scaled by out-count^-row_exponent. A user's next items are scored from the last ``window``
items of the history, recency-weighted:

    score(u, j) = sum_i q_ui T[i, j] ~= (q_u U S) V_j^T

with T ~= U S V^T its top-k singular triplets: user vector q_u U S (a fold-in of the last items),
item vector V_j, an inner product as every signal's (../shared/DESIGN.md, "The fused-embedding
identity"). The truncation also denoises: rank 256 scored above the full matrix on validation.

Fitting: one Dask task per block of users counts that block's transitions
(``sequence-transitions-block-{b}-<token>``); the sum is decomposed by scikit-learn's
randomized SVD in one task (``sequence-svd-<token>``). No users x items matrix is built.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from models.base import LinearFoldIn, TrainData, TrainingOptions, fitting_module, register, user_blocks

__all__ = ["SequenceConfig", "SequenceModel", "transition_counts"]


@dataclass
class SequenceConfig:
    """Hyperparameters of the sequential signal.

    Chosen on ml-latest-small's validation split (fit on 'fit', NDCG@10 on 'validation', fit items
    excluded), never on test: alone 0.1425 (svd alone 0.1530); blended 0.8 svd + 0.2 sequence
    (scores scaled to equal spread) 0.1657. Rank 128 and 512 scored 0.1428 and 0.1419, the full
    matrix 0.1320; a window of 20 with half-life 5 0.1395.
    """

    factors: int = 256
    """k: singular triplets kept (the vectors' dimension)."""
    max_gap: int = 5
    """Item j counts as following item i when it comes at most this many interactions later."""
    row_exponent: float = 0.5
    """Row i of the transition counts is scaled by (its total)^-row_exponent."""
    window: int = 5
    """Last items of a history that make the user vector."""
    half_life: float = 2.0
    """Weight of a window item halves every this many interactions back from the newest."""
    power_iterations: int = 4
    """Randomized SVD's power iterations."""
    n_blocks: int | None = None
    """User blocks (Dask tasks) counting transitions; None = twice the number of workers."""

    def __post_init__(self) -> None:
        for name in ("factors", "max_gap", "window"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.power_iterations, int) or self.power_iterations < 0:
            raise ValueError(f"power_iterations must be an integer >= 0, got {self.power_iterations!r}")
        if not np.isfinite(self.half_life) or self.half_life <= 0:
            raise ValueError(f"half_life must be > 0, got {self.half_life!r}")
        if not np.isfinite(self.row_exponent) or self.row_exponent < 0:
            raise ValueError(f"row_exponent must be >= 0, got {self.row_exponent!r}")
        if self.n_blocks is not None and (not isinstance(self.n_blocks, int) or self.n_blocks < 1):
            raise ValueError(f"n_blocks must be None or an integer >= 1, got {self.n_blocks!r}")


def transition_counts(histories: sp.csr_matrix, max_gap: int) -> sp.csr_matrix:
    """items x items counts of j following i within ``max_gap`` steps (weight 1/gap), per row of a
    time-ordered history matrix (column order within a row = time order); i -> i is left out."""
    n_items = histories.shape[1]
    row_of = np.repeat(np.arange(histories.shape[0]), np.diff(histories.indptr))
    items = histories.indices.astype(np.int64)
    src, dst, weight = [], [], []
    for gap in range(1, max_gap + 1):
        same = row_of[:-gap] == row_of[gap:] if items.size > gap else np.zeros(0, dtype=bool)
        keep = np.flatnonzero(same)
        keep = keep[items[keep] != items[keep + gap]]
        src.append(items[keep])
        dst.append(items[keep + gap])
        weight.append(np.full(keep.size, 1.0 / gap))
    return sp.csr_matrix((np.concatenate(weight), (np.concatenate(src), np.concatenate(dst))), shape=(n_items, n_items))


def _decompose(transitions: sp.csr_matrix, k: int, power_iterations: int, seed: int) -> tuple[np.ndarray, ...]:
    """A Dask task: top-k singular triplets of the transition matrix (signs fixed per vector)."""
    randomized_svd = fitting_module("sklearn.utils.extmath").randomized_svd
    with threadpool_limits(limits=1):
        u, s, vt = randomized_svd(transitions, k, n_iter=power_iterations, random_state=seed)
    return u, s, vt


@register
class SequenceModel(LinearFoldIn):
    """Low-rank item-to-next-item transitions; see the module docstring."""

    kind = "sequence"
    Config = SequenceConfig

    def _fit(self, data: TrainData, options: TrainingOptions) -> None:
        cfg: SequenceConfig = self.config
        histories = data.histories()
        n_users, n_items = histories.shape
        client, bounds = user_blocks(n_users, cfg.n_blocks, options, "sequence fit")
        token = uuid.uuid4().hex[:8]
        futures = [
            client.submit(transition_counts, histories[lo:hi], cfg.max_gap,
                          key=f"sequence-transitions-block-{b}-{token}", retries=2)
            for b, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True))
        ]  # fmt: skip
        counts = sp.csr_matrix(sum(client.gather(futures)), dtype=np.float64)
        totals = np.asarray(counts.sum(axis=1)).ravel()
        scaled = sp.csr_matrix(sp.diags(np.power(np.maximum(totals, 1.0), -cfg.row_exponent)) @ counts)
        k = max(1, min(cfg.factors, n_items - 1))
        u, s, vt = client.submit(_decompose, scaled, k, cfg.power_iterations, options.seed,
                                 key=f"sequence-svd-{token}", retries=2).result()
        signs = np.sign(vt[np.arange(vt.shape[0]), np.abs(vt).argmax(axis=1)])
        signs = np.where(signs == 0, 1.0, signs)
        self.singular_values_ = s.astype(np.float32)
        self.projection_ = (u * (s * signs)[None, :]).astype(np.float32)
        self.item_factors_ = (vt * signs[:, None]).T.astype(np.float32)
        self.user_factors_ = self.fold_in_histories(histories)

    def history_weights(self, items: np.ndarray, values: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The distinct rows of a history's last ``window`` items (oldest first) and their weights:
        ``fold_in`` is weights @ projection_[rows] (an item twice in the window counts at both
        positions), so w_j <projection_[j], item_factors_[i]> is item j's part of the user's score
        for item i (what explanations rank drivers by)."""
        cfg: SequenceConfig = self.config
        items, _ = self._history(items, values)
        last = items[-cfg.window:]
        rows, at = np.unique(last, return_inverse=True)
        weights = np.bincount(at, weights=np.power(0.5, np.arange(last.size)[::-1] / cfg.half_life),
                              minlength=rows.size)
        return rows, weights

    def _extend_items(self, item_factors: np.ndarray) -> None:
        # no transitions: an added item in a history moves nothing (zero projection row)
        m = len(item_factors)
        self.projection_ = np.concatenate([self.projection_, np.zeros((m, self.projection_.shape[1]), np.float32)])

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _extra_arrays(self) -> dict[str, np.ndarray]:
        return {"projection": self.projection_, "singular_values": self.singular_values_}

    def _restore(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.projection_ = arrays["projection"]
        self.singular_values_ = arrays["singular_values"]
