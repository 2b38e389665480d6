"""Ranking metrics of the evaluation protocol (DESIGN.md, "Evaluation protocol").

Everything runs over batches of user rows: a scorer gives a dense (batch, n_items) block at a
time, so no dense users x items matrix for all users ever exists. Stored entries of the sparse
interaction matrices are interactions (duplicates are merged, explicit zeros are not
interactions); their values are ignored.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from etl.topk import topk

__all__ = [
    "catalog_coverage",
    "cold_item_metrics",
    "evaluate",
    "intra_list_diversity",
    "ranking_metrics",
    "top_k",
]

ScoreBatch = Callable[[np.ndarray], np.ndarray]


def _binary_rows(m: sp.spmatrix | sp.sparray, rows: np.ndarray) -> sp.csr_matrix:
    """Rows of `m` as a canonical CSR matrix of ones (duplicates merged, zeros dropped)."""
    sub = sp.csr_matrix(m)[rows]
    sub.sum_duplicates()
    sub.eliminate_zeros()
    sub.data = np.ones_like(sub.data, dtype=np.float32)
    return sub


def _check_users(users: np.ndarray, n_users: int) -> np.ndarray:
    users = np.asarray(users)
    if users.ndim != 1 or not np.issubdtype(users.dtype, np.integer):
        raise ValueError(f"users must be a 1-d integer array, got shape {users.shape} {users.dtype}")
    bad = users[(users < 0) | (users >= n_users)]
    if bad.size:
        raise ValueError(f"user rows out of range [0, {n_users}): {bad[:5].tolist()}")
    return users.astype(np.int64, copy=False)


def top_k(
    score_batch: ScoreBatch,
    users: np.ndarray,
    exclude: sp.csr_matrix,
    k: int = 10,
    batch_size: int = 512,
) -> np.ndarray:
    """The k best item rows for each user row, best first, as an int64 (len(users), k) array.

    `score_batch(user_rows)` returns a dense float (len(user_rows), n_items) numpy array. Items
    stored in the user's `exclude` row (the train items), and items the scorer gave -inf, are
    never returned. Equal scores are broken by the lower item row, so the result depends only on
    the scores, not on the batch size. A user with fewer than k eligible items gets -1 padding.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n_users, n_items = exclude.shape
    users = _check_users(users, n_users)
    out = np.empty((users.size, k), dtype=np.int64)
    for start in range(0, users.size, batch_size):
        rows = users[start : start + batch_size]
        scores = score_batch(rows)
        if not isinstance(scores, np.ndarray) or scores.shape != (rows.size, n_items):
            raise ValueError(
                f"score_batch must return a numpy array of shape {(rows.size, n_items)}, "
                f"got {type(scores).__name__} {getattr(scores, 'shape', None)}"
            )
        if not np.issubdtype(scores.dtype, np.floating):
            raise ValueError(f"score_batch must return floats, got {scores.dtype}")
        if np.isnan(scores).any():
            bad = rows[np.isnan(scores).any(axis=1)]
            raise ValueError(f"score_batch returned NaN scores for user rows {bad[:5].tolist()}")
        out[start : start + rows.size] = topk(scores, k, exclude=_binary_rows(exclude, rows))[0]
    return out


def ranking_metrics(
    topk: np.ndarray, users: np.ndarray, test: sp.csr_matrix, k: int = 10
) -> dict[str, float]:
    """NDCG, Recall, Precision, MAP and hit rate at k, averaged over `users`.

    `topk[i]` ranks items for user row `users[i]`; -1 entries are misses. Gains are binary with
    a log2(rank + 1) discount; ideal DCG and the MAP denominator are both over min(|test|, k)
    (AP@k = sum of precision@rank at each hit / min(|test|, k)); Precision is hits / k. Every
    user must have at least one test item (ValueError otherwise).
    """
    topk = np.asarray(topk)
    users = _check_users(users, test.shape[0])
    if topk.ndim != 2 or topk.shape[0] != users.size or topk.shape[1] < k or k < 1:
        raise ValueError(f"topk must be ({users.size}, >= k={k}), got shape {topk.shape}")
    topk = topk[:, :k].astype(np.int64, copy=False)
    truth = _binary_rows(test, users)
    n_test = np.diff(truth.indptr)
    if (n_test == 0).any():
        bad = users[n_test == 0]
        raise ValueError(f"users without test interactions: {bad[:5].tolist()}")
    n_items = test.shape[1]
    # Canonical CSR rows are sorted, so (row, item) keys are globally sorted: look hits up by key.
    truth_keys = np.repeat(np.arange(users.size, dtype=np.int64), n_test) * n_items + truth.indices
    keys = np.arange(users.size, dtype=np.int64)[:, None] * n_items + topk
    hits = np.isin(keys, truth_keys) & (topk >= 0)

    discount = 1.0 / np.log2(np.arange(2, k + 2))
    ideal_len = np.minimum(n_test, k)
    dcg = hits @ discount
    idcg = np.cumsum(discount)[ideal_len - 1]
    n_hits = hits.sum(axis=1)
    precision_at = np.cumsum(hits, axis=1) / np.arange(1, k + 1)
    ap = (precision_at * hits).sum(axis=1) / ideal_len
    return {
        f"ndcg@{k}": float(np.mean(dcg / idcg)),
        f"recall@{k}": float(np.mean(n_hits / n_test)),
        f"precision@{k}": float(np.mean(n_hits / k)),
        f"map@{k}": float(np.mean(ap)),
        f"hit_rate@{k}": float(np.mean(n_hits > 0)),
    }


