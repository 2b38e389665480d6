"""Implicit-feedback ALS (Hu, Koren, Volinsky 2008) with conjugate-gradient solves, on Dask.

Per row u (a user, or an item in the other half-step) the loss against fixed factors Y is

    sum_{i in I_u} c_ui (x.y_i - 1)^2 + alpha0 * sum_{i not in I_u} (x.y_i)^2 + reg_u |x|^2

whose normal equations are ``(alpha0 YtY + Y_u^T (C_u - alpha0) Y_u + reg_u I) x = Y_u^T c_u``.
With alpha0 = 1 and reg_u = reg this is exactly implicit's ALS; the extras of Rendle et al. 2021
("Revisiting the Performance of iALS") are the unobserved weight alpha0, the frequency-scaled
regularisation reg_u = reg * (|I_u| + alpha0 |I|)^nu, and a normal init with std s/sqrt(factors).

Each half-step splits the rows into blocks; a block is one Dask task (keys
``als-users-block-{k}-iter-{it}-<fit>``) that runs a few CG steps per row, warm-started from the
previous factors, as implicit's ``cg`` solver does. The factors stay on the workers between
half-steps: one task stacks a side's blocks (``als-users-stack-iter-{it}-<fit>``) and one computes
its Gramian (``als-users-gram-iter-{it}-<fit>``); only the final factors come back to the client. Rows are solved independently and each sum is
taken in an order fixed by the row length alone (``_dot``), so on one machine a fit gives
bit-identical factors for any number of blocks, workers, threads or processes. Another instruction
set (AVX2 against AVX-512) compiles other orders: factors then agree to float32 rounding, not bits.
"""

from __future__ import annotations

import functools
import logging
import math
import time
import uuid
import warnings
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numba
import numpy as np
import scipy.sparse as sp
from threadpoolctl import ThreadpoolController

from etl.errors import ModelDivergedError
from models.base import FactorModel, SharedValues, TrainData, TrainingOptions, gather_shared, register, require_client

__all__ = ["ALS", "ALSConfig", "TUNED_ML_SMALL"]

logger = logging.getLogger(__name__)

_FLOAT = np.float32
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}  # no nnan/ninf: a NaN must stay visible


@dataclass
class ALSConfig:
    """Hyper-parameters of implicit ALS; the defaults are implicit 0.7's semantics."""

    factors: int = 64
    """Latent dimension."""
    regularization: float = 0.05
    """L2 weight (lambda); scaled per row by (count)^reg_exponent when reg_exponent > 0."""
    alpha: float = 1.0
    """Confidence slope: an interaction weighs 1 + alpha * v (linear) or 1 + alpha * log(1 + v/epsilon)."""
    iterations: int = 15
    """ALS sweeps (users then items)."""
    confidence: str = "linear"
    """'linear' or 'log' (see alpha)."""
    epsilon: float = 1.0
    """Scale of the value inside the log confidence."""
    use_values: bool = False
    """True: v is the interaction value (rating); False: every interaction is one positive, v = 1."""
    cg_steps: int = 3
    """Conjugate-gradient steps per row and half-step, warm-started from the previous factors."""
    n_blocks: int | None = None
    """Row blocks (Dask tasks) per half-step; None = twice the number of workers."""
    reg_exponent: float = 0.0
    """Rendle's nu: reg_u = regularization * (|I_u| + unobserved_weight * n_other)^nu; 0 = plain reg."""
    unobserved_weight: float = 1.0
    """Rendle's alpha0: weight of every unobserved pair (the Gramian term); 1 = implicit."""
    init_std: float = 0.0
    """0: implicit's init, uniform [0, 0.01); > 0: normal with std init_std / sqrt(factors)."""

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, rule: str) -> None:
            if not ok:
                raise ValueError(f"ALSConfig.{name} must be {rule}, got {getattr(self, name)!r}")

        need(isinstance(self.factors, int) and self.factors >= 1, "factors", "an int >= 1")
        need(self.regularization >= 0, "regularization", ">= 0")
        need(self.alpha >= 0, "alpha", ">= 0")
        need(isinstance(self.iterations, int) and self.iterations >= 1, "iterations", "an int >= 1")
        need(self.confidence in ("linear", "log"), "confidence", "'linear' or 'log'")
        need(self.epsilon > 0, "epsilon", "> 0")
        need(isinstance(self.cg_steps, int) and self.cg_steps >= 1, "cg_steps", "an int >= 1")
        need(self.n_blocks is None or (isinstance(self.n_blocks, int) and self.n_blocks >= 1), "n_blocks",
             "None or an int >= 1")
        need(self.reg_exponent >= 0, "reg_exponent", ">= 0")
        need(self.unobserved_weight > 0, "unobserved_weight", "> 0")
        need(self.init_std >= 0, "init_std", ">= 0")
        if self.reg_exponent > 0 and self.regularization == 0:
            raise ValueError("ALSConfig.reg_exponent > 0 needs regularization > 0 (it scales regularization)")

    @classmethod
    def tuned(cls, **overrides: Any) -> ALSConfig:
        """The iALS settings tuned on ml-latest-small's validation split (see TUNED_ML_SMALL)."""
        return replace(TUNED_ML_SMALL, **overrides)

    def confidences(self, values: np.ndarray) -> np.ndarray:
        """c_ui for interaction values (float32)."""
        v = np.asarray(values, dtype=np.float64) if self.use_values else np.ones(np.shape(values))
        if self.use_values and (v < 0).any():
            raise ValueError(f"use_values needs non-negative values, got min {v.min()}")
        c = 1.0 + self.alpha * (v if self.confidence == "linear" else np.log1p(v / self.epsilon))
        return c.astype(_FLOAT)

    def row_regularization(self, counts: np.ndarray, n_other: int) -> np.ndarray:
        """reg_u per row from its interaction count (float32)."""
        counts = np.asarray(counts, dtype=np.float64)
        if self.reg_exponent == 0:
            return np.full(counts.shape, self.regularization, dtype=_FLOAT)
        return (self.regularization * (counts + self.unobserved_weight * n_other) ** self.reg_exponent).astype(_FLOAT)


