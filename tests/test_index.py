"""The fused usearch index: HNSW top-k vs brute force, exact filters, persistence."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from usearch.index import Index

from hybrid.fusion import Fusion
from hybrid.index import GRAPH_DTYPE, FusedIndex, IndexConfig, ItemCatalog, ItemFilter
from hybrid.item_table import ItemTable
from models.base import FactorModel, TrainData, TrainingOptions, register

N_ITEMS = 5000
N_USERS = 300
DIMS = {"als": 64, "content": 32, "lightgcn": 32, "popularity": 1}  # 129 fused dims
WEIGHTS = [
    {"als": 1.0, "content": 0.3, "lightgcn": 0.8, "popularity": 0.2},
    {"als": 1.0},
    {"content": 1.0, "popularity": 0.5},
    {"als": 0.5, "content": 0.5, "lightgcn": 0.5, "popularity": 0.5},
    {"lightgcn": 1.0, "als": 0.1},
]


@dataclass
class FixedConfig:
    """Factors given, not learned."""


@register
class FixedFactors(FactorModel):
    """A model whose factors are set by the test (shape checks and fold-in only)."""

    kind = "test_fixed"
    Config = FixedConfig

    def _fit(self, data: TrainData, options: TrainingOptions) -> None:  # pragma: no cover - never fit
        raise NotImplementedError

    def fold_in(self, items: np.ndarray, values: np.ndarray | None = None) -> np.ndarray:
        items = np.asarray(items, dtype=np.int64)
        if items.size == 0:
            return np.zeros(self.dim, np.float32)
        return np.asarray(self.item_factors_[items].mean(axis=0), np.float32)


def fixed(users: np.ndarray, items: np.ndarray) -> FixedFactors:
    m = FixedFactors()
    m.user_factors_ = users.astype(np.float32)
    m.item_factors_ = items.astype(np.float32)
    return m


def structured_signals(n_users: int, n_items: int, seed: int = 0) -> tuple[dict[str, FactorModel], np.ndarray]:
    """Clustered low-rank factors with heavy-tailed popularity, like trained recommenders give."""
    rng = np.random.default_rng(seed)
    n_topics = 40
    item_topic = rng.integers(0, n_topics, n_items)
    user_topic = rng.integers(0, n_topics, n_users)
    counts = np.floor(rng.pareto(1.2, n_items) * 5).astype(np.int64)
    models: dict[str, FactorModel] = {}
    for s, d in DIMS.items():
        if s == "popularity":
            models[s] = fixed(np.ones((n_users, 1)), np.log1p(counts)[:, None])
            continue
        centers = rng.normal(size=(n_topics, d))
        norm = (1 + np.log1p(counts))[:, None] / 3 if s != "content" else 1.0
        items = (centers[item_topic] + 0.8 * rng.normal(size=(n_items, d))) * norm / np.sqrt(d)
        users = (centers[user_topic] + 0.8 * rng.normal(size=(n_users, d))) / np.sqrt(d)
        models[s] = fixed(users, items)
    return models, counts


def scales_for(models: dict[str, FactorModel], rng: np.random.Generator) -> dict[str, float]:
    out = {}
    for s, m in models.items():
        u = rng.integers(0, m.user_factors_.shape[0], 2000)
        i = rng.integers(0, m.item_factors_.shape[0], 2000)
        sd = float(np.std(np.einsum("ij,ij->i", m.user_factors_[u], m.item_factors_[i])))
        out[s] = 1.0 / sd if sd > 1e-12 else 1.0
    return out


def items_table(n_items: int, counts: np.ndarray, seed: int = 1) -> ItemTable:
    rng = np.random.default_rng(seed)
    common = ["Action", "Comedy", "Drama", "Romance"]
    genres = [[common[i % 4], common[(i // 4) % 4]] for i in range(n_items)]
    for i in rng.choice(n_items, 20, replace=False):  # ~20 items carry a rare genre
        genres[i] = [*genres[i], "Film-Noir"]
    genres[7] = [*genres[7], "IMAX"]  # one item
    year = pd.array([1950 + i % 70 for i in range(n_items)], dtype="Int64")
    year[3] = pd.NA
    mean = rng.uniform(0.5, 5.0, n_items)
    mean[5] = np.nan
    frame = pd.DataFrame(
        {
            "item_id": [str(i) for i in range(n_items)],
            "title": [f"Item {i}" for i in range(n_items)],
            "genres": genres,
            "tags": [[] for _ in range(n_items)],
            "year": year,
            "count": counts,
            "mean_rating": mean,
        }
    )
    return ItemTable.from_columns(frame, n_items)  # as publish converts the dataset's table


@pytest.fixture(scope="module")
def world():
    rng = np.random.default_rng(3)
    models, counts = structured_signals(N_USERS, N_ITEMS)
    fusion = Fusion(models, scales_for(models, rng))
    vectors = fusion.item_vectors()
    index = FusedIndex.build(vectors)
    seen = [rng.choice(N_ITEMS, size=int(rng.integers(5, 300)), replace=False) for _ in range(N_USERS)]
    seen[0] = rng.choice(N_ITEMS, size=3000, replace=False)  # a heavy user: half the catalogue seen
    table = items_table(N_ITEMS, counts)
    return {"fusion": fusion, "vectors": vectors, "index": index, "seen": seen, "table": table, "models": models}


def brute_top(fusion: Fusion, weights: dict, users: np.ndarray, seen: list, k: int, allowed=None):
    """Reference ranking from the per-signal scores themselves (not the fused vectors)."""
    w = {s: weights.get(s, 0.0) for s in fusion.signals}
    scores = sum(
        np.float32(w[s] * fusion.scales[s]) * (fusion.models[s].user_factors_[users] @ fusion.models[s].item_factors_.T)
        for s in fusion.signals
    )
    for j, u in enumerate(users):
        scores[j, seen[u]] = -np.inf
    if allowed is not None:
        scores[:, ~allowed] = -np.inf
    return np.argsort(-scores, axis=1, kind="stable")[:, :k], scores


def test_hnsw_top10_matches_brute_force_blend(world):
    """recall@10 of the index vs brute-force blended scores, 300 users x 5 weight vectors."""
    fusion, index, seen = world["fusion"], world["index"], world["seen"]
    users = np.arange(N_USERS)
    index.stats.update(hnsw=0, exact=0, grown=0)
    recalls = []
    for weights in WEIGHTS:
        query = fusion.query(fusion.user_parts(users), weights)
        rows, scores = index.search(query, 10, exclude=[seen[u] for u in users])
        ref, ref_scores = brute_top(fusion, weights, users, seen, 10)
        mine = []
        for j in users:
            assert not np.isin(rows[j], seen[j]).any()
            mine.append(len(set(rows[j].tolist()) & set(ref[j].tolist())) / 10)
        assert np.mean(mine) >= 0.98, f"recall@10 {np.mean(mine):.4f} for weights {weights}"
        recalls += mine
        # returned scores are the blended scores of the returned items
        np.testing.assert_allclose(scores, np.take_along_axis(ref_scores, rows, axis=1), rtol=1e-4, atol=1e-4)
        assert (np.diff(scores, axis=1) <= 0).all()
    recall = float(np.mean(recalls))
    print(f"recall@10 over {len(recalls)} (user, weights) queries: {recall:.4f}; paths {index.stats}")
    assert recall >= 0.99
    # blends go through HNSW; exact are the content+popularity queries (a 33-of-129-dim subspace)
    # and the heavy user 0 (half the catalogue excluded)
    assert index.stats["hnsw"] == 4 * (N_USERS - 1)
    assert index.stats["exact"] == N_USERS + 4


def test_rows_added_after_the_graph_are_ranked_on_every_path(world, tmp_path):
    """Items added while serving (FusedIndex.extended) are outside the graph: graph searches rank
    them beside their candidates, exact searches with the rest, and results match brute force."""
    fusion, index, seen = world["fusion"], world["index"], world["seen"]
    users = np.arange(40)
    weights = WEIGHTS[0]
    query = fusion.query(fusion.user_parts(users), weights)
    # three added items: one made to be user 1's best (a multiple of its query), two ordinary
    rng = np.random.default_rng(5)
    added = np.vstack([query[1] * 50, world["vectors"][rng.integers(0, N_ITEMS, 2)]]).astype(np.float32)
    grown = index.extended(added)
    assert len(grown) == N_ITEMS + 3 and len(index) == N_ITEMS  # the original is unchanged
    grown.stats.update(hnsw=0, exact=0, grown=0)
    excludes = [seen[u] for u in users]
    rows, scores = grown.search(query, 10, exclude=excludes)
    assert grown.stats["hnsw"] > 0  # the graph path was taken, and still found the added best item
    assert rows[1, 0] == N_ITEMS
    # What the extension guarantees, on any CPU: the answer is the original index's answer with the
    # added rows ranked into it exactly (the graph search itself is approximate, so brute force is
    # the reference only for recall, with the same bound as test_hnsw_top10_matches_brute_force_blend).
    base_rows, base_scores = index.search(query, 10, exclude=excludes)
    new_rows = np.arange(N_ITEMS, N_ITEMS + 3)
    recalls = []
    for j in users:
        extra = new_rows[~np.isin(new_rows, excludes[j])]
        pool_rows = np.concatenate([base_rows[j][base_rows[j] >= 0], extra])
        pool_scores = np.concatenate([base_scores[j][base_rows[j] >= 0], grown.scores(query[j], extra)])
        order = np.lexsort((pool_rows, -pool_scores))[:10]
        np.testing.assert_allclose(scores[j], pool_scores[order], rtol=1e-4, atol=1e-4)
        assert set(rows[j].tolist()) <= set(pool_rows.tolist())
        ref_rows, _ = grown.exact_search(query[j], 10, exclude=excludes[j])
        recalls.append(len(set(rows[j].tolist()) & set(ref_rows.tolist())) / 10)
    assert np.mean(recalls) >= 0.98, f"recall@10 {np.mean(recalls):.4f} against brute force"
    # an added row excluded (the user has seen it) is never returned
    rows, _ = grown.search(query[1], 10, exclude=np.append(seen[1], N_ITEMS))
    assert N_ITEMS not in rows
    with pytest.raises(ValueError, match="not saved"):
        grown.save(tmp_path / "x.usearch")


def test_subspace_query_is_ranked_exactly(world):
    """One signal alone is a subspace the graph navigates badly: it must take the exact path."""
    fusion, index, seen = world["fusion"], world["index"], world["seen"]
    users = np.arange(60)
    query = fusion.query(fusion.user_parts(users), {"content": 1.0})
    index.stats.update(hnsw=0, exact=0, grown=0)
    rows, _ = index.search(query, 10, exclude=[seen[u] for u in users])
    assert index.stats == {"hnsw": 0, "exact": 60, "grown": 0}
    ref, _ = brute_top(fusion, {"content": 1.0}, users, seen, 10)
    assert (rows == ref).mean() >= 0.99


def test_single_query_matches_batch_and_exact(world):
    fusion, index, seen = world["fusion"], world["index"], world["seen"]
    query = fusion.query(fusion.user_parts(np.array([5])), WEIGHTS[0])
    rows, scores = index.search(query[0], 10, exclude=seen[5])
    batch_rows, _ = index.search(query, 10, exclude=[seen[5]])
    exact_rows, exact_scores = index.exact_search(query[0], 10, exclude=seen[5])
    assert rows.shape == (10,) and (rows == batch_rows[0]).all()
    assert len(set(rows.tolist()) & set(exact_rows.tolist())) >= 9
    np.testing.assert_allclose(scores[0], exact_scores[0], rtol=1e-5)


def test_contributions_add_up_to_score(world):
    fusion, index, seen = world["fusion"], world["index"], world["seen"]
    query = fusion.query(fusion.user_parts(np.arange(50)), WEIGHTS[0])
    rows, scores = index.search(query, 10, exclude=seen[:50])
    for j in range(50):
        parts = fusion.contributions(query[j], world["vectors"][rows[j]])
        np.testing.assert_allclose(sum(parts.values()), scores[j], atol=1e-4)
        # and each part is w_s * c_s * score_s from the model itself
        als = WEIGHTS[0]["als"] * fusion.scales["als"] * (
            world["models"]["als"].item_factors_[rows[j]] @ world["models"]["als"].user_factors_[j]
        )
        np.testing.assert_allclose(parts["als"], als, rtol=1e-4, atol=1e-4)


def test_cosines_over_a_signals_slice_are_that_signals_own_cosines(world):
    """The fused part of signal s is c_s * i_s (c_s > 0): cosines over it are the signal's."""
    fusion, models = world["fusion"], world["models"]
    vectors = world["vectors"].copy()
    vectors[7, fusion.slices["content"]] = 0.0  # an all-zero part: cosine 0, with itself too
    index = FusedIndex.build(vectors)
    for s in ("als", "content", "lightgcn"):
        factors = np.asarray(models[s].item_factors_, dtype=np.float64)
        unit = factors / np.linalg.norm(factors, axis=1, keepdims=True)
        for row in (0, 123, N_ITEMS - 1):
            got = index.cosines(row, fusion.slices[s])
            assert got.dtype == np.float32 and got.shape == (N_ITEMS,)
            expected = unit @ unit[row]
            if s == "content":
                expected[7] = 0.0
            np.testing.assert_allclose(got, expected, atol=2e-6)  # float32 products of unit-length rows
    assert not index.cosines(7, fusion.slices["content"]).any()
    assert index.cosines(7, fusion.slices["als"])[7] == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_array_equal(index.cosines(3, slice(-fusion.dim, None)), index.cosines(3, slice(0, fusion.dim)))
    for row in (-1, N_ITEMS):
        with pytest.raises(ValueError, match="outside"):
            index.cosines(row, fusion.slices["als"])
    for dims in (slice(0, 10, 2), slice(5, 5)):
        with pytest.raises(ValueError, match="contiguous"):
            index.cosines(0, dims)


