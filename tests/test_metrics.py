"""Tests of etl.metrics: hand-computed values, exclusion, padding, batching, real data."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from etl.metrics import (
    catalog_coverage,
    cold_item_metrics,
    evaluate,
    intra_list_diversity,
    ranking_metrics,
    top_k,
)

DATA = Path(__file__).resolve().parents[2] / "shared/data/ml-latest-small"


def csr(rows: list[list[int]], n_items: int) -> sp.csr_matrix:
    """A binary CSR matrix with one row per list of item rows."""
    r = [u for u, items in enumerate(rows) for _ in items]
    c = [i for items in rows for i in items]
    return sp.csr_matrix((np.ones(len(c)), (r, c)), shape=(len(rows), n_items))


def fixed_scores(scores: np.ndarray):
    """A score_batch that looks rows up in a fixed (users, items) array."""
    return lambda rows: scores[rows]


def brute_top_k(scores: np.ndarray, exclude: sp.csr_matrix, k: int) -> np.ndarray:
    """Reference: sort each user's eligible items by (-score, item row) in plain Python."""
    out = np.full((scores.shape[0], k), -1, dtype=np.int64)
    for u in range(scores.shape[0]):
        seen = set(exclude[u].indices.tolist())
        eligible = [i for i in range(scores.shape[1]) if i not in seen and scores[u, i] > -np.inf]
        ranked = sorted(eligible, key=lambda i: (-scores[u, i], i))[:k]
        out[u, : len(ranked)] = ranked
    return out


# --- ranking_metrics: hand-computed -------------------------------------------------------------

def test_ranking_metrics_hand_computed() -> None:
    k = 3
    test = csr([[5, 3, 4], [4], [2, 5], [0, 1, 2, 3, 4]], n_items=6)
    users = np.arange(4)
    topk = np.array(
        [
            [2, 5, 3],  # hits at ranks 2 and 3, |test| = 3
            [4, 0, -1],  # hit at rank 1, |test| = 1; -1 must not match user 0's item 5
            [1, 3, 0],  # no hit
            [0, 5, 2],  # hits at ranks 1 and 3, |test| = 5 > k
        ]
    )
    d1, d2, d3 = 1 / math.log2(2), 1 / math.log2(3), 1 / math.log2(4)  # 1, 0.6309..., 0.5
    ndcg = [
        (d2 + d3) / (d1 + d2 + d3),  # ideal over min(3, 3) = 3 ranks
        d1 / d1,  # ideal over min(1, 3) = 1 rank
        0.0,
        (d1 + d3) / (d1 + d2 + d3),  # ideal over min(5, 3) = 3 ranks
    ]
    recall = [2 / 3, 1 / 1, 0 / 2, 2 / 5]
    precision = [2 / 3, 1 / 3, 0 / 3, 2 / 3]
    ap = [
        (1 / 2 + 2 / 3) / 3,  # precision at each hit rank, over min(|test|, k)
        (1 / 1) / 1,
        0.0,
        (1 / 1 + 2 / 3) / 3,
    ]
    hit = [1, 1, 0, 1]

    got = ranking_metrics(topk, users, test, k=k)

    assert set(got) == {"ndcg@3", "recall@3", "precision@3", "map@3", "hit_rate@3"}
    assert got["ndcg@3"] == pytest.approx(np.mean(ndcg), abs=1e-9)
    assert got["recall@3"] == pytest.approx(np.mean(recall), abs=1e-9)
    assert got["precision@3"] == pytest.approx(np.mean(precision), abs=1e-9)
    assert got["map@3"] == pytest.approx(np.mean(ap), abs=1e-9)
    assert got["hit_rate@3"] == pytest.approx(np.mean(hit), abs=1e-9)


def test_ranking_metrics_subset_of_users_and_truncation() -> None:
    test = csr([[1], [], [0, 2]], n_items=3)
    topk = np.array([[2, 0, 1], [0, 2, 1]])  # users 2 and 0; k=2 keeps the first two columns
    got = ranking_metrics(topk, np.array([2, 0]), test, k=2)
    # user 2: items 0 and 2 at ranks 1-2, all hits -> 1; user 0: item 1 not in top 2 -> 0.
    assert got["ndcg@2"] == pytest.approx(0.5, abs=1e-9)
    assert got["recall@2"] == pytest.approx(0.5, abs=1e-9)
    assert got["precision@2"] == pytest.approx(0.5, abs=1e-9)


def test_ranking_metrics_rejects_users_without_test_items() -> None:
    test = csr([[1], []], n_items=3)
    with pytest.raises(ValueError, match=r"without test interactions: \[1\]"):
        ranking_metrics(np.array([[1], [0]]), np.array([0, 1]), test, k=1)


