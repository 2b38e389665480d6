"""Low-rank item-item signal: a spectral ridge regression of the interaction matrix (kind 'svd').

EASE-like item-item models are the strongest cheap baselines on MovieLens, but their n_items x
n_items weight matrix does not fit the fused index. Its low-rank relative does: with
A = X D^-beta (binary interactions, columns scaled by item count^-beta) and A's top-k right
singular vectors V with singular values s,

    score(u, i) = a_u V diag(s^2 / (s^2 + shrinkage)) V_i^T * count_i^gamma

is ridge regression of A on itself restricted to its top-k spectrum (PureSVD with shrinkage and
popularity re-weighting). So user vector = a_u V diag(s^2/(s^2+shrinkage)) (k dims, a fold-in of
the history), item vector = count_i^gamma V_i: an inner product, as every signal's
(../shared/DESIGN.md, "The fused-embedding identity").

The user row a_u may weight recent history more (``recency_half_life``): on the protocol's
time split the last items a user saw say most about the next ones.

Fitting is subspace iteration on A^T A: each pass is one Dask task per block of user rows
(``svd-gram-block-{b}-pass-{p}-<token>``) returning A_b^T (A_b Q), summed on the client, so no
dense users x items (nor items x items) matrix ever exists.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from etl.topk import topk
from models.base import (LinearFoldIn, SharedValues, TrainData, TrainingOptions, gather_shared, register,
                         user_blocks)

__all__ = ["SVDConfig", "SVDItemItem", "recency_weights"]


@dataclass
class SVDConfig:
    """Hyperparameters of the low-rank item-item signal.

    Defaults were chosen on ml-latest-small's validation split (fit on 'fit', NDCG@10 on
    'validation', fit items excluded), never on test: 0.1530 there, against 0.1329 for 128
    factors, shrinkage 50 and half-life 10, and 0.1288 without recency weighting. 256-1024
    factors with shrinkage 100-200 and a half-life of 2-3 all scored 0.148-0.154.
    """

    factors: int = 512
    """k: singular vectors kept (the vectors' dimension)."""
    shrinkage: float = 100.0
    """Ridge penalty: singular direction s is weighted s^2 / (s^2 + shrinkage); 0 is PureSVD."""
    input_exponent: float = 0.25
    """beta: interaction columns are scaled by item count^-beta before the decomposition."""
    output_exponent: float = 0.25
    """gamma: item vectors are scaled by item count^gamma (a popularity lift)."""
    recency_half_life: float | None = 2.0
    """A history entry's weight halves every this many interactions back from the newest; None
    weights the whole history alike."""
    recency_floor: float = 0.05
    """Weight every history entry keeps however old (with recency_half_life)."""
    oversample: int = 16
    """Extra subspace dimensions of the iteration (accuracy of the top-k)."""
    power_iterations: int = 6
    """Passes of subspace iteration over the data."""
    n_blocks: int | None = None
    """Row blocks (Dask tasks) per pass; None = twice the number of workers."""

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, rule: str) -> None:
            if not ok:
                raise ValueError(f"SVDConfig.{name} must be {rule}, got {getattr(self, name)!r}")

        for name in ("factors", "power_iterations"):
            value = getattr(self, name)
            need(isinstance(value, int) and not isinstance(value, bool) and value >= 1, name, "an int >= 1")
        need(isinstance(self.oversample, int) and self.oversample >= 0, "oversample", "an int >= 0")
        need(self.shrinkage >= 0, "shrinkage", ">= 0")
        need(np.isfinite(self.input_exponent) and np.isfinite(self.output_exponent), "input_exponent", "finite")
        need(self.recency_half_life is None or self.recency_half_life > 0, "recency_half_life", "None or > 0")
        need(0.0 <= self.recency_floor <= 1.0, "recency_floor", "in [0, 1]")
        need(self.n_blocks is None or (isinstance(self.n_blocks, int) and self.n_blocks >= 1), "n_blocks",
             "None or an int >= 1")


