"""External baselines for the quality bench: implicit's ALS, LightFM WARP and EASE.

None of these is a project signal; they are the rows of DESIGN.md's reference table that the
tuned hybrid has to beat, run on the same protocol (bench/quality.py). Each baseline is fit on a
users x items CSR and scores a batch of user rows densely, the ``score_batch`` that
etl.metrics.evaluate takes. Popularity is a project signal (models/popularity.py), so it is not
repeated here.

- implicit 0.7 ALS at the reference settings (64 factors, reg 0.05, alpha 1, 15 iterations), the
  same call as bench/als_vs_implicit.py;
- LightFM WARP (lightfm-next), 64 components, 30 epochs, binary interactions;
- EASE (Steck 2019): B = I - P diag(1/diag(P)), P = (X^T X + lambda I)^-1, diag(B) = 0, with
  lambda chosen on the validation split (fit on 'fit') and the final model fit on 'train'.
  Its items x items matrix is dense, so it is skipped beyond ``max_items``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from bench.harness import log

ScoreBatch = Callable[[np.ndarray], np.ndarray]


def _binary(m: sp.csr_matrix) -> sp.csr_matrix:
    out = sp.csr_matrix(m, dtype=np.float32, copy=True)
    out.sum_duplicates()
    out.eliminate_zeros()
    out.data[:] = 1.0
    return out


class ImplicitALS:
    """implicit 0.7's CPU ALS at the reference settings (bench/als_vs_implicit.py's PARAMS)."""

    name = "implicit ALS"

    def __init__(self, threads: int = 2, params: dict[str, Any] | None = None) -> None:
        from bench.als_vs_implicit import PARAMS

        self.threads = threads
        self.params = dict(params or PARAMS)

    def fit(self, train: sp.csr_matrix) -> ImplicitALS:
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        from models.als import ALSConfig

        conf = _binary(train)
        # implicit takes the matrix as confidences: hand it 1 + alpha per interaction (every
        # rating one implicit positive), the loss the reference row was measured with.
        conf.data = ALSConfig(**self.params).confidences(conf.data)
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(**self.params, random_state=0, num_threads=self.threads)
            model.fit(conf, show_progress=False)
        self.user_factors_ = np.asarray(model.user_factors, dtype=np.float32)
        self.item_factors_ = np.asarray(model.item_factors, dtype=np.float32)
        return self

    def score(self, rows: np.ndarray) -> np.ndarray:
        return self.user_factors_[rows] @ self.item_factors_.T

    def describe(self) -> dict[str, Any]:
        return dict(self.params)


class LightFMWarp:
    """LightFM with the WARP loss on binary interactions, no side features."""

    name = "LightFM WARP"

    def __init__(self, components: int = 64, epochs: int = 30, threads: int = 2, seed: int = 0) -> None:
        self.components, self.epochs, self.threads, self.seed = components, epochs, threads, seed

    def fit(self, train: sp.csr_matrix) -> LightFMWarp:
        from lightfm import LightFM

        model = LightFM(no_components=self.components, loss="warp", random_state=self.seed)
        model.fit(_binary(train).tocoo(), epochs=self.epochs, num_threads=self.threads)
        _, self.user_factors_ = model.get_user_representations()
        self.item_biases_, self.item_factors_ = model.get_item_representations()
        # the user bias does not change a user's ranking, so it is left out of the score
        return self

    def score(self, rows: np.ndarray) -> np.ndarray:
        return (self.user_factors_[rows] @ self.item_factors_.T + self.item_biases_[None, :]).astype(np.float32)

    def describe(self) -> dict[str, Any]:
        return {"components": self.components, "epochs": self.epochs, "loss": "warp"}


@dataclass
class EASE:
    """EASE, closed form; ``select`` picks lambda on validation, then ``fit`` on 'train'."""

    lambdas: Sequence[float] = (100.0, 200.0, 300.0, 500.0, 1000.0)
    max_items: int = 25_000
    lam: float | None = None
    selection: list[dict[str, float]] = field(default_factory=list)
    name = "EASE"

    def _weights(self, x: sp.csr_matrix, lam: float) -> np.ndarray:
        from scipy.linalg import lapack

        gram = (x.T @ x).toarray().astype(np.float32)
        gram[np.diag_indices_from(gram)] += np.float32(lam)
        # P = (X^T X + lambda I)^-1 by Cholesky (half the flops of an LU inverse); potri fills
        # the upper triangle, so mirror it.
        c, info = lapack.spotrf(gram, lower=False, overwrite_a=True, clean=False)
        if info != 0:
            raise ValueError(f"EASE: X^T X + {lam} I is not positive definite (spotrf info {info})")
        p, info = lapack.spotri(c, lower=False, overwrite_c=True)
        if info != 0:
            raise ValueError(f"EASE: inverse failed (spotri info {info})")
        p = np.triu(p)
        p += np.triu(p, 1).T
        b = p / (-np.diag(p))[None, :]
        b[np.diag_indices_from(b)] = 0.0
        return b.astype(np.float32, copy=False)

    def check(self, n_items: int) -> str | None:
        """Why EASE cannot run at this catalogue size (None when it can)."""
        if n_items > self.max_items:
            gib = n_items**2 * 4 * 3 / 2**30
            return (f"skipped: {n_items:,} items > max_items {self.max_items:,} (dense items x items "
                    f"matrices, ~{gib:,.0f} GiB, cubic time)")
        return None

    def select(self, fit: sp.csr_matrix, validation: sp.csr_matrix, k: int = 10) -> float:
        """lambda with the best validation NDCG@k (models fit on 'fit', 'fit' items excluded)."""
        from etl.metrics import evaluate

        best = None
        for lam in self.lambdas:
            start = time.perf_counter()
            self._fit_matrix(fit, lam)
            ndcg = evaluate(self.score, fit, validation, k=k)[f"ndcg@{k}"]
            self.selection.append({"lambda": float(lam), f"validation_ndcg@{k}": ndcg})
            log(f"  EASE lambda {lam:g}: validation NDCG@{k} {ndcg:.4f} ({time.perf_counter() - start:.1f} s)")
            if best is None or ndcg > best[0]:
                best = (ndcg, lam)
        assert best is not None
        self.lam = float(best[1])
        return self.lam

    def _fit_matrix(self, train: sp.csr_matrix, lam: float) -> None:
        self.x_ = _binary(train)
        self.b_ = None
        self.b_ = self._weights(self.x_, lam)

    def fit(self, train: sp.csr_matrix) -> EASE:
        if self.lam is None:
            raise ValueError("EASE.fit needs lambda: call select() on the validation split first")
        self._fit_matrix(train, self.lam)
        return self

    def score(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.x_[rows] @ self.b_, dtype=np.float32)

    def describe(self) -> dict[str, Any]:
        return {"lambda": self.lam, "lambdas": list(self.lambdas), "selection": self.selection}