# iALS tuned as in Rendle et al. 2021 on ml-latest-small, never on test: fit on 'fit', NDCG@10 on
# 'validation' ('fit' items excluded), ~330 configurations (random search, then grids around the
# best). Validation NDCG@10 0.1403 (seed 0; 0.1399 mean over seeds 0-3) against 0.1173 for the
# defaults. Refit on 'train': test NDCG@10 0.1309, Recall@10 0.0687 (defaults: 0.1093, 0.0618).
# Ratings weigh confidence (1 + 0.45 * rating); unobserved pairs weigh 5 times an implicit
# negative; regularisation grows as (count + 5 * n_other)^0.25.
TUNED_ML_SMALL = ALSConfig(
    factors=128, regularization=2.7, alpha=0.45, iterations=25, use_values=True, reg_exponent=0.25,
    unobserved_weight=5.0,
)


# -- the per-row solver (numba, no GIL, so a worker's threads run blocks in parallel) -----------
# Every sum is taken by _dot, a loop that only reads. A loop that also writes gets runtime checks
# for overlapping arrays, and LLVM picks its vector or its scalar version by the addresses of the
# scratch arrays (heap layout differs by thread, process and history); with reassociation the two
# versions sum in different orders, so a sum inside such a loop made the factors depend on where
# malloc put them (~1 ulp per solve, which later sweeps amplify). A read-only loop has one version
# for a given length, so each row's result depends on its inputs alone. Timed against the fused
# loops it replaced, interleaved in one run (20,000 rows, 1M interactions, 3 CG steps, load 0.5,
# AMD EPYC): 128 factors 0.147 s vs 0.145 s, 64 factors 0.066 s vs 0.066 s.
@numba.njit(nogil=True, cache=True, fastmath=_FASTMATH, inline="always")
def _dot(a, b):  # pragma: no cover - jitted
    acc = np.float32(0.0)
    for k in range(a.shape[0]):
        acc += a[k] * b[k]
    return acc