def recency_weights(ages: np.ndarray, config: SVDConfig) -> np.ndarray:
    """Weight of history entries ``ages`` interactions back from the newest (0 = newest)."""
    ages = np.asarray(ages, dtype=np.float64)
    if config.recency_half_life is None:
        return np.ones(ages.shape)
    floor = config.recency_floor
    return floor + (1.0 - floor) * np.power(0.5, ages / config.recency_half_life)


def _gram_block(block: sp.csr_matrix, q: np.ndarray) -> np.ndarray:
    """A Dask task: A_b^T (A_b Q) for one block of user rows."""
    return np.asarray(block.T @ (block @ q))


@register
class SVDItemItem(LinearFoldIn):
    """Low-rank ridge item-item model; see the module docstring."""

    kind = "svd"
    Config = SVDConfig

    def _fit(self, data: TrainData, options: TrainingOptions) -> None:
        cfg: SVDConfig = self.config
        histories = data.histories()
        binary = sp.csr_matrix(
            (np.ones(histories.nnz, dtype=np.float64), histories.indices.copy(), histories.indptr.copy()),
            shape=histories.shape,
        )
        binary.sum_duplicates()
        binary.data[:] = 1.0
        n_users, n_items = binary.shape
        counts = np.asarray(binary.sum(axis=0)).ravel()
        self.item_counts_ = counts.astype(np.float32)
        col_scale = np.power(np.maximum(counts, 1.0), -cfg.input_exponent)
        a = sp.csr_matrix(binary @ sp.diags(col_scale))
        vectors, sigma = self._top_spectrum(a, options)
        self.singular_values_ = sigma.astype(np.float32)
        lift = np.power(np.maximum(counts, 1.0), cfg.output_exponent)
        self.item_factors_ = (lift[:, None] * vectors).astype(np.float32)
        self._derive_projection()
        self.user_factors_ = self.fold_in_histories(histories)

    def _top_spectrum(self, a: sp.csr_matrix, options: TrainingOptions) -> tuple[np.ndarray, np.ndarray]:
        """Top-k right singular vectors and values of ``a`` by subspace iteration on A^T A."""
        cfg: SVDConfig = self.config
        n_users, n_items = a.shape
        k = min(cfg.factors, n_items, max(n_users, 1))
        width = min(n_items, k + cfg.oversample)
        client, bounds = user_blocks(n_users, cfg.n_blocks, options, "svd fit")
        # scattered once (and again only if a lost worker took them); Q once per pass
        blocks = SharedValues(client, [a[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)])
        token = uuid.uuid4().hex[:8]

        def gram_times(q: np.ndarray, p: int) -> np.ndarray:
            shared_q = SharedValues(client, [q])

            def submit(fresh: bool, suffix: str) -> list[Any]:
                [q_f] = shared_q.get(fresh)
                return [
                    client.submit(_gram_block, blk, q_f, key=f"svd-gram-block-{b}-pass-{p}-{token}{suffix}", retries=2)
                    for b, blk in enumerate(blocks.get(fresh))
                ]

            return sum(gather_shared(client, f"svd: pass {p}", submit))

        rng = np.random.default_rng(options.seed)
        # One BLAS thread: a tall-skinny QR gains nothing from more, and an oversubscribed
        # OpenBLAS (Dask workers share the cores) runs it orders of magnitude slower.
        with threadpool_limits(limits=1):
            q, _ = np.linalg.qr(rng.standard_normal((n_items, width)))
        for p in range(cfg.power_iterations):
            z = gram_times(q, p)
            with threadpool_limits(limits=1):
                q, _ = np.linalg.qr(z)
        # Rayleigh-Ritz: eigenpairs of Q^T (A^T A) Q give the singular pairs.
        z = gram_times(q, cfg.power_iterations)
        small = q.T @ z
        evals, evecs = np.linalg.eigh((small + small.T) / 2)
        order, _ = topk(evals, k)
        blocks.release()
        vectors = q @ evecs[:, order]
        # A fixed sign per vector (largest entry positive) makes fits comparable across runs.
        signs = np.sign(vectors[np.abs(vectors).argmax(axis=0), np.arange(vectors.shape[1])])
        vectors *= np.where(signs == 0, 1.0, signs)
        return vectors, np.sqrt(np.clip(evals[order], 0.0, None))

    def fold_in_histories(self, histories: sp.csr_matrix) -> np.ndarray:
        """``fold_in`` of every row of a time-ordered history matrix, vectorised: the fit's user
        vectors and a refold's (``FactorModel.fold_in_histories``)."""
        lengths = np.diff(histories.indptr)
        ages = np.repeat(lengths, lengths) - 1 - (np.arange(histories.nnz) - np.repeat(histories.indptr[:-1], lengths))
        weights = recency_weights(ages, self.config)
        weighted = sp.csr_matrix(
            (weights, histories.indices.copy(), histories.indptr.copy()), shape=histories.shape
        )
        weighted.sum_duplicates()
        return np.asarray(weighted @ self.projection_rows(np.arange(histories.shape[1])), dtype=np.float32)

    def _derive_projection(self) -> None:
        """The fold-in rows' factors (from the item counts, singular values and config): the
        fold-in matrix count^-beta V diag(s^2 / (s^2 + shrinkage)) is the item vectors count^gamma V
        re-weighted per row and per column, so it is not stored (``projection_rows``)."""
        cfg: SVDConfig = self.config
        sigma = self.singular_values_.astype(np.float64)
        self.row_weights_ = np.power(np.maximum(self.item_counts_.astype(np.float64), 1.0),
                                     -(cfg.input_exponent + cfg.output_exponent))
        self.shrink_ = sigma**2 / (sigma**2 + cfg.shrinkage) if cfg.shrinkage > 0 else np.ones_like(sigma)

    def projection_rows(self, rows: np.ndarray) -> np.ndarray:
        """Fold-in rows count_j^-beta V_j diag(s^2 / (s^2 + shrinkage)), float64, derived from the
        item vectors (``item_rows``: in a served bundle its fused vectors) rather than stored: a
        worker serving the six-signal ml-latest-small bundle held all 19 MiB of the stored
        matrix's file after 200 users' requests. An added item's row is zero (``_extend_items``)."""
        rows = np.asarray(rows, dtype=np.int64)
        out = self.item_rows(rows, self.row_weights_[rows])  # a new array: shrunk in place
        out *= self.shrink_[None, :]
        return out

    def pull_operands(self, items: np.ndarray, item_rows: np.ndarray,
                      values: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The pulls of ``history_terms`` with the fold-in rows' per-column shrinkage moved to the
        explained items' side: <w_j r_j (v_j * shrink), v_i> = <w_j r_j v_j, v_i * shrink> (v the item
        vectors, r the per-row weights), so the history side is one weighted gather of item vectors
        (``FactorModel.pull_operands``)."""
        rows, weights = self.history_weights(items, values)
        history = self.item_rows(rows, weights * self.row_weights_[rows], dtype=np.float32)
        targets = self.item_rows(np.asarray(item_rows, dtype=np.int64), dtype=np.float32)
        targets *= self.shrink_[None, :]
        return rows, history, targets

    def history_weights(self, items: np.ndarray, values: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The distinct rows of a history (oldest first) and their weights: ``fold_in`` is
        weights @ projection_[rows], so w_j <projection_[j], item_factors_[i]> is item j's part
        of the user's score for item i (what explanations rank drivers by)."""
        items, _ = self._history(items, values)
        w = recency_weights(np.arange(items.size)[::-1], self.config)
        # A repeated item counts once, at its newest position (as the fitted rows do).
        rows, newest = np.unique(items[::-1], return_index=True)
        return rows, w[items.size - 1 - newest]

    def _extend_items(self, item_factors: np.ndarray) -> None:
        # no co-occurrence: an added item in a history moves nothing (zero projection row)
        m = len(item_factors)
        self.row_weights_ = np.concatenate([self.row_weights_, np.zeros(m)])
        self.item_counts_ = np.concatenate([self.item_counts_, np.zeros(m, np.float32)])

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _extra_arrays(self) -> dict[str, np.ndarray]:
        return {
            "singular_values": self.singular_values_,
            "item_counts": self.item_counts_,
        }

    def _restore(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        # a folder saved before the projection was derived also holds projection.npy: not read
        self.singular_values_ = arrays["singular_values"]
        self.item_counts_ = arrays["item_counts"]
        self._derive_projection()
