"""The int8 screen of exact searches: its candidates always hold the exact top-k (ties included)."""

from __future__ import annotations

import numpy as np
import pytest

from hybrid.screening import ScreenedVectors, exact_scores, ranked


def brute_top(vectors: np.ndarray, q: np.ndarray, k: int, blocked: np.ndarray | None) -> set[int]:
    """The exact top-k rows, every row tied with the k-th score included."""
    s = vectors @ q
    if blocked is not None:
        s = np.where(blocked, -np.inf, s)
    eligible = np.isfinite(s)
    if eligible.sum() <= k:
        return set(np.flatnonzero(eligible).tolist())
    kth = np.sort(s[eligible])[-k]
    return set(np.flatnonzero(s >= kth).tolist())


def one(screen: ScreenedVectors, q: np.ndarray, k: int, blocked: np.ndarray | None = None) -> np.ndarray:
    """The candidates of one query, ``blocked`` rows excluded."""
    exclude = None if blocked is None else [np.flatnonzero(blocked)]
    return screen.candidates(q[None, :], k, exclude)[0]


def fused_like(rng: np.random.Generator, n: int = 3000) -> np.ndarray:
    """Blocks of very different magnitudes (as signals are fused), popularity-like norms."""
    blocks = [rng.standard_normal((n, 64)) * 4.0, rng.standard_normal((n, 16)) * 0.05,
              rng.exponential(1.0, (n, 1)), rng.standard_normal((n, 128)) * 50.0]
    v = np.hstack(blocks) * rng.lognormal(0, 0.5, (n, 1))
    return v.astype(np.float32)


@pytest.mark.parametrize("seed", range(5))
def test_candidates_hold_the_exact_top_k(seed):
    rng = np.random.default_rng(seed)
    v = fused_like(rng)
    screen = ScreenedVectors(v)
    for trial in range(40):
        q = (rng.standard_normal(v.shape[1]) * rng.choice([0.0, 1.0, 0.01], v.shape[1], p=[0.2, 0.7, 0.1])).astype(np.float32)
        k = int(rng.choice([1, 10, 100]))
        blocked = rng.random(len(v)) < rng.choice([0.0, 0.3, 0.99]) if trial % 2 else None
        cand = one(screen, q, k, blocked)
        assert set(cand.tolist()) >= brute_top(v, q, k, blocked)
        assert np.all(np.diff(cand) > 0)
        if blocked is not None:
            assert not blocked[cand].any()
    # the screen does narrow the scan: far fewer candidates than items for a typical query
    q = rng.standard_normal(v.shape[1]).astype(np.float32)
    assert len(one(screen, q, 10)) < len(v) // 10


def test_items_along_the_query_where_the_block_bound_is_tight():
    """Cauchy-Schwarz per coordinate slice is an equality for an item whose every slice points
    along the query's: such items sit exactly on their bound, and the best of them must survive."""
    rng = np.random.default_rng(7)
    q = rng.standard_normal(256).astype(np.float32)
    along = np.outer(rng.uniform(0.5, 2.0, 20), q).astype(np.float32)  # exact score = its bound
    longer = rng.standard_normal((30, len(q))).astype(np.float32)
    longer *= 3 * np.linalg.norm(along, axis=1).max() / np.linalg.norm(longer, axis=1, keepdims=True)
    vectors = np.vstack([longer, along])  # longer but unaligned items: higher bounds, lower scores
    screen = ScreenedVectors(vectors)  # 50 items: all of them seed the threshold (tau is exact)
    for k in (1, 3, 10):
        cand = one(screen, q, k)
        assert set(cand.tolist()) >= brute_top(vectors, q, k, None)
        assert len(cand) < len(vectors) // 2


def test_ties_duplicates_and_degenerate_queries():
    rng = np.random.default_rng(7)
    base = fused_like(rng, 200)
    v = np.vstack([base, base[:50], base[:50]])  # every one of the first 50 rows three times
    screen = ScreenedVectors(v)
    q = base[3].copy()
    cand = set(one(screen, q, 10).tolist())
    assert cand >= brute_top(v, q, 10, None)
    # a zero query ties every item: all are candidates
    assert len(one(screen, np.zeros(v.shape[1], np.float32), 5)) == len(v)
    # k at or above the eligible count: all eligible items, nothing blocked
    blocked = np.ones(len(v), bool)
    blocked[[4, 9, 11]] = False
    assert one(screen, q, 3, blocked).tolist() == [4, 9, 11]
    assert one(screen, q, 10, np.ones(len(v), bool)).tolist() == []


