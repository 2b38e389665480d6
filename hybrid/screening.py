"""An int8 copy of the fused item vectors that narrows an exact scan to a few candidates.

An exact top-k over n fused vectors reads all n x dim float32 values per query; on ml-latest-small
with six signals (9,742 x 993, 39 MB) that is more than the CPU cache holds, and the scan was most of
an uncached recommendation. The int8 copy is a quarter of that and is read by an integer dot kernel
(numba; ~5x faster than numpy's float32 product on one core here); a provable bound on its error
then picks the few items whose exact score can still reach the k-th best, and only those are
scored in float32. The answer is the exact one, not an approximation: every item of the exact
top-k (ties included) is among the candidates.

The bound. Coordinate d is stored as ``v8[i, d] = round(v[i, d] / c[d])`` with the per-coordinate
scale ``c[d] = max_i |v[i, d]| / 127`` (signals keep their own magnitudes), so
``v[i] / c = v8[i] + e[i]``. A query is scaled the same way, ``p = q * c = s * (p8 + f)`` with one
scale ``s = max |p| / 127``. Then

    <q, v_i> = <p, v_i / c> = s <p8, v8_i> + s <f, v8_i> + <p, e_i>

and by Cauchy-Schwarz ``|<q, v_i> - s <p8, v8_i>| <= s |f| |v8_i| + |p| |e_i|``: an integer dot
product (exact in int32) plus a bound from per-item norms kept beside the copy. A small relative
slack covers float32 rounding in the exact scores.

Most items are never read in int8 either. The coordinates are cut into ``_BLOCKS`` slices and each
item keeps the norm of each slice: ``<q, v_i> <= sum_b |q_b| |v_i,b|`` (Cauchy-Schwarz per slice) is
a (n x 32) product. The exact scores of the ``_SEEDS`` items with the highest such bound give a
first threshold (their k-th best is at most the true k-th best); an item whose block bound is
below it cannot be in the top-k and its int8 row is skipped. On the six-signal ml-latest-small
bundle that skips about 80% of the rows for the median user (the threshold from 64 seeds is
within 2% of the true k-th score); the spectrum of the fused vectors is too flat for a low-rank
projection to do the same (a rank-256 bound kept almost every item). The rows are stored in
descending |v_i|, so the kept rows cluster near the front: read mostly in order, not scattered.
With the copy out of cache (as between requests in a server) a query took ~1.0 ms, against
~1.35 ms for the full int8 pass (same machine, same run; bench: 610 users of that bundle).
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["ScreenedVectors"]

_LEVELS = 127.0
_MAX_DIM = 100_000
"""int32 sums of int8 x int8 products (each at most 127^2) cannot overflow below this."""
_FLOAT_SLACK = 1e-4
"""Relative to |q| |v_i|: the float32 rounding of a dim-long exact dot product stays far below it."""
_BLOCKS = 32
"""Coordinate slices of the block bound (at most this many: fewer when there are fewer dims)."""
_SEEDS = 64
"""Items (at least; 4k for larger k) scored exactly for the first threshold."""


class ScreenedVectors:
    """int8 fused vectors, their per-coordinate scales and the per-item terms of the error bound."""

    def __init__(self, vectors: np.ndarray, block_rows: int = 65_536) -> None:
        n, dim = vectors.shape
        if dim > _MAX_DIM:
            raise ValueError(f"vectors have {dim} dimensions; the int8 screen takes at most {_MAX_DIM}")
        self.vectors = np.asarray(vectors)
        """The float32 vectors (a plain view when they are memory-mapped)."""
        peak = np.zeros(dim, dtype=np.float32)
        for start in range(0, n, block_rows):  # in blocks: the vectors may be memory-mapped
            peak = np.maximum(peak, np.abs(np.asarray(vectors[start : start + block_rows], np.float32)).max(axis=0))
        self.scale = np.where(peak > 0, peak / _LEVELS, 1.0).astype(np.float32)
        self.codes = np.empty((n, dim), dtype=np.int8)
        self.code_norms = np.empty(n, dtype=np.float64)
        """|v8_i|."""
        self.residual_norms = np.empty(n, dtype=np.float64)
        """|v_i / c - v8_i|."""
        self.norms = np.empty(n, dtype=np.float64)
        """|v_i|."""
        self.edges = np.linspace(0, dim, min(_BLOCKS, dim) + 1).astype(np.int64)
        """Bounds of the coordinate slices."""
        self.block_norms = np.empty((n, len(self.edges) - 1), dtype=np.float32)
        """|v_i,b| per slice b."""
        for start in range(0, n, block_rows):
            block = np.asarray(vectors[start : start + block_rows], np.float32)
            scaled = block / self.scale
            codes = np.clip(np.rint(scaled), -_LEVELS, _LEVELS)
            stop = start + len(block)
            self.codes[start:stop] = codes.astype(np.int8)
            self.code_norms[start:stop] = np.linalg.norm(codes, axis=1)
            self.residual_norms[start:stop] = np.linalg.norm(scaled - codes, axis=1)
            self.norms[start:stop] = np.linalg.norm(block, axis=1)
            self.block_norms[start:stop] = np.sqrt(np.add.reduceat(block.astype(np.float64) ** 2, self.edges[:-1], axis=1))
        # the per-item arrays in descending |v_i|: the items a query's bounds keep are mostly long
        # vectors, so their int8 rows lie near the front, close together (prefetched, not scattered)
        self.order = np.argsort(-self.norms, kind="stable")
        """Item row of each position in the arrays above."""
        for name in ("codes", "code_norms", "residual_norms", "norms", "block_norms"):
            setattr(self, name, np.ascontiguousarray(getattr(self, name)[self.order]))

    def __len__(self) -> int:
        return len(self.codes)

    def candidates(self, query: np.ndarray, k: int, blocked: np.ndarray | None = None) -> np.ndarray:
        """Rows (ascending) holding every item of the exact top-k of ``query``, ties included.

        ``blocked``: boolean mask of the items the answer must leave out (None: none). When k or
        fewer items are left, all of them are returned.
        """
        q = np.asarray(query, np.float32)
        p = q.astype(np.float64) * self.scale
        s = float(np.abs(p).max()) / _LEVELS or 1.0
        p8 = np.clip(np.rint(p / s), -_LEVELS, _LEVELS)
        terms = np.array([
            s,
            s * float(np.linalg.norm(p / s - p8)),  # times |v8_i|
            float(np.linalg.norm(p)),  # times |e_i|
            _FLOAT_SLACK * float(np.linalg.norm(q)),  # times |v_i|
        ])
        q_blocks = np.sqrt(np.add.reduceat(q.astype(np.float64) ** 2, self.edges[:-1])).astype(np.float32)
        # float32 rounding of this product stays far below the slack term (both scale with |q| |v_i|)
        bound = (self.block_norms @ q_blocks).astype(np.float64) + terms[3] * self.norms
        if blocked is not None:
            bound[blocked[self.order]] = -np.inf
        found = _screen(self.codes, p8.astype(np.int8), terms, self.code_norms, self.residual_norms, self.norms,
                        bound, self.order, self.vectors, q, int(k), max(_SEEDS, 4 * int(k)))
        return np.sort(self.order[found])


@numba.njit(nogil=True, cache=True, boundscheck=False)
def _screen(codes, p8, terms, code_norms, residual_norms, norms, bound, order, vectors, q, k,
            seeds):  # pragma: no cover - jitted
    """The positions (in ScreenedVectors' order) of the candidates; ``bound``: each item's block
    bound, -inf for the blocked ones."""
    n = codes.shape[0]
    s, sf, p_norm, slack = terms[0], terms[1], terms[2], terms[3]
    eligible = 0
    for i in range(n):
        if bound[i] > -np.inf:
            eligible += 1
    if eligible <= k:
        return np.flatnonzero(bound > -np.inf)
    # threshold: the k-th best exact score of the items with the highest bounds (any k eligible
    # items' k-th best is at most the true k-th best)
    m = min(seeds, eligible)
    floor = np.partition(bound, n - m)[n - m]  # the m-th highest bound (finite: m <= eligible)
    exact = np.empty(m, dtype=np.float64)
    j = 0
    for i in range(n):
        if j < m and bound[i] >= floor:
            acc = 0.0
            for d in range(q.size):
                acc += np.float64(vectors[order[i], d]) * np.float64(q[d])
            exact[j] = acc
            j += 1
    tau = np.partition(exact, m - k)[m - k]
    # int8 scores only where the block bound reaches it; candidates where the int8 bound does too
    kept = np.flatnonzero(bound >= tau)
    dots = np.empty(kept.size, dtype=np.int32)
    _int8_dots(codes, kept, p8, dots)
    out = np.empty(kept.size, dtype=np.int64)
    found = 0
    for j in range(kept.size):
        i = kept[j]
        if dots[j] * s + sf * code_norms[i] + p_norm * residual_norms[i] + slack * norms[i] >= tau:
            out[found] = i
            found += 1
    return out[:found]


@numba.njit(nogil=True, cache=True, boundscheck=False)
def _int8_dots(codes, rows, p8, out):  # pragma: no cover - jitted
    """out[j] = <codes[rows[j]], p8> exactly: int16 products, int32 sums (LLVM vectorises this loop;
    a float store in the same loop stopped that and doubled the time)."""
    dim = codes.shape[1]
    for j in range(rows.size):
        i = rows[j]
        acc = np.int32(0)
        for d in range(dim):
            acc += np.int16(codes[i, d]) * np.int16(p8[d])
        out[j] = acc
