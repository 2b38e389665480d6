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
projection to do the same (a rank-256 bound kept almost every item), and more slices barely help
(256 slices still kept 1,200 rows against 1,700 for 32). The rows are stored in descending |v_i|,
so the kept rows cluster near the front: read mostly in order, not scattered; and since every
block bound is at most (1 + slack) |q| |v_i|, the seeds' pass (a heap of the best bounds) stops
where that falls below the bounds it holds.

A batch of queries shares the pass: each slice's column of block norms and each kept int8 row is
read once for all the queries that need it (the API batches concurrent requests this way,
graphql_api.batching). ``top_k`` ranks the candidates in the same kernel (``ranked``: exact
scores read in place, float64 sums). FusedIndex.search over the 610 users of that bundle, with a
32 MB buffer touched between calls (the screen's arrays out of cache, as between requests in a
server): ~1.1 ms a query alone, ~0.54 in batches of 4, ~0.44 in batches of 8 (0.57 / 0.45 / 0.41
with the cache warm); before batching and in-kernel ranking, ~1.8 ms a query.

Why a kernel of its own beside usearch (bench/search_paths.py, 280 users of that bundle, top 10,
2026-12-05, 2-core machine shared at load 11.7-12.3, so read the figures side by side only): the
screen took 0.79-0.95 ms a query alone and 0.51-1.26 in batches of 7; usearch's exact int8 search
over the same codes (then the excluded dropped and the rest rescored) 1.27-1.94 and 1.14-2.35, with
the same top 10 on every query; numpy's float32 product 6.1-10.4 and 2.5-6.8. The search is about
half of an uncached request's server CPU (~1 ms, README "Serving"), so neither path replaces the
kernel within 2% of the API's throughput; the price is numba in the API process (llvmlite's
mapped library and numba's modules, about 70 MiB of a worker's RSS, README "Memory").
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np