def test_ranking_metrics_rejects_short_topk() -> None:
    with pytest.raises(ValueError, match="topk must be"):
        ranking_metrics(np.array([[1, 2]]), np.array([0]), csr([[1]], 3), k=3)


# --- top_k --------------------------------------------------------------------------------------

def test_top_k_tie_break_exclusion_and_padding() -> None:
    scores = np.array(
        [
            [1, 3, 3, 2, 3, 0],  # tie at 3 among items 1, 2, 4; item 2 excluded
            [5, 1, 1, 1, 1, 1],  # five-way tie at the boundary: lowest rows win
            [9, 8, 7, 6, 5, -np.inf],  # four train items, item 5 scored -inf: one eligible
        ],
        dtype=np.float32,
    )
    exclude = csr([[2], [], [0, 1, 2, 3]], n_items=6)
    got = top_k(fixed_scores(scores), np.arange(3), exclude, k=3)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, [[1, 4, 3], [0, 1, 2], [4, -1, -1]])


def test_top_k_k_larger_than_catalog() -> None:
    scores = np.array([[0.1, 0.3, 0.2]], dtype=np.float32)
    got = top_k(fixed_scores(scores), np.array([0]), csr([[1]], 3), k=5)
    np.testing.assert_array_equal(got, [[2, 0, -1, -1, -1]])


def test_top_k_matches_brute_force_and_never_returns_excluded() -> None:
    rng = np.random.default_rng(7)
    n_users, n_items, k = 40, 25, 10
    # Few distinct values so ties are everywhere; some users have almost every item in train.
    scores = rng.integers(0, 4, size=(n_users, n_items)).astype(np.float32)
    density = rng.uniform(0, 0.95, size=(n_users, 1))
    exclude = sp.csr_matrix((rng.uniform(size=(n_users, n_items)) < density).astype(np.float32))
    users = rng.permutation(n_users)

    got = top_k(fixed_scores(scores), users, exclude, k=k, batch_size=7)

    np.testing.assert_array_equal(got, brute_top_k(scores[users], exclude[users], k))
    for row, u in zip(got, users):
        assert not set(row[row >= 0].tolist()) & set(exclude[u].indices.tolist())
    assert (got == -1).any()  # the dense-train users really exercised the padding


def test_top_k_does_not_mutate_scorer_output() -> None:
    scores = np.ones((2, 4), dtype=np.float32)
    top_k(fixed_scores(scores), np.array([0, 1]), csr([[0], [1]], 4), k=2)
    assert np.isfinite(scores).all()


