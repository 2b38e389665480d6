"""The one top-k (etl/topk.py): best first, ties by the lower index, in every caller."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from etl.dataset import Dataset
from etl.metrics import top_k as evaluation_top_k
from etl.topk import topk, unit_rows
from hybrid.screening import ScreenedVectors, exact_scores, ranked
from models.base import TrainData
from models.popularity import Popularity


def reference(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The rule spelled out on one row: a stable sort by descending score, -inf dropped, padded."""
    order = np.argsort(-scores, kind="stable")[:k]
    order = order[scores[order] > -np.inf]
    rows = np.full(k, -1, np.int64)
    values = np.full(k, -np.inf, scores.dtype)
    rows[: order.size], values[: order.size] = order, scores[order]
    return rows, values


def tied_scores(rng: np.random.Generator, b: int, n: int) -> np.ndarray:
    """Few distinct values (so ties straddle the k-th place), some -inf."""
    s = rng.integers(0, 4, (b, n)).astype(np.float32)
    s[rng.random((b, n)) < 0.1] = -np.inf
    return s


@pytest.mark.parametrize("k", [1, 3, 10, 49, 50, 80])
def test_batch_and_single_follow_the_rule(k: int) -> None:
    rng = np.random.default_rng(k)
    scores = tied_scores(rng, 30, 50)
    scores[0] = 1.0  # one row of a single tie
    scores[1] = -np.inf  # one row with nothing eligible
    rows, values = topk(scores, k)
    assert rows.shape == values.shape == (30, k) and rows.dtype == np.int64 and values.dtype == np.float32
    for j in range(len(scores)):
        want_rows, want_values = reference(scores[j], k)
        np.testing.assert_array_equal(rows[j], want_rows)
        np.testing.assert_array_equal(values[j], want_values)
        one_rows, one_values = topk(scores[j], k)
        np.testing.assert_array_equal(one_rows, want_rows)
        np.testing.assert_array_equal(one_values, want_values)
    assert topk(scores[0], 3)[0].tolist() == [0, 1, 2]
    assert (rows[1] == -1).all()


def test_exclusion_in_each_form_leaves_the_scores_alone() -> None:
    rng = np.random.default_rng(1)
    scores = tied_scores(rng, 4, 20)
    before = scores.copy()
    mask = rng.random(scores.shape) < 0.3
    want = topk(np.where(mask, -np.inf, scores), 6)
    for exclude in (mask, sp.csr_matrix(mask)):
        got = topk(scores, 6, exclude=exclude)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    shared = np.array([0, 3, 7])
    blocked = scores.copy()
    blocked[:, shared] = -np.inf
    np.testing.assert_array_equal(topk(scores, 6, exclude=shared)[0], topk(blocked, 6)[0])
    np.testing.assert_array_equal(topk(scores[2], 6, exclude=shared)[0], topk(blocked[2], 6)[0])
    np.testing.assert_array_equal(scores, before)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="k must be >= 1"):
        topk(np.zeros(3), 0)
    with pytest.raises(ValueError, match="NaN in rows \\[1\\]"):
        topk(np.array([[0.0, 1.0], [np.nan, 1.0]]), 1)
    with pytest.raises(ValueError, match="must be floats"):
        topk(np.arange(3), 1)
    with pytest.raises(ValueError, match=r"outside \[0, 3\): \[3\]"):
        topk(np.zeros(3), 1, exclude=np.array([3]))
    with pytest.raises(ValueError, match="exclude has shape"):
        topk(np.zeros((2, 3)), 1, exclude=sp.csr_matrix((1, 3)))


def test_unit_rows_give_cosines_and_keep_zero_rows() -> None:
    v = np.array([[3.0, 4.0], [0.0, 0.0], [-1.0, 0.0]])
    unit = unit_rows(v)
    assert unit.dtype == np.float32
    np.testing.assert_allclose(unit, [[0.6, 0.8], [0.0, 0.0], [-1.0, 0.0]])
    np.testing.assert_allclose(unit @ unit[0], [1.0, 0.0, -0.6], rtol=1e-6)


# -- every caller ranks ties the same way ------------------------------------------------------
def test_evaluation_ranks_ties_by_lower_item() -> None:
    n_items = 200
    scores = np.zeros((2, n_items), np.float32)
    scores[1, 150:] = 1.0  # 50 items tie for the top, the rest tie below them
    train = sp.csr_matrix((np.ones(2), ([0, 1], [1, 151])), shape=(2, n_items))
    got = evaluation_top_k(lambda rows: scores[rows], np.array([0, 1]), train, k=10)
    assert got[0].tolist() == [0, *range(2, 11)]
    assert got[1].tolist() == [150, *range(152, 161)]


def test_models_rank_ties_by_lower_item(tiny_dataset: Dataset) -> None:
    model = Popularity().fit(TrainData(tiny_dataset, split="train"))
    n_items = model.item_factors_.shape[0]
    model.item_factors_ = np.where(np.arange(n_items) % 3 == 0, 2.0, 1.0).astype(np.float32)[:, None]
    users = np.arange(4)
    items, scores = model.recommend(users, n=20)  # the 20th place falls among the items scored 1
    for u in users:
        row = model.item_factors_[:, 0].copy()
        row[model.seen_[u].indices] = -np.inf
        want_items, want_scores = reference(row, 20)
        np.testing.assert_array_equal(items[u], want_items)
        np.testing.assert_array_equal(scores[u], want_scores)
    # one factor per item: every cosine is 1, so similar items are the lowest other rows
    similar, cosines = model.similar_items(np.array([0, 5]), n=10)
    assert similar.tolist() == [list(range(1, 11)), [0, 1, 2, 3, 4, *range(6, 11)]]
    np.testing.assert_allclose(cosines, 1.0)


def test_the_screening_kernel_ranks_ties_as_topk_does() -> None:
    rng = np.random.default_rng(5)
    base = rng.standard_normal((60, 16)).astype(np.float32)
    vectors = np.vstack([base, base, base[:20]])  # every row tied with one or two others
    screen = ScreenedVectors(vectors)
    queries = np.vstack([base[:3], np.zeros((1, 16), np.float32)])  # the zero query ties every item
    excludes = [rng.choice(len(vectors), 10, replace=False) for _ in queries]
    rows, scores = screen.top_k(queries, 25, excludes)
    for j, q in enumerate(queries):
        s = exact_scores(vectors, np.arange(len(vectors)), q)
        want_rows, want_scores = topk(s, 25, exclude=excludes[j])
        np.testing.assert_array_equal(rows[j], want_rows)
        np.testing.assert_array_equal(scores[j], want_scores)
        cand = rng.permutation(len(vectors))[:70]
        got_rows, got_scores = ranked(vectors, q, cand, 25)
        mask = np.ones(len(vectors), bool)
        mask[cand] = False
        want_rows, want_scores = topk(s, 25, exclude=mask)
        np.testing.assert_array_equal(got_rows, want_rows)
        np.testing.assert_array_equal(got_scores, want_scores)
    assert rows[3].tolist() == np.setdiff1d(np.arange(len(vectors)), excludes[3])[:25].tolist()