def cold_item_metrics(topk: np.ndarray, users: np.ndarray, test: sp.csr_matrix, cold: np.ndarray,
                      k: int = 10) -> dict[str, float]:
    """How the ranking treats cold items (items without a train interaction, ``cold`` a boolean mask
    over items).

    ``cold_recall@k``: the share of the test interactions on cold items whose item is in that user's
    top-k (nan when the test split has none); ``cold_share@k``: the share of the top-k slots given to
    cold items (-1 entries are not slots).
    """
    topk = np.asarray(topk)[:, :k].astype(np.int64, copy=False)
    users = _check_users(users, test.shape[0])
    cold = np.asarray(cold, dtype=bool)
    if cold.shape != (test.shape[1],):
        raise ValueError(f"cold must be a mask over {test.shape[1]} items, got shape {cold.shape}")
    truth = _binary_rows(test, users)
    is_cold = cold[truth.indices]
    n_items = test.shape[1]
    rows = np.repeat(np.arange(users.size, dtype=np.int64), np.diff(truth.indptr))
    truth_keys = rows[is_cold] * n_items + truth.indices[is_cold]
    valid = topk >= 0
    keys = (np.arange(users.size, dtype=np.int64)[:, None] * n_items + topk)[valid]
    hits = np.isin(truth_keys, keys).sum()
    slots = int(valid.sum())
    return {
        f"cold_recall@{k}": float(hits / truth_keys.size) if truth_keys.size else float("nan"),
        f"cold_share@{k}": float(cold[topk[valid]].sum() / slots) if slots else float("nan"),
    }


def catalog_coverage(topk: np.ndarray, n_items: int) -> float:
    """Share of the n_items catalog that appears in at least one user's top-k (-1 ignored)."""
    if n_items < 1:
        raise ValueError(f"n_items must be >= 1, got {n_items}")
    items = np.asarray(topk).ravel()
    return float(np.unique(items[items >= 0]).size / n_items)


def intra_list_diversity(
    topk: np.ndarray, item_features: sp.csr_matrix | np.ndarray
) -> float:
    """Mean over users of the mean pairwise (1 - cosine similarity) of their recommended items.

    Items with all-zero feature vectors are dissimilar (1) to everything. -1 entries are ignored;
    users with fewer than two recommended items are left out (nan if nobody has two).
    """
    topk = np.asarray(topk)
    feats = sp.csr_matrix(item_features, dtype=np.float64)
    norms = np.sqrt(np.asarray(feats.multiply(feats).sum(axis=1)).ravel())
    unit = sp.diags(np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)) @ feats
    valid = topk >= 0
    m = valid.sum(axis=1)
    # Sum over pairs i<j of x_i.x_j = (|sum_i x_i|^2 - sum_i |x_i|^2) / 2 for each user's list.
    rows = np.repeat(np.arange(topk.shape[0]), valid.sum(axis=1))
    pick = sp.csr_matrix(
        (np.ones(rows.size), (rows, topk[valid])), shape=(topk.shape[0], feats.shape[0])
    )
    summed = sp.csr_matrix(pick @ unit)
    sq_norm_sum = np.asarray(summed.multiply(summed).sum(axis=1)).ravel()
    self_sim = np.asarray(pick @ (norms > 0).astype(np.float64)).ravel()
    pairs = m * (m - 1) / 2
    keep = m >= 2
    if not keep.any():
        return float("nan")
    mean_sim = (sq_norm_sum[keep] - self_sim[keep]) / 2 / pairs[keep]
    return float(np.mean(1.0 - mean_sim))


def evaluate(
    score_batch: ScoreBatch,
    train: sp.csr_matrix,
    test: sp.csr_matrix,
    k: int = 10,
    item_features: sp.csr_matrix | np.ndarray | None = None,
    batch_size: int = 512,
) -> dict[str, float]:
    """All protocol metrics at k over the users with a test interaction, train items excluded.

    Keys: ndcg@k, recall@k, precision@k, map@k, hit_rate@k, coverage@k, cold_recall@k and
    cold_share@k (items without a train interaction: ``cold_item_metrics``), diversity@k (only with
    item_features), and users (how many were evaluated).
    """
    if train.shape != test.shape:
        raise ValueError(f"train {train.shape} and test {test.shape} shapes differ")
    if item_features is not None and item_features.shape[0] != train.shape[1]:
        raise ValueError(
            f"item_features has {item_features.shape[0]} rows, expected {train.shape[1]} items"
        )
    truth = _binary_rows(test, np.arange(test.shape[0]))
    users = np.flatnonzero(np.diff(truth.indptr) > 0)
    recs = top_k(score_batch, users, train, k=k, batch_size=batch_size)
    result = ranking_metrics(recs, users, truth, k=k)
    result[f"coverage@{k}"] = catalog_coverage(recs, train.shape[1])
    cold = np.diff(sp.csc_matrix(train).indptr) == 0
    result.update(cold_item_metrics(recs, users, truth, cold, k=k))
    if item_features is not None:
        result[f"diversity@{k}"] = intra_list_diversity(recs, item_features)
    result["users"] = int(users.size)
    return result
