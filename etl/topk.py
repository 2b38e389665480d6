"""The project's one top-k and one cosine.

Every ranking (evaluation, a model's ``recommend`` and ``similar_items``, the tuner's candidate
pools, the recommender's similar items and popular fallback, the API's title search) goes through
``topk`` so that they all break ties the same way: equal scores go to the lower index. A result then depends only on
the scores, not on batch sizes or on how a partial sort happened to arrange tied entries.
(hybrid/screening.py ranks inside its numba kernel by the same rule; a test holds them together.)
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["topk", "unit_rows"]

Exclude = np.ndarray | sp.spmatrix | sp.sparray | None


def topk(scores: np.ndarray, k: int, exclude: Exclude = None) -> tuple[np.ndarray, np.ndarray]:
    """The k best entries of each row of ``scores``: (indices int64, scores), best first.

    ``scores``: (n,) for one ranking or (b, n) for a batch; the result is (k,) or (b, k).
    Ties go to the lower index. Entries scored -inf are never returned: a row with fewer than k
    eligible entries is padded with index -1 and score -inf. NaN scores are a ValueError.

    ``exclude`` (entries never returned; ``scores`` is not modified): a boolean mask
    broadcastable to ``scores``, an integer array of indices left out of every row, or for a
    batch a sparse (b, n) matrix whose stored entries are the indices left out of each row.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    scores = np.asarray(scores)
    if scores.ndim not in (1, 2):
        raise ValueError(f"scores must be 1-d or 2-d, got shape {scores.shape}")
    if not np.issubdtype(scores.dtype, np.floating):
        raise ValueError(f"scores must be floats, got {scores.dtype}")
    single = scores.ndim == 1
    block = scores[None, :] if single else scores
    if np.isnan(block).any():
        bad = np.flatnonzero(np.isnan(block).any(axis=1))
        raise ValueError(f"scores has NaN in rows {bad[:5].tolist()}")
    if exclude is not None:
        block = _excluded(block, exclude)
    rows, values = _topk_block(block, k)
    return (rows[0], values[0]) if single else (rows, values)


def _excluded(block: np.ndarray, exclude: np.ndarray | sp.spmatrix | sp.sparray) -> np.ndarray:
    """A copy of ``block`` with the excluded entries set to -inf."""
    b, n = block.shape
    out = block.copy()
    if sp.issparse(exclude):
        if exclude.shape != (b, n):
            raise ValueError(f"exclude has shape {exclude.shape}, expected {(b, n)}")
        coo = sp.coo_matrix(exclude)
        out[coo.row, coo.col] = -np.inf
        return out
    exclude = np.asarray(exclude)
    if exclude.dtype == bool:
        out[np.broadcast_to(exclude, out.shape)] = -np.inf
    elif np.issubdtype(exclude.dtype, np.integer) and exclude.ndim == 1:
        bad = exclude[(exclude < 0) | (exclude >= n)]
        if bad.size:
            raise ValueError(f"exclude has indices outside [0, {n}): {bad[:5].tolist()}")
        out[:, exclude] = -np.inf
    else:
        raise ValueError(f"exclude must be a boolean mask, a 1-d integer array or a sparse matrix, "
                         f"got {exclude.dtype} of shape {exclude.shape}")
    return out


def _topk_block(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    b, n = scores.shape
    rows = np.full((b, k), -1, dtype=np.int64)
    values = np.full((b, k), -np.inf, dtype=scores.dtype)
    kk = min(k, n)
    if kk == 0 or b == 0:
        return rows, values
    if kk < n:
        cols = np.argpartition(scores, n - kk, axis=1)[:, n - kk :]
    else:
        cols = np.broadcast_to(np.arange(n), (b, n)).copy()
    vals = np.take_along_axis(scores, cols, axis=1)
    kth = vals.min(axis=1)
    # argpartition picks arbitrarily among scores equal to the k-th largest; where it left some
    # out, redo those rows keeping the lowest indices among the tied ones.
    kth_col = kth[:, None]
    short = (kth > -np.inf) & ((scores == kth_col).sum(axis=1) > (vals == kth_col).sum(axis=1))
    if short.any():
        s, t = scores[short], kth_col[short]
        gt, eq = s > t, s == t
        need = kk - gt.sum(axis=1, keepdims=True)
        chosen = gt | (eq & (np.cumsum(eq, axis=1, dtype=np.int64) <= need))
        cols[short] = np.nonzero(chosen)[1].reshape(-1, kk)  # row-major: kk per row, in order
        vals[short] = np.take_along_axis(s, cols[short], axis=1)
    order = np.lexsort((cols, -vals), axis=1)
    cols = np.take_along_axis(cols, order, axis=1)
    vals = np.take_along_axis(vals, order, axis=1)
    eligible = vals > -np.inf
    rows[:, :kk] = np.where(eligible, cols, -1)
    values[:, :kk] = vals
    return rows, values


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length as float32 (all-zero rows stay zero): the cosine of two rows is
    the dot product of their unit rows."""
    v = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1)
    norms[norms == 0] = 1.0
    return v / norms[:, None]
