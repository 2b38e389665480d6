"""The graph space: per-signal balanced truncation of the fused vectors (hybrid/graph_space.py)."""

from __future__ import annotations

import numpy as np
import pytest

from hybrid.graph_space import GraphSpace
from hybrid.index import FusedIndex


def _signals(seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Two signals: 'wide' of 48 columns whose user side decays (most columns carry little score),
    'low' of 20 columns that are combinations of 3 (dependent columns), and a 1-column one."""
    rng = np.random.default_rng(seed)
    items = {
        "wide": rng.normal(size=(2000, 48)).astype(np.float32),
        "low": (rng.normal(size=(2000, 3)) @ rng.normal(size=(3, 20))).astype(np.float32),
        "one": rng.gamma(2.0, size=(2000, 1)).astype(np.float32),
    }
    users = {
        "wide": (rng.normal(size=(1500, 48)) * np.geomspace(4.0, 0.01, 48)).astype(np.float32),
        "low": rng.normal(size=(1500, 20)).astype(np.float32),
        "one": np.ones((1500, 1), np.float32),
    }
    return items, users


def _fused(parts: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate(list(parts.values()), axis=1)


def test_every_direction_gives_the_fused_scores_back():
    items, users = _signals()
    space = GraphSpace.fit(items, users, 1.0)
    assert space.widths == {"wide": 48, "low": 3, "one": 1}  # dependent columns hold no direction
    exact = _fused(users) @ _fused(items).T
    mapped = space.queries(_fused(users)) @ space.items(_fused(items)).T
    np.testing.assert_allclose(mapped, exact, atol=2e-4 * np.abs(exact).max())


@pytest.mark.parametrize("share", [0.9, 0.99])
def test_a_share_keeps_that_share_of_each_signals_mean_squared_score(share):
    """The dropped singular values' energy is the mean squared score error over the sample it was
    fit on (the truncation's guarantee), so each signal loses at most 1 - share of it."""
    items, users = _signals()
    space = GraphSpace.fit(items, users, share)
    assert space.widths["wide"] < 48
    row = col = 0
    for s in items:
        dim, width = items[s].shape[1], space.widths[s]
        item_map = space.item_map[row : row + dim, col : col + width]
        query_map = space.query_map[row : row + dim, col : col + width]
        row, col = row + dim, col + width
        exact = users[s] @ items[s].T
        mapped = (users[s] @ query_map) @ (items[s] @ item_map).T
        lost = float(np.mean((mapped - exact) ** 2) / np.mean(exact**2))
        assert lost <= 1 - share + 1e-4, (s, lost)


def test_blend_weights_scale_the_mapped_blocks():
    """A query [w_s u_s] maps to [w_s (u_s mapped)]: one graph answers every blend."""
    items, users = _signals()
    space = GraphSpace.fit(items, users, 0.95)
    weights = {"wide": 0.3, "low": 2.0, "one": 0.0}
    query = _fused({s: users[s][:5] * w for s, w in weights.items()})
    col = 0
    unweighted = space.queries(_fused(users)[:5])
    expected = []
    for s, w in weights.items():
        expected.append(unweighted[:, col : col + space.widths[s]] * w)
        col += space.widths[s]
    np.testing.assert_allclose(space.queries(query), np.concatenate(expected, axis=1), rtol=1e-5, atol=1e-6)


def test_an_index_in_a_graph_space_ranks_exactly_from_the_fused_vectors(tmp_path):
    items, users = _signals()
    vectors, queries = _fused(items), _fused(users)[:200]
    space = GraphSpace.fit(items, users, 0.99)
    index = FusedIndex.build(vectors, threads=1, space=space)
    assert (index.dim, index.graph.ndim) == (vectors.shape[1], space.width)
    rows, scores = index.search(queries, 10)
    exact = queries @ vectors.T
    ref = np.sort(exact, axis=1)[:, ::-1][:, :10]
    same = np.mean([np.allclose(scores[j], ref[j], rtol=1e-5, atol=1e-5) for j in range(len(queries))])
    assert same >= 0.99, same
    np.testing.assert_allclose(scores, np.take_along_axis(exact, rows, 1), rtol=1e-5, atol=1e-5)  # exact scores
    index.save(tmp_path / "index.usearch")
    space.save(tmp_path / "space.npz")
    loaded = FusedIndex.load(tmp_path / "index.usearch", vectors, space=GraphSpace.load(tmp_path / "space.npz"))
    np.testing.assert_array_equal(loaded.search(queries, 10)[0], rows)
    with pytest.raises(ValueError, match="graph holds"):
        FusedIndex.load(tmp_path / "index.usearch", vectors)  # the graph's width is not the fused one


def test_bad_spaces_fail_with_what_was_wrong(tmp_path):
    items, users = _signals()
    with pytest.raises(ValueError, match="share must be in"):
        GraphSpace.fit(items, users, 0.0)
    with pytest.raises(ValueError, match="one width"):
        GraphSpace.fit({"a": np.ones((5, 3))}, {"a": np.ones((5, 4))}, 0.9)
    space = GraphSpace.fit(items, users, 0.9)
    with pytest.raises(ValueError, match="maps 69 columns"):
        space.items(np.ones((3, 10), np.float32))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable graph space"):
        GraphSpace.load(tmp_path / "junk.npz")
    bad = space.item_map.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        GraphSpace(bad, space.query_map, space.widths, space.dims, space.kept, space.gains)
    with pytest.raises(ValueError, match="kept shares"):
        GraphSpace(space.item_map, space.query_map, space.widths, space.dims, dict(space.kept, wide=1.5), space.gains)
    with pytest.raises(ValueError, match="must be one list"):
        GraphSpace(space.item_map, space.query_map, space.widths, {"wide": 48}, space.kept, space.gains)
    with pytest.raises(ValueError, match="no user vectors or share"):
        GraphSpace.fit(items, users, {"wide": 0.9})
    nan_users = dict(users, low=np.full_like(users["low"], np.nan))
    with pytest.raises(ValueError, match="low: item or user vectors have non-finite values"):
        GraphSpace.fit(items, nan_users, 0.9)
    vectors = _fused(items)
    index = FusedIndex.build(vectors, threads=1, space=space)
    other = GraphSpace.fit(items, users, 1.0)
    with pytest.raises(ValueError, match="graph space is"):
        FusedIndex(index.graph, vectors, space=other)


def test_weighted_shares_follow_the_tuned_weights():
    from hybrid.graph_space import weighted_shares

    shares = weighted_shares({"lead": 2.0, "half": 1.0, "tiny": 0.01, "off": 0.0}, 0.999, 0.8)
    assert shares["lead"] == pytest.approx(0.999)
    assert shares["half"] == pytest.approx(1 - 0.001 / 0.25)  # alike errors in the blend's units
    assert shares["tiny"] == shares["off"] == 0.8  # the floor
    with pytest.raises(ValueError, match="positive one"):
        weighted_shares({"a": 0.0}, 0.999, 0.8)
    with pytest.raises(ValueError, match="share and floor"):
        weighted_shares({"a": 1.0}, 0.999, 0.0)


def test_a_signal_that_scores_nothing_keeps_one_zero_column():
    items, users = _signals()
    users = dict(users, low=np.zeros_like(users["low"]))
    space = GraphSpace.fit(items, users, 0.99)
    assert space.widths["low"] == 1 and space.gains["low"] == 0.0
    exact = _fused(users) @ _fused(items).T
    mapped = space.queries(_fused(users)) @ space.items(_fused(items)).T
    assert np.mean((mapped - exact) ** 2) <= 0.011 * np.mean(exact**2)


def test_queries_leaning_on_what_the_space_cut_are_ranked_exactly():
    """A blend like the one the space was cut for goes through the graph; one leaning on a signal
    held at the floor loses more than graph_max_loss of its score there and is ranked exactly."""
    items, users = _signals()
    space = GraphSpace.fit(items, users, {"wide": 0.8, "low": 0.999, "one": 1.0})  # 'wide' held at the floor
    tuned = _fused({"wide": users["wide"][:50] * 0.01, "low": users["low"][:50], "one": users["one"][:50]})
    leaning = _fused({"wide": users["wide"][:50], "low": users["low"][:50] * 0.01, "one": users["one"][:50] * 0.0})
    assert space.loss(tuned).max() < 0.05 < space.loss(leaning).min()
    assert space.loss(leaning).max() <= 1 - space.kept["wide"] + 1e-3
    vectors = _fused(items)
    index = FusedIndex.build(vectors, threads=1, space=space)
    index.search(tuned, 10)
    assert index.stats["hnsw"] == 50 and index.stats["exact"] == 0
    rows, _ = index.search(leaning, 10)
    assert index.stats["exact"] == 50
    exact = np.argsort(-(leaning @ vectors.T), axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(np.sort(rows, axis=1), np.sort(exact, axis=1))