@numba.njit(nogil=True, cache=True, fastmath=_FASTMATH)
def _cg_rows(indptr, indices, conf, x0, y, gram, reg, alpha0, steps):  # pragma: no cover - jitted
    """CG steps for each row of a CSR block; x0 is the warm start (not modified)."""
    n, f = x0.shape
    out = x0.copy()
    r = np.empty(f, np.float32)
    p = np.empty(f, np.float32)
    ap = np.empty(f, np.float32)
    for u in range(n):
        x = out[u]
        lam = reg[u]
        # r = b - A x
        for a in range(f):
            r[a] = -_dot(gram[a], x) - lam * x[a]
        for j in range(indptr[u], indptr[u + 1]):
            yi = y[indices[j]]
            c = conf[j]
            w = c - (c - alpha0) * _dot(yi, x)
            for a in range(f):
                r[a] += w * yi[a]
        for a in range(f):
            p[a] = r[a]
        rs_old = _dot(r, r)
        if rs_old < 1e-20:
            continue
        for _ in range(steps):
            for a in range(f):
                ap[a] = _dot(gram[a], p) + lam * p[a]
            for j in range(indptr[u], indptr[u + 1]):
                yi = y[indices[j]]
                w = (conf[j] - alpha0) * _dot(yi, p)
                for a in range(f):
                    ap[a] += w * yi[a]
            step = rs_old / _dot(p, ap)
            for a in range(f):
                x[a] += step * p[a]
                r[a] -= step * ap[a]
            rs_new = _dot(r, r)
            if rs_new < 1e-20:
                break
            beta = rs_new / rs_old
            for a in range(f):
                p[a] = r[a] + beta * p[a]
            rs_old = rs_new
    return out


@dataclass(frozen=True)
class _Block:
    """One block of rows: its CSR slice (confidences as data) and per-row regularisation."""

    indptr: np.ndarray
    indices: np.ndarray
    conf: np.ndarray
    reg: np.ndarray


def _solve_block(block: _Block, warm: np.ndarray, lo: int, hi: int, y: np.ndarray, gram: np.ndarray,
                 alpha0: float, steps: int) -> np.ndarray:
    """A Dask task: new factors for rows lo:hi, warm-started from ``warm[lo:hi]``, against the
    fixed side ``y`` and its Gramian ``alpha0 * YtY``."""
    return _cg_rows(block.indptr, block.indices, block.conf, warm[lo:hi], y, gram, block.reg, np.float32(alpha0), steps)


def _stack(parts: list[np.ndarray], what: str) -> np.ndarray:
    """A Dask task: one side's factors from its blocks' rows, checked finite (ModelDivergedError)."""
    out = np.concatenate(parts, axis=0)
    if not np.isfinite(out).all():
        raise ModelDivergedError(f"{what}: non-finite factors (diverged)")
    return out


def _blocks(csr: sp.csr_matrix, reg: np.ndarray, n_blocks: int) -> tuple[list[_Block], np.ndarray]:
    """Contiguous row blocks of about equal work (interactions + one per row)."""
    n = csr.shape[0]
    n_blocks = max(1, min(n_blocks, n))
    work = np.cumsum(np.diff(csr.indptr) + 1)
    bounds = np.searchsorted(work, work[-1] * np.arange(1, n_blocks) / n_blocks) if n else np.zeros(0, int)
    bounds = np.unique(np.concatenate([[0], bounds, [n]])).astype(np.int64)
    out = []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        sub = csr[lo:hi]
        out.append(_Block(sub.indptr.astype(np.int64), sub.indices.astype(np.int32), sub.data.astype(_FLOAT), reg[lo:hi]))
    return out, bounds


@functools.cache
def _blas() -> ThreadpoolController:
    return ThreadpoolController()


def _one_blas_thread() -> Any:
    """Context: BLAS on one thread. These products are small, so threads only cost (OpenBLAS
    threads on a loaded machine make a 64 x 64 Gramian take a second), and one thread gives the
    same bits on every machine."""
    return _blas().limit(limits=1, user_api="blas")