__all__ = ["ScreenedVectors", "exact_dot", "exact_scores", "ranked"]

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
        self.block_norms = np.empty((len(self.edges) - 1, n), dtype=np.float32)
        """|v_i,b| per slice b (slices x items: the bound pass reads a slice's column in order)."""
        for start in range(0, n, block_rows):
            block = np.asarray(vectors[start : start + block_rows], np.float32)
            scaled = block / self.scale
            codes = np.clip(np.rint(scaled), -_LEVELS, _LEVELS)
            stop = start + len(block)
            self.codes[start:stop] = codes.astype(np.int8)
            self.code_norms[start:stop] = np.linalg.norm(codes, axis=1)
            self.residual_norms[start:stop] = np.linalg.norm(scaled - codes, axis=1)
            self.norms[start:stop] = np.linalg.norm(block, axis=1)
            self.block_norms[:, start:stop] = np.sqrt(
                np.add.reduceat(block.astype(np.float64) ** 2, self.edges[:-1], axis=1)).T
        # the per-item arrays in descending |v_i|: the items a query's bounds keep are mostly long
        # vectors, so their int8 rows lie near the front, close together (prefetched, not scattered)
        self.order = np.argsort(-self.norms, kind="stable")
        """Item row of each position in the arrays above."""
        for name in ("codes", "code_norms", "residual_norms", "norms"):
            setattr(self, name, np.ascontiguousarray(getattr(self, name)[self.order]))
        self.block_norms = np.ascontiguousarray(self.block_norms[:, self.order])
        self.position = np.empty(n, dtype=np.int64)
        """Position of each item row in the arrays above (the inverse of ``order``)."""
        self.position[self.order] = np.arange(n)

    def __len__(self) -> int:
        return len(self.codes)

    def candidates(
        self,
        queries: np.ndarray,
        k: int,
        exclude: Sequence[np.ndarray] | None = None,
        allowed: np.ndarray | None = None,
    ) -> list[np.ndarray]:
        """Per query (rows of ``queries``, m x dim): item rows (ascending) holding every item of
        its exact top-k, ties included.

        ``exclude``: per query, the item rows its answer must leave out (None: none); ``allowed``:
        a boolean mask over item rows shared by every query (None: all). When k or fewer items are
        left, all of them are returned. The queries share the reads of the screen's arrays, so a
        batch costs less than its queries one by one.
        """
        q, indptr, indices, mask = self._batch(queries, exclude, allowed)
        which, found = _screen(q, int(k), max(_SEEDS, 4 * int(k)), indptr, indices, mask, self.scale, self.edges,
                               self.block_norms, self.codes, self.code_norms, self.residual_norms, self.norms,
                               self.order, self.position, self.vectors)
        bounds = np.searchsorted(which, np.arange(len(q) + 1))
        return [np.sort(self.order[found[bounds[j] : bounds[j + 1]]]) for j in range(len(q))]

    def top_k(
        self,
        queries: np.ndarray,
        k: int,
        exclude: Sequence[np.ndarray] | None = None,
        allowed: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each query's exact top-k (``candidates`` ranked by ``ranked``): (m, k) item rows and float32
        scores, best first, ties by lower row, padded with -1 / -inf."""
        q, indptr, indices, mask = self._batch(queries, exclude, allowed)
        rows = np.full((len(q), k), -1, dtype=np.int64)
        scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        _screen_ranked(q, int(k), max(_SEEDS, 4 * int(k)), indptr, indices, mask, self.scale, self.edges,
                       self.block_norms, self.codes, self.code_norms, self.residual_norms, self.norms, self.order,
                       self.position, self.vectors, rows, scores)
        return rows, scores

    def _batch(self, queries: np.ndarray, exclude: Sequence[np.ndarray] | None,
               allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The kernel's arguments: queries, exclusions as CSR (indptr, indices), the mask or an empty one."""
        q = np.ascontiguousarray(queries, np.float32)
        if q.ndim != 2 or q.shape[1] != self.codes.shape[1]:
            raise ValueError(f"queries have shape {q.shape}, expected (m, {self.codes.shape[1]})")
        m = len(q)
        if exclude is None:
            exclude = [np.zeros(0, dtype=np.int64)] * m
        if len(exclude) != m:
            raise ValueError(f"exclude has {len(exclude)} entries for {m} queries")
        indptr = np.zeros(m + 1, dtype=np.int64)
        indptr[1:] = np.cumsum([len(e) for e in exclude])
        indices = np.concatenate([np.asarray(e, dtype=np.int64).ravel() for e in exclude]) if m else indptr[:0]
        n = len(self)
        if indices.size and (indices.min() < 0 or indices.max() >= n):  # the kernel does not check bounds
            bad = indices[(indices < 0) | (indices >= n)]
            raise ValueError(f"exclude has item rows outside [0, {n}): {bad[:5].tolist()}")
        mask = np.zeros(0, dtype=bool) if allowed is None else np.asarray(allowed, dtype=bool)
        if allowed is not None and mask.shape != (n,):
            raise ValueError(f"allowed mask has shape {mask.shape}, expected ({n},)")
        return q, indptr, indices, mask


def ranked(vectors: np.ndarray, query: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best of ``rows`` by exact score (``exact_scores``), best first, ties by lower row;
    -1 / -inf pad when there are fewer than k. Ranked inside the jitted kernel (``top_k`` too), by
    the rule of the project's one top-k, etl.topk.topk: tests/test_topk.py holds them together."""
    out_rows = np.full(k, -1, dtype=np.int64)
    out_scores = np.full(k, -np.inf, dtype=np.float32)
    _top_rows(vectors, np.ascontiguousarray(query, np.float32), np.ascontiguousarray(rows, dtype=np.int64), k,
              out_rows, out_scores)
    return out_rows, out_scores


@numba.njit(nogil=True, cache=True, boundscheck=False)
def _top_rows(vectors, q, rows, k, out_rows, out_scores):  # pragma: no cover - jitted
    if rows.size == 0:
        return
    rows = np.sort(rows)
    scores = np.empty(rows.size, dtype=np.float32)
    for j in range(rows.size):
        scores[j] = np.float32(exact_dot(vectors, rows[j], q))
    best = np.argsort(-scores, kind="mergesort")  # stable: equal scores keep ascending rows
    for t in range(min(k, rows.size)):
        j = best[t]
        if scores[j] == -np.inf:
            break
        out_rows[t], out_scores[t] = rows[j], scores[j]


@numba.njit(nogil=True, cache=True, boundscheck=False)
def _screen_ranked(queries, k, seeds, indptr, indices, allowed, scale, edges, block_norms, codes, code_norms,
                   residual_norms, norms, order, position, vectors, out_rows, out_scores):  # pragma: no cover
    which, found = _screen(queries, k, seeds, indptr, indices, allowed, scale, edges, block_norms, codes,
                           code_norms, residual_norms, norms, order, position, vectors)
    start = 0
    for j in range(queries.shape[0]):
        stop = start
        while stop < which.size and which[stop] == j:
            stop += 1
        _top_rows(vectors, queries[j], order[found[start:stop]], k, out_rows[j], out_scores[j])
        start = stop


def exact_scores(vectors: np.ndarray, rows: np.ndarray, query: np.ndarray) -> np.ndarray:
    """<vectors[r], query> for each of ``rows`` as float32, summed in float64 (the seeds' sums): no
    copy of the rows is made (a gather of memory-mapped rows cost more than the products)."""
    return _exact_rows(vectors, np.ascontiguousarray(rows, dtype=np.int64), np.ascontiguousarray(query, np.float32))


@numba.njit(nogil=True, cache=True, boundscheck=False)
def _exact_rows(vectors, rows, q):  # pragma: no cover - jitted
    out = np.empty(rows.size, dtype=np.float32)
    for j in range(rows.size):
        out[j] = np.float32(exact_dot(vectors, rows[j], q))
    return out


@numba.njit(nogil=True, cache=True, boundscheck=False)
def _screen(queries, k, seeds, indptr, indices, allowed, scale, edges, block_norms, codes, code_norms,
            residual_norms, norms, order, position, vectors):  # pragma: no cover - jitted
    """The candidates of a batch of queries as (query, position) pairs, by query then position
    (positions in ScreenedVectors' order). Query j leaves out the item rows
    ``indices[indptr[j]:indptr[j + 1]]`` and, when ``allowed`` is not empty, the rows it does not
    allow."""
    m = queries.shape[0]
    n, dim = codes.shape
    p8 = np.empty((m, dim), dtype=np.int8)
    terms = np.empty((m, 4), dtype=np.float64)  # s, s |f|, |p|, slack: times 1, |v8_i|, |e_i|, |v_i|
    q_norms = np.empty(m, dtype=np.float64)
    bound = np.empty((m, n), dtype=np.float64)
    for j in range(m):
        q_norms[j] = _query_terms(queries[j], scale, p8[j], terms[j])
        for i in range(n):
            bound[j, i] = terms[j, 3] * norms[i]
    # the block bound, one pass over each slice's column for the whole batch
    q_blocks = np.empty(m, dtype=np.float64)
    for b in range(edges.size - 1):
        for j in range(m):
            acc = 0.0
            for d in range(edges[b], edges[b + 1]):
                acc += np.float64(queries[j, d]) * np.float64(queries[j, d])
            q_blocks[j] = np.sqrt(acc)
        column = block_norms[b]
        for j in range(m):
            row, qb = bound[j], q_blocks[j]
            for i in range(n):
                row[i] += np.float64(column[i]) * qb
    tau = np.full(m, np.inf)
    every = np.zeros(m, dtype=np.bool_)  # k or fewer eligible items: all of them
    for j in range(m):
        row = bound[j]
        for r in indices[indptr[j] : indptr[j + 1]]:
            row[position[r]] = -np.inf
        if allowed.size:
            for i in range(n):
                if not allowed[order[i]]:
                    row[i] = -np.inf
        eligible = 0
        for i in range(n):
            if row[i] > -np.inf:
                eligible += 1
        if eligible <= k:
            every[j], tau[j] = True, -np.inf
            continue
        tau[j] = _threshold(row, queries[j], q_norms[j] * (1.0 + 2.0 * _FLOAT_SLACK), norms, order, vectors, k,
                            min(seeds, eligible))
    # int8 scores only where the block bound reaches tau, row by row (a row read once serves every
    # query that keeps it); candidates where the int8 bound reaches tau too
    pairs = 0
    for j in range(m):
        for i in range(n):
            if bound[j, i] >= tau[j] and bound[j, i] > -np.inf:
                pairs += 1
    which = np.empty(pairs, dtype=np.int64)
    found = np.empty(pairs, dtype=np.int64)
    pairs = 0
    for i in range(n):
        for j in range(m):
            if bound[j, i] >= tau[j] and bound[j, i] > -np.inf:
                which[pairs] = j
                found[pairs] = i
                pairs += 1
    dots = np.empty(pairs, dtype=np.int32)
    for t in range(pairs):  # a loop of its own: LLVM vectorises the dot (a branch beside it stopped that)
        i, j = found[t], which[t]
        acc = np.int32(0)  # int16 products, int32 sums: exact
        for d in range(dim):
            acc += np.int16(codes[i, d]) * np.int16(p8[j, d])
        dots[t] = acc
    count = 0
    for t in range(pairs):
        i, j = found[t], which[t]
        if every[j] or (dots[t] * terms[j, 0] + terms[j, 1] * code_norms[i] + terms[j, 2] * residual_norms[i]
                        + terms[j, 3] * norms[i]) >= tau[j]:
            which[count] = j
            found[count] = i
            count += 1
    keep = np.argsort(which[:count], kind="mergesort")  # by query, positions ascending within each
    return which[:count][keep], found[:count][keep]


@numba.njit(nogil=True, cache=True, boundscheck=False)
def _query_terms(q, scale, p8, terms):  # pragma: no cover - jitted
    """The query scaled as the codes are, p = q * c = s (p8 + f): fills ``p8`` and ``terms`` (s,
    s |f|, |p|, slack) and returns |q|."""
    dim = q.size
    p = np.empty(dim, dtype=np.float64)
    peak, q_sq = 0.0, 0.0
    for d in range(dim):
        p[d] = np.float64(q[d]) * np.float64(scale[d])
        peak = max(peak, abs(p[d]))
        q_sq += np.float64(q[d]) * np.float64(q[d])
    s = peak / _LEVELS if peak > 0 else 1.0
    f_sq, p_sq = 0.0, 0.0
    for d in range(dim):
        r = min(max(np.rint(p[d] / s), -_LEVELS), _LEVELS)
        p8[d] = np.int8(r)
        f_sq += (p[d] / s - r) ** 2
        p_sq += p[d] * p[d]
    q_norm = np.sqrt(q_sq)
    terms[0], terms[1], terms[2], terms[3] = s, s * np.sqrt(f_sq), np.sqrt(p_sq), _FLOAT_SLACK * q_norm
    return q_norm


@numba.njit(nogil=True, cache=True, boundscheck=False)
def _threshold(bound, q, cap, norms, order, vectors, k, m):  # pragma: no cover - jitted
    """tau: the k-th best exact score of the m eligible items with the highest bounds (any m
    eligible items' k-th best is at most the true k-th best; the highest-bound ones make it tight).

    The items are found with a min-heap of the best m bounds in one pass in descending |v_i|,
    stopping where ``cap * |v_i|`` (>= every later item's bound) falls below the heap's least.
    """
    heap = np.empty(m, dtype=np.float64)
    at = np.empty(m, dtype=np.int64)
    size = 0
    for i in range(bound.size):
        b = bound[i]
        if size == m and cap * norms[i] < heap[0]:
            break
        if b == -np.inf or (size == m and b <= heap[0]):
            continue
        if size < m:  # sift up
            c = size
            size += 1
            while c > 0 and heap[(c - 1) // 2] > b:
                heap[c], at[c] = heap[(c - 1) // 2], at[(c - 1) // 2]
                c = (c - 1) // 2
        else:  # replace the least, sift down
            c = 0
            while True:
                child = 2 * c + 1
                if child >= m:
                    break
                if child + 1 < m and heap[child + 1] < heap[child]:
                    child += 1
                if heap[child] >= b:
                    break
                heap[c], at[c] = heap[child], at[child]
                c = child
        heap[c], at[c] = b, i
    exact = np.empty(size, dtype=np.float64)
    for s in range(size):
        exact[s] = exact_dot(vectors, order[at[s]], q)
    return np.partition(exact, size - k)[size - k]


@numba.njit(nogil=True, cache=True, boundscheck=False, fastmath={"reassoc", "contract"})
def exact_dot(vectors, row, q):  # pragma: no cover - jitted
    """<vectors[row], q> in float64, summed in any order (vectorised) but the same order for every
    row: its rounding is far below the bound's float slack, which covers the threshold being this
    close to the float32 score. Also the explanations' driver pulls (hybrid/explain.py)."""
    acc = 0.0
    for d in range(q.size):
        acc += np.float64(vectors[row, d]) * np.float64(q[d])
    return acc