@pytest.mark.parametrize(
    ("scorer", "match"),
    [
        (lambda rows: np.full((rows.size, 4), np.nan, dtype=np.float32), "NaN"),
        (lambda rows: np.zeros((rows.size, 3), dtype=np.float32), "shape"),
        (lambda rows: np.zeros((rows.size, 4), dtype=np.int64), "floats"),
    ],
)
def test_top_k_rejects_bad_scores(scorer, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        top_k(scorer, np.array([0]), csr([[0]], 4), k=2)


def test_top_k_rejects_out_of_range_users() -> None:
    with pytest.raises(ValueError, match=r"out of range.*\[3\]"):
        top_k(lambda rows: np.zeros((rows.size, 2)), np.array([0, 3]), csr([[0], [1]], 2))


# --- coverage and diversity ---------------------------------------------------------------------

def test_catalog_coverage() -> None:
    topk = np.array([[0, 1], [1, -1], [3, 0]])
    assert catalog_coverage(topk, n_items=8) == pytest.approx(3 / 8)


def test_intra_list_diversity_hand_computed() -> None:
    features = np.array([[1, 0], [1, 0], [0, 1], [0, 0], [1, 1]], dtype=np.float64)
    topk = np.array(
        [
            [0, 1, 2],  # pairs: (0,1) cos 1 -> 0, (0,2) -> 1, (1,2) -> 1: mean 2/3
            [3, 4, -1],  # item 3 is a zero vector: dissimilar, 1
            [4, -1, -1],  # a single item has no pairs: left out
            [0, 4, -1],  # cos 45 degrees: 1 - 1/sqrt(2)
        ]
    )
    expected = (2 / 3 + 1 + (1 - 1 / math.sqrt(2))) / 3
    assert intra_list_diversity(topk, features) == pytest.approx(expected, abs=1e-12)
    assert intra_list_diversity(topk, sp.csr_matrix(features)) == pytest.approx(expected, abs=1e-12)
    assert math.isnan(intra_list_diversity(np.array([[4, -1]]), features))


# --- evaluate -----------------------------------------------------------------------------------

def _toy(seed: int = 3):
    rng = np.random.default_rng(seed)
    n_users, n_items = 30, 20
    inter = rng.uniform(size=(n_users, n_items)) < 0.3
    in_test = rng.uniform(size=inter.shape) < 0.3
    in_test[0] = False  # a user without test interactions must be skipped
    train = sp.csr_matrix((inter & ~in_test).astype(np.float32))
    test = sp.csr_matrix((inter & in_test).astype(np.float32))
    scores = rng.integers(0, 5, size=(n_users, n_items)).astype(np.float32)
    features = sp.csr_matrix(rng.integers(0, 2, size=(n_items, 4)).astype(np.float32))
    return train, test, scores, features


def test_evaluate_batch_size_does_not_change_results() -> None:
    train, test, scores, features = _toy()
    small = evaluate(fixed_scores(scores), train, test, item_features=features, batch_size=1)
    large = evaluate(fixed_scores(scores), train, test, item_features=features, batch_size=1000)
    assert small.keys() == large.keys() and all(np.isclose(small[k], large[k], equal_nan=True) for k in small)
    assert set(small) == {
        "ndcg@10", "recall@10", "precision@10", "map@10", "hit_rate@10",
        "coverage@10", "cold_recall@10", "cold_share@10", "diversity@10", "users",
    }


def test_evaluate_agrees_with_its_parts() -> None:
    train, test, scores, _ = _toy()
    users = np.flatnonzero(np.diff(test.indptr))
    assert 0 not in users
    recs = top_k(fixed_scores(scores), users, train, k=5)
    expected = ranking_metrics(recs, users, test, k=5)
    expected["coverage@5"] = catalog_coverage(recs, test.shape[1])
    expected.update(cold_item_metrics(recs, users, test, np.diff(train.tocsc().indptr) == 0, k=5))
    expected["users"] = users.size
    got = evaluate(fixed_scores(scores), train, test, k=5)
    assert got.keys() == expected.keys()  # no diversity key
    assert all(np.isclose(got[key], expected[key], equal_nan=True) for key in got)


def test_cold_item_metrics_by_hand() -> None:
    # 5 items; items 3 and 4 have no train interaction (cold)
    test = csr([[3, 1], [4], [0]], 5)
    cold = np.array([False, False, False, True, True])
    topk = np.array([[3, 0, 2], [1, 2, -1], [0, 4, 3]])
    got = cold_item_metrics(topk, np.arange(3), test, cold, k=3)
    # cold test interactions: (0, 3) hit, (1, 4) missed -> 1/2; cold slots: 3, 4, 3 of 8 -> 3/8
    assert got == {"cold_recall@3": 0.5, "cold_share@3": 3 / 8}
    assert np.isnan(cold_item_metrics(topk, np.arange(3), csr([[0], [1], [2]], 5), cold, k=3)["cold_recall@3"])
    with pytest.raises(ValueError, match="mask over 5 items"):
        cold_item_metrics(topk, np.arange(3), test, cold[:4], k=3)


def test_evaluate_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        evaluate(lambda rows: np.zeros((rows.size, 3)), csr([[0]], 3), csr([[0]], 4))


# --- real data ----------------------------------------------------------------------------------

@pytest.mark.realdata
def test_popularity_reproduces_reference_figures() -> None:
    """Popularity on ml-latest-small with the protocol split gives DESIGN.md's figures."""
    if not (DATA / "ratings.csv").exists():
        pytest.skip(f"ml-latest-small not found at {DATA}")
    import pandas as pd

    ratings = pd.read_csv(DATA / "ratings.csv").sort_values(
        ["userId", "timestamp", "movieId"], kind="stable"
    )
    user_ids, u = np.unique(ratings["userId"].to_numpy(), return_inverse=True)
    item_ids, i = np.unique(ratings["movieId"].to_numpy(), return_inverse=True)
    per_user = ratings.groupby("userId")["userId"].transform("size").to_numpy()
    position = ratings.groupby("userId").cumcount().to_numpy()
    n_test = np.where(per_user >= 5, np.ceil(0.2 * per_user).astype(np.int64), 0)
    is_test = position >= per_user - n_test
    shape = (user_ids.size, item_ids.size)
    train = sp.csr_matrix((np.ones((~is_test).sum()), (u[~is_test], i[~is_test])), shape=shape)
    test = sp.csr_matrix((np.ones(is_test.sum()), (u[is_test], i[is_test])), shape=shape)
    assert (shape, train.nnz, test.nnz) == ((610, 9724), 80419, 20417)

    popularity = np.diff(train.tocsc().indptr).astype(np.float32)
    got = evaluate(lambda rows: np.broadcast_to(popularity, (rows.size, shape[1])), train, test)

    assert got["users"] == 610
    assert got["ndcg@10"] == pytest.approx(0.0885, abs=0.002)
    assert got["recall@10"] == pytest.approx(0.0388, abs=0.0005)