def test_columns_are_a_signals_scaled_item_vectors_without_a_copy(world, tmp_path):
    """Over Fusion.slices[s] the fused columns are c_s * i_s, read in place (memory-mapped vectors too)."""
    fusion, models = world["fusion"], world["models"]
    np.save(tmp_path / "vectors.npy", world["vectors"])
    mapped = np.load(tmp_path / "vectors.npy", mmap_mode="r")
    index = FusedIndex(FusedIndex.build(world["vectors"]).graph, mapped)
    for s in ("als", "content", "lightgcn"):
        part = index.columns(fusion.slices[s])
        assert np.shares_memory(part, mapped) and not part.flags.writeable
        assert index.columns(fusion.slices[s]) is part  # one view a span: what reads it may key caches on it
        np.testing.assert_allclose(part / fusion.scales[s], models[s].item_factors_, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(index.columns(slice(-1, None)), mapped[:, -1:])
    with pytest.raises(ValueError, match="contiguous"):
        index.columns(slice(3, 3))


@pytest.mark.parametrize(
    ("item_filter", "expected_size"),
    [
        (ItemFilter(genres=("film-noir",)), 20),  # case-insensitive, ~20 items
        (ItemFilter(genres=("IMAX",)), 1),
        (ItemFilter(genres=("Western",)), 0),
        (ItemFilter(genres=("IMAX",), year_min=2100), 0),
    ],
)
def test_selective_filters_are_exact(world, item_filter, expected_size):
    fusion, index, seen, table = world["fusion"], world["index"], world["seen"], world["table"]
    allowed = item_filter.mask(table)
    assert allowed.sum() == expected_size
    users = np.arange(40)
    query = fusion.query(fusion.user_parts(users), WEIGHTS[0])
    rows, scores = index.search(query, 10, exclude=[seen[u] for u in users], allowed=allowed)
    ref, _ = brute_top(fusion, WEIGHTS[0], users, seen, 10, allowed=allowed)
    for j, u in enumerate(users):
        eligible = np.flatnonzero(allowed & ~np.isin(np.arange(N_ITEMS), seen[u]))
        got = rows[j][rows[j] >= 0]
        assert len(got) == min(10, len(eligible))
        assert (got == ref[j][: len(got)]).all(), "a selective filter must give the exact top-k"
        assert np.isneginf(scores[j][len(got) :]).all()
    single_rows, single_scores = index.search(query[0], 10, exclude=seen[0], allowed=allowed)
    assert len(single_rows) == min(10, int((allowed & ~np.isin(np.arange(N_ITEMS), seen[0])).sum()))
    if expected_size == 0:
        assert single_rows.shape == (0,) and single_scores.shape == (0,)


def test_single_item_filter_excluded_when_seen(world):
    fusion, index, table = world["fusion"], world["index"], world["table"]
    allowed = ItemFilter(genres=("IMAX",)).mask(table)
    query = fusion.query(fusion.user_parts(np.array([1])), WEIGHTS[0])[0]
    rows, _ = index.search(query, 5, allowed=allowed)
    assert rows.tolist() == [7]
    rows, _ = index.search(query, 5, exclude=np.array([7]), allowed=allowed)
    assert rows.tolist() == []


def test_broad_filter_and_heavy_exclusion_stay_correct(world):
    """A filter keeping half the catalogue goes through HNSW; a user who saw half the items too."""
    fusion, index, seen, table = world["fusion"], world["index"], world["seen"], world["table"]
    item_filter = ItemFilter(genres=("Comedy", "Drama"), year_min=1960)
    allowed = item_filter.mask(table)
    assert 0.4 < allowed.mean() < 0.7
    users = np.arange(100)
    query = fusion.query(fusion.user_parts(users), WEIGHTS[0])
    index.stats.update(hnsw=0, exact=0, grown=0)
    rows, _ = index.search(query, 10, exclude=[seen[u] for u in users], allowed=allowed)
    assert index.stats["hnsw"] > 0
    ref, _ = brute_top(fusion, WEIGHTS[0], users, seen, 10, allowed=allowed)
    recall = np.mean([len(set(rows[j]) & set(ref[j])) / 10 for j in range(len(users))])
    assert recall >= 0.99
    assert allowed[rows].all()
    assert not np.isin(rows[0], seen[0]).any()


def test_item_filter_fields():
    table = items_table(200, np.arange(200))
    cat = ItemCatalog(table)
    m = ItemFilter(year_min=1960, year_max=1961).mask(cat)
    years = table.year
    assert (m == ((years >= 1960) & (years <= 1961))).all() and m.sum() > 0
    assert not ItemFilter(year_min=1950).mask(cat)[3], "unknown year fails a year filter"
    m = ItemFilter(min_mean_rating=4.0).mask(cat)
    assert (table.mean_rating[m] >= 4.0).all() and not m[5]
    assert ItemFilter(min_count=150).mask(cat).sum() == 50
    assert ItemFilter().is_empty and ItemFilter().mask(cat).all()
    assert ItemFilter(genres="Drama").genres == ("Drama",)
    with pytest.raises(ValueError, match="year_min"):
        ItemFilter(year_min=2000, year_max=1990)
    with pytest.raises(ValueError, match="min_count"):
        ItemFilter(min_count=-1)


def test_save_and_mmap_load(world, tmp_path):
    fusion, index, seen = world["fusion"], world["index"], world["seen"]
    path = tmp_path / "index.usearch"
    index.save(path)
    vectors = world["vectors"]
    np.save(tmp_path / "vectors.npy", vectors)
    mapped_vectors = np.load(tmp_path / "vectors.npy", mmap_mode="r")
    loaded = FusedIndex.load(path, mapped_vectors, mmap=True)
    assert loaded.mapped and len(loaded) == N_ITEMS and loaded.dim == fusion.dim
    in_memory = FusedIndex.load(path, np.load(tmp_path / "vectors.npy"), mmap=False)
    assert not in_memory.mapped
    np.testing.assert_array_equal(in_memory.vectors, vectors)
    query = fusion.query(fusion.user_parts(np.arange(20)), WEIGHTS[0])
    a, _ = index.search(query, 10, exclude=seen[:20])
    b, _ = loaded.search(query, 10, exclude=seen[:20])
    c, _ = in_memory.search(query, 10, exclude=seen[:20])
    assert (a == b).all() and (a == c).all()
    # the graph holds half-precision vectors (GRAPH_DTYPE); answers are ranked from the float32 rows
    assert Index.metadata(str(path))["kind_scalar"].name == GRAPH_DTYPE.upper() == "F16"
    assert loaded.graph.dtype == "f16" and loaded.graph.get().dtype.name == "F16"


def test_a_float32_graph_still_loads_and_answers(world, tmp_path):
    """Bundles published before the graph was half precision hold an f32 graph; so do vectors with
    a coordinate beyond half precision's range (65504)."""
    fusion, seen, vectors = world["fusion"], world["seen"], world["vectors"]
    old = Index(ndim=vectors.shape[1], metric="ip", dtype="f32", connectivity=64, expansion_add=256, expansion_search=256)
    old.add(np.arange(len(vectors), dtype=np.uint64), vectors, threads=1)
    old.save(str(tmp_path / "old.usearch"))
    loaded = FusedIndex.load(tmp_path / "old.usearch", vectors)
    assert loaded.graph.dtype == "f32"
    query = fusion.query(fusion.user_parts(np.arange(20)), WEIGHTS[0])
    rows, scores = loaded.search(query, 10, exclude=seen[:20])
    recall = []
    for j in range(20):
        exact_rows, exact_scores = loaded.exact_search(query[j], 10, exclude=seen[j])
        np.testing.assert_allclose(scores[j], exact_scores, rtol=1e-4, atol=1e-4)
        recall.append(len(set(rows[j]) & set(exact_rows)) / 10)
    assert np.mean(recall) >= 0.98

    wide = vectors.copy()
    wide[0, 0] = 1e5
    assert FusedIndex.build(wide[:50]).graph.dtype == "f32" and FusedIndex.build(vectors[:50]).graph.dtype == "f16"



def test_loaded_graph_is_restored_by_the_first_graph_search_only(world, tmp_path):
    """Exact searches never restore the graph; the first HNSW search does, once for extended copies
    too; a file whose header reads but whose graph does not fails there with a ValueError."""
    fusion, index, seen = world["fusion"], world["index"], world["seen"]
    path = tmp_path / "index.usearch"
    index.save(path)
    np.save(tmp_path / "vectors.npy", world["vectors"])
    mapped = np.load(tmp_path / "vectors.npy", mmap_mode="r")
    loaded = FusedIndex.load(path, mapped)
    assert not loaded.graph.restored and (loaded.graph.count, loaded.graph.ndim) == (N_ITEMS, fusion.dim)
    query = fusion.query(fusion.user_parts(np.arange(20)), WEIGHTS[0])
    loaded.search(query[0], 10, allowed=np.arange(50))  # a selective filter: ranked exactly
    loaded.exact_search(query[1], 10)
    assert not loaded.graph.restored and loaded.stats["hnsw"] == 0
    grown = loaded.extended(world["vectors"][:3])
    assert grown.graph is loaded.graph
    rows, _ = grown.search(query, 10, exclude=seen[:20])
    assert loaded.graph.restored and grown.stats["hnsw"] > 0
    assert (rows == index.search(query, 10, exclude=seen[:20])[0]).all()  # the 3 copies score as their originals

    # the file: the vectors (8 bytes of shape, then rows x dim in the graph's dtype), a 64-byte
    # header, the graph
    cut = tmp_path / "cut.usearch"
    cut.write_bytes(path.read_bytes()[: 8 + N_ITEMS * fusion.dim * np.dtype(GRAPH_DTYPE.replace("f", "float")).itemsize
                                      + 64 + 100])
    broken = FusedIndex.load(cut, mapped)
    assert broken.graph.count == N_ITEMS
    with pytest.raises(ValueError, match="cut.usearch"):
        broken.search(query, 10, exclude=seen[:20])

def _resident_kib(path: Path) -> int:
    """This process's resident KiB of the mappings of ``path`` (/proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if len(head) >= 5 and "-" in head[0] and not head[0].endswith(":"):
            inside = line.endswith(str(path))
        elif inside and head[0] == "Rss:":
            total += int(head[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="reads /proc/self/smaps (Linux)")
def test_released_pages_of_mapped_vectors_leave_rss_and_answers_alone(world, tmp_path):
    fusion, index, seen = world["fusion"], world["index"], world["seen"]
    np.save(tmp_path / "vectors.npy", world["vectors"])
    index.save(tmp_path / "index.usearch")
    loaded = FusedIndex.load(tmp_path / "index.usearch", np.load(tmp_path / "vectors.npy", mmap_mode="r"))
    query = fusion.query(fusion.user_parts(np.arange(20)), WEIGHTS[0])
    before, _ = loaded.search(query, 10, exclude=seen[:20])
    assert loaded.energy.sum() == pytest.approx(1.0)  # a pass over every row, then released
    np.asarray(loaded.vectors).sum()  # every page read again
    assert _resident_kib(tmp_path / "vectors.npy") > 0
    loaded.release_pages()
    assert _resident_kib(tmp_path / "vectors.npy") == 0
    after, _ = loaded.search(query, 10, exclude=seen[:20])
    assert (before == after).all()
    FusedIndex(loaded.graph, world["vectors"]).release_pages()  # vectors in memory: nothing to release


def test_bad_inputs(world, tmp_path):
    index = world["index"]
    q = np.zeros(index.dim, np.float32)
    with pytest.raises(ValueError, match="k must be"):
        index.search(q, 0)
    with pytest.raises(ValueError, match="shape"):
        index.search(np.zeros(5, np.float32), 3)
    with pytest.raises(ValueError, match="exclude"):
        index.search(q, 3, exclude=np.array([N_ITEMS + 1]))
    with pytest.raises(ValueError, match="allowed mask"):
        index.search(q, 3, allowed=np.ones(3, bool))
    bad = tmp_path / "bad.usearch"
    bad.write_bytes(b"not an index" * 10)
    with pytest.raises(ValueError, match="usearch"):
        FusedIndex.load(bad, world["vectors"])
    index.save(tmp_path / "good.usearch")
    with pytest.raises(ValueError, match="the graph holds"):
        FusedIndex.load(tmp_path / "good.usearch", world["vectors"][:-1])
    with pytest.raises(ValueError, match="non-finite"):
        FusedIndex.build(np.full((4, 3), np.nan, np.float32))
    with pytest.raises(ValueError):
        IndexConfig(exact_share=2.0)


def test_small_catalogue_uses_exact_path():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(50, 8)).astype(np.float32)
    index = FusedIndex.build(vectors)
    q = rng.normal(size=8).astype(np.float32)
    rows, scores = index.search(q, 60)
    assert len(rows) == 50 and index.stats["exact"] == 1
    assert (rows == np.argsort(-(vectors @ q), kind="stable")).all()


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize("in_space", [False, True], ids=["fused", "graph-space"])
def test_hnsw_recall_on_real_signals(ml_small, client, in_space):
    """The same check over real ALS + content + popularity vectors of ml-latest-small (9,742
    items): popularity-shaped norms make inner-product HNSW harder than the synthetic world. Also
    with the graph in the graph space a bundle fits for the first blend (hybrid/graph_space.py)."""
    from hybrid.bundle import graph_space
    import scipy.sparse as sp

    from models.als import ALS, ALSConfig
    from models.content import ContentConfig, ContentModel
    from models.popularity import Popularity

    data = TrainData(ml_small, "train")
    opts = TrainingOptions(client=client, device="cpu")
    models = {
        "als": ALS(ALSConfig(factors=64, iterations=8)).fit(data, opts),
        "content": ContentModel(ContentConfig(dim=32)).fit(data, opts),
        "popularity": Popularity().fit(data, opts),
    }
    fusion = Fusion.fit_scales(models, ml_small.matrix("test"))
    vectors = fusion.item_vectors()
    tuned = {"als": 1.0, "content": 0.2, "popularity": 0.3}
    space = graph_space(fusion, vectors, tuned, IndexConfig()) if in_space else None
    index = FusedIndex.build(vectors, threads=1, space=space)  # one thread: the same graph for the same vectors
    seen = sp.csr_matrix(ml_small.matrix("train"))
    users = np.arange(ml_small.n_users)
    recalls = {}
    for weights in (tuned, {"als": 1.0}, {"als": 1.0, "content": 1.0}):
        query = fusion.query(fusion.user_parts(users), weights)
        rows, _ = index.search(query, 10, exclude=seen)
        scores = query @ vectors.T
        scores[seen.nonzero()] = -np.inf
        ref = np.argsort(-scores, axis=1, kind="stable")[:, :10]
        recalls[str(weights)] = float(np.mean([len(set(rows[j]) & set(ref[j])) / 10 for j in users]))
    print(f"recall@10 on ml-latest-small: {recalls}; paths {index.stats}; graph width {index.graph.ndim}")
    assert min(recalls.values()) >= 0.99
    assert index.stats["exact"] >= len(users)  # ALS alone is a subspace query: ranked exactly