def test_a_batch_answers_as_its_queries_one_by_one():
    rng = np.random.default_rng(11)
    v = fused_like(rng, 2000)
    screen = ScreenedVectors(v)
    queries = rng.standard_normal((9, v.shape[1])).astype(np.float32)
    queries[3] = 0.0  # ties every item
    excludes = [rng.choice(len(v), size=int(rng.integers(0, 300)), replace=True) for _ in queries]
    excludes[5] = np.arange(len(v) - 4)  # 4 items left: all of them, for k=10
    allowed = rng.random(len(v)) < 0.7
    for k in (1, 10):
        for mask in (None, allowed):
            batch = screen.candidates(queries, k, excludes, mask)
            for q, ex, cand in zip(queries, excludes, batch, strict=True):
                blocked = np.zeros(len(v), bool)
                blocked[ex] = True
                if mask is not None:
                    blocked |= ~mask
                alone = screen.candidates(q[None, :], k, [ex], mask)[0]
                np.testing.assert_array_equal(cand, alone)
                assert set(cand.tolist()) >= brute_top(v, q, k, blocked)
                assert not blocked[cand].any()
    assert screen.candidates(queries[:0], 10) == []
    with pytest.raises(ValueError, match="entries for 9 queries"):
        screen.candidates(queries, 10, excludes[:2])
    with pytest.raises(ValueError, match=r"outside \[0, 2000\): \[2000\]"):
        screen.top_k(queries[:1], 10, [np.array([3, 2000])])
    with pytest.raises(ValueError, match="allowed mask has shape"):
        screen.top_k(queries[:1], 10, None, allowed[:10])


def test_top_k_is_the_exact_ranking_ties_by_lower_row():
    rng = np.random.default_rng(13)
    base = fused_like(rng, 600)
    v = np.vstack([base, base[:40]])  # rows 600-639 tie rows 0-39
    screen = ScreenedVectors(v)
    queries = np.vstack([base[:5], rng.standard_normal((4, v.shape[1])).astype(np.float32)])
    excludes = [rng.choice(len(v), 30) for _ in queries]
    excludes[2] = np.arange(len(v) - 3)  # 3 items left for k=10: padded
    rows, scores = screen.top_k(queries, 10, excludes)
    for j, q in enumerate(queries):
        s = exact_scores(v, np.arange(len(v)), q).astype(np.float64)
        s[excludes[j]] = -np.inf
        order = np.lexsort((np.arange(len(v)), -s))[:10]
        order = order[np.isfinite(s[order])]
        np.testing.assert_array_equal(rows[j][: len(order)], order)
        np.testing.assert_array_equal(scores[j][: len(order)], s[order].astype(np.float32))
        assert (rows[j][len(order):] == -1).all() and np.isneginf(scores[j][len(order):]).all()
    # ranked: the same order over given rows, and the padding
    got_rows, got_scores = ranked(v, queries[0], np.array([639, 600, 5, 0]), 6)  # 0 and 600 tie
    assert sorted(got_rows[:4].tolist()) == [0, 5, 600, 639] and got_scores[0] > -np.inf
    assert got_rows.tolist().index(0) < got_rows.tolist().index(600)
    assert got_rows.tolist()[4:] == [-1, -1] and np.isneginf(got_scores[4:]).all()
    pairs = list(zip(got_rows[:4].tolist(), got_scores[:4].tolist(), strict=True))
    assert pairs == sorted(pairs, key=lambda rs: (-rs[1], rs[0])), "best first, ties by lower row"
    assert ranked(v, queries[0], np.zeros(0, np.int64), 3)[0].tolist() == [-1, -1, -1]


def test_zero_columns_and_a_single_item():
    v = np.zeros((1, 8), np.float32)
    v[0, 2] = 3.0
    screen = ScreenedVectors(v)
    assert one(screen, np.ones(8, np.float32), 1).tolist() == [0]
    assert screen.codes.dtype == np.int8 and np.abs(screen.codes).max() <= 127


def test_memory_mapped_vectors(tmp_path):
    rng = np.random.default_rng(3)
    v = fused_like(rng, 500)
    np.save(tmp_path / "v.npy", v)
    mapped = np.load(tmp_path / "v.npy", mmap_mode="r")
    screen = ScreenedVectors(mapped, block_rows=64)
    np.testing.assert_array_equal(screen.codes, ScreenedVectors(v).codes)
    q = v[17]
    assert set(one(screen, q, 10).tolist()) >= brute_top(v, q, 10, None)


def test_too_many_dimensions_is_refused():
    with pytest.raises(ValueError, match="at most"):
        ScreenedVectors(np.zeros((1, 100_001), np.float32))