def _add_weighted_gram(a: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """a + Y^T diag(w) Y in a's lower triangle, in place (a: float64, Fortran order): symmetric
    rank-k updates (BLAS syrk, half a product's flops; one for the positive weights, one for the
    negative). With the tuned alpha0 = 5, c_j - alpha0 is negative for light interactions."""
    from scipy.linalg.blas import dsyrk

    for sign, rows in ((1.0, w > 0), (-1.0, w < 0)):
        if rows.any():
            scaled = y[rows] * np.sqrt(sign * w[rows])[:, None]
            a = dsyrk(sign, scaled.T, beta=1.0, c=a, trans=0, lower=1, overwrite_c=1)
    return a


def _cholesky(a: np.ndarray) -> tuple[np.ndarray, bool]:
    """The lower Cholesky factor of a fold-in's A (symmetric positive definite: alpha0 YtY plus
    c_j y_j y_j^T over the history plus reg_u I), for ``_solve``. On a history of 300 items at
    k = 128, syrk and Cholesky took 310 us against 405 us for the product and an LU solve (one
    BLAS thread, interleaved in one process, 2-core AMD EPYC at load average ~1.5: a test run beside it)."""
    from scipy.linalg import cho_factor

    return cho_factor(a, lower=True, overwrite_a=True, check_finite=False)


def _solve(factor: tuple[np.ndarray, bool], rhs: np.ndarray) -> np.ndarray:
    """A^-1 rhs from ``_cholesky``'s factor."""
    from scipy.linalg import cho_solve

    return cho_solve(factor, rhs, check_finite=False)


def _gram(y: np.ndarray, alpha0: float) -> np.ndarray:
    """alpha0 * YtY in float32, accumulated in float64."""
    y64 = np.asarray(y, dtype=np.float64)
    with _one_blas_thread():
        return (alpha0 * (y64.T @ y64)).astype(_FLOAT)


@register
class ALS(FactorModel):
    """Implicit ALS with CG solves, one Dask task per row block and half-step."""

    kind = "als"
    Config = ALSConfig

    def _fit(self, data: TrainData, options: TrainingOptions) -> None:
        cfg: ALSConfig = self.config
        if options.device == "cuda":
            warnings.warn("ALS runs on CPU workers; device='cuda' is ignored", stacklevel=3)
        client = require_client(options.client, "als fit")
        cui = sp.csr_matrix(data.matrix(), dtype=_FLOAT, copy=True)
        cui.sum_duplicates()
        cui.eliminate_zeros()
        cui.data = cfg.confidences(cui.data)
        ciu = cui.T.tocsr()
        n_users, n_items = cui.shape
        n_workers = max(1, len(client.scheduler_info(n_workers=-1)["workers"]))
        n_blocks = cfg.n_blocks or 2 * n_workers

        rng = np.random.default_rng(options.seed)
        x, y = self._init(rng, n_users), self._init(rng, n_items)
        reg_u = cfg.row_regularization(np.diff(cui.indptr), n_items)
        reg_i = cfg.row_regularization(np.diff(ciu.indptr), n_users)
        token = uuid.uuid4().hex[:8]
        blocks = {side: _blocks(csr, reg, n_blocks) for side, csr, reg in (("users", cui, reg_u), ("items", ciu, reg_i))}
        # Scattered once per fit: the block slices and the initial factors. Every later side lives on
        # the workers as the future of a task, which the next half-step reads as its fixed side (with
        # its Gramian) and the one after as warm start.
        shared = {side: SharedValues(client, blk) for side, (blk, _) in blocks.items()}
        initial = SharedValues(client, [x, y])

        def submit(fresh: bool, suffix: str) -> list[Any]:
            """The whole fit's tasks, submitted one iteration at a time; the final factors' futures."""
            x_f, y_f = initial.get(fresh)
            gram_f = client.submit(_gram, y_f, cfg.unobserved_weight, key=f"als-items-gram-init-{token}{suffix}")
            current = {"users": (x_f, None), "items": (y_f, gram_f)}
            self.history_: list[dict[str, float]] = []
            progress = _progress(options.progress, cfg.iterations)
            for it in range(cfg.iterations):
                start = time.perf_counter()
                for side, other in (("users", "items"), ("items", "users")):
                    key = f"{side}-{{step}}-iter-{it}-{token}{suffix}"
                    current[side] = self._half_step(client, key, shared[side].get(fresh), blocks[side][1],
                                                    current[side][0], *current[other])
                done = current["items"][0]
                if done.exception() is not None or done.status != "finished":  # waits, fetches nothing
                    break  # lost or diverged: gathering the futures raises why
                self.history_.append({"iteration": it, "seconds": time.perf_counter() - start})
                progress(it)
            return [current["users"][0], current["items"][0]]

        x, y = gather_shared(client, f"als: fit {token}", submit)
        initial.release()
        self.user_factors_, self.item_factors_ = x, y
        self.n_blocks_ = len(blocks["users"][0])

    def _init(self, rng: np.random.Generator, n: int) -> np.ndarray:
        cfg: ALSConfig = self.config
        if cfg.init_std == 0:
            return (rng.random((n, cfg.factors), dtype=_FLOAT) * _FLOAT(0.01)).astype(_FLOAT)
        return (rng.standard_normal((n, cfg.factors), dtype=_FLOAT) * _FLOAT(cfg.init_std / math.sqrt(cfg.factors))).astype(_FLOAT)

    def _half_step(self, client: Any, key: str, blocks_f: list[Any], bounds: np.ndarray, warm_f: Any, fixed_f: Any,
                   gram_f: Any) -> tuple[Any, Any]:
        """Solve every row of one side against the fixed other side, one task per block; the futures
        of the solved side and of its Gramian, left on the workers.

        A lost worker costs only its running tasks (Dask reruns them from their inputs) unless it
        took the last replica of scattered data with it: then the futures fail with a lost-data
        error and ``gather_shared`` submits the fit again on data scattered afresh. Rows are solved
        deterministically, so the result is the same.
        """
        cfg: ALSConfig = self.config
        parts = [
            client.submit(_solve_block, blk, warm_f, int(bounds[k]), int(bounds[k + 1]), fixed_f, gram_f,
                          cfg.unobserved_weight, cfg.cg_steps, key="als-" + key.format(step=f"block-{k}"), retries=2)
            for k, blk in enumerate(blocks_f)
        ]
        solved = client.submit(_stack, parts, "als: " + key.format(step="*"), key="als-" + key.format(step="stack"))
        return solved, client.submit(_gram, solved, cfg.unobserved_weight, key="als-" + key.format(step="gram"))

    # -- online ---------------------------------------------------------------------------------
    # fold_in, history_terms and pull_operands run in a serving process, whose BLAS is on one
    # thread from its start (graphql_api.engine.serving_threads), or in a Dask worker process (one
    # thread by the nanny): a limit per call here cost ~15% of pull_operands (threadpoolctl's
    # set-and-restore) and resized the process's BLAS pool under other threads' calls.
    def fold_in(self, items: np.ndarray, values: np.ndarray | None = None) -> np.ndarray:
        """Exact least-squares user vector for a history against fixed item factors.

        Solves (alpha0 YtY + Y_u^T (C_u - alpha0) Y_u + reg_u I) x = Y_u^T c_u (as implicit's
        recalculate_user, with Rendle's alpha0 and nu); an empty history gives the zero vector.
        Repeated items have their values summed.
        """
        system = self._fold_in_system(items, values)
        if system is None:
            return np.zeros(self.item_factors_.shape[1], dtype=_FLOAT)
        _, conf, yu, factor = system
        return _solve(factor, yu.T @ conf).astype(_FLOAT)

    FOLD_IN_CG_STEPS: ClassVar[int] = 16
    """Conjugate-gradient steps of ``fold_in_histories``."""

    def fold_in_histories(self, histories: sp.csr_matrix) -> np.ndarray:
        """``fold_in`` of every row, solved by training's conjugate-gradient kernel (``_cg_rows``)
        from zero for FOLD_IN_CG_STEPS steps instead of one Cholesky factorisation per row. CG is
        exact after as many steps as factors in exact arithmetic; with 8 factors (the tests) 16
        float32 steps agree with the Cholesky solves to 1e-4. With 128 factors fewer steps than
        factors suffice in practice (the regularisation keeps the systems well conditioned): at 1M
        synthetic interactions (tuning's model, 'train' histories, 2-core AMD EPYC, /tmp script) 12
        steps gave test NDCG@10 0.3362, the Cholesky solves' to the 4th decimal, in 0.46 s against
        9.5 s for the per-row loop (6 steps 0.3360, 3 steps 0.3467)."""
        cfg: ALSConfig = self.config
        cui = sp.csr_matrix(histories, dtype=_FLOAT, copy=True)
        cui.sum_duplicates()  # a repeated item's values summed, as fold_in does (a zero value kept, too)
        conf = cfg.confidences(cui.data).astype(_FLOAT)
        reg = cfg.row_regularization(np.diff(cui.indptr), self._trained_items()).astype(_FLOAT)
        y = np.ascontiguousarray(self.item_rows(slice(0, self.item_factors_.shape[0]), dtype=_FLOAT))
        gram = np.ascontiguousarray(self._gram64(), dtype=_FLOAT)
        start = np.zeros((cui.shape[0], self.dim), dtype=_FLOAT)
        return _cg_rows(cui.indptr.astype(np.int64), cui.indices.astype(np.int32), conf, start, y, gram, reg,
                        _FLOAT(cfg.unobserved_weight), self.FOLD_IN_CG_STEPS)

    def history_terms(self, items: np.ndarray, values: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``fold_in``'s solve split by history item, as implicit's ``explain`` does: with A the
        matrix ``fold_in`` solves against, x = A^-1 Y_u^T c_u = sum_j c_j A^-1 y_j, so item j's part
        of the user vector is c_j A^-1 y_j and its term of the score of item i is <c_j A^-1 y_j, y_i>.
        A trained user's stored vector came from the same system solved by a few conjugate-gradient
        steps inside training: its score is the fold-in's of its training history up to that."""
        system = self._fold_in_system(items, values)
        if system is None:
            return np.zeros(0, dtype=np.int64), np.zeros((0, self.item_factors_.shape[1]), dtype=_FLOAT)
        uniq, conf, yu, factor = system
        parts = _solve(factor, yu.T * conf).T
        return uniq.astype(np.int64), parts.astype(_FLOAT)

    def pull_operands(self, items: np.ndarray, item_rows: np.ndarray,
                      values: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The pulls of ``history_terms`` split the other way: A is symmetric, so the term
        <c_j A^-1 y_j, y_i> is <c_j y_j, A^-1 y_i>, one solve with a right-hand side per explained
        item rather than one per history item (``FactorModel.pull_operands``). On the six-signal
        ml-latest-small bundle the ALS-led explanations took ~1.2 ms a user with the parts."""
        targets = np.asarray(item_rows, dtype=np.int64)
        system = self._fold_in_system(items, values)
        if system is None:
            empty = np.zeros((0, self.dim), dtype=_FLOAT)
            return np.zeros(0, dtype=np.int64), empty, np.zeros((len(targets), self.dim), dtype=_FLOAT)
        uniq, conf, yu, factor = system
        solved = _solve(factor, self.item_rows(targets).T).T
        return (uniq.astype(np.int64), np.ascontiguousarray(yu * conf[:, None], dtype=_FLOAT),
                np.ascontiguousarray(solved, dtype=_FLOAT))

    def _fold_in_system(self, items: np.ndarray, values: np.ndarray | None
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[np.ndarray, bool]] | None:
        """A history's distinct rows, confidences c_u, factors Y_u (float64) and the Cholesky
        factor of the matrix A that ``fold_in`` solves against (``_solve``); None for an empty history."""
        cfg: ALSConfig = self.config
        items, vals = self._history(items, values)
        if items.size == 0:
            return None
        vals = np.ones(items.size) if vals is None else vals
        uniq, inv = np.unique(items, return_inverse=True)
        conf = cfg.confidences(np.bincount(inv, weights=vals)).astype(np.float64)
        yu = self.item_rows(uniq)
        reg = float(cfg.row_regularization(np.array([uniq.size]), self._trained_items())[0])
        a = np.asfortranarray(self._gram64() + reg * np.eye(self.dim))
        return uniq, conf, yu, _cholesky(_add_weighted_gram(a, yu, conf - cfg.unobserved_weight))

    def _trained_items(self) -> int:
        """Items the factors were fit over: items added while serving (``with_items``) come after them."""
        return int(getattr(self, "trained_items_", self.item_factors_.shape[0]))

    def _gram64(self) -> np.ndarray:
        """alpha0 YtY over the trained items: a fold-in solves against what training solved against,
        so an added item changes a user's vector only when it is in their history."""
        source = self.item_factors_ if self._item_source is None else self._item_source[0]  # what item_rows reads
        if getattr(self, "_gram_cache", None) is None or self._gram_cache[0] is not source:
            trained = self.item_rows(slice(0, self._trained_items()))
            gram = _gram(trained, self.config.unobserved_weight).astype(np.float64)
            self._gram_cache = (source, gram)
        return self._gram_cache[1]

    def _extend_items(self, item_factors: np.ndarray) -> None:
        self.trained_items_ = getattr(self, "trained_items_", self.item_factors_.shape[0] - len(item_factors))


def _progress(show: bool, total: int):
    """A per-iteration callback: a tqdm bar when asked, otherwise nothing."""
    if not show:
        return lambda it: None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="als")

    def step(it: int) -> None:
        bar.update(1)
        if it + 1 == total:
            bar.close()

    return step
