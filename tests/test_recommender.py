"""Serving over a loaded bundle: exact blends, variants, filters, cold start, similar items."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from etl.errors import UnknownIdError
from hybrid.bundle import Bundle, load
from hybrid.index import ItemFilter
from hybrid.item_table import as_list
from hybrid.recommender import History, HybridRecommender
from tests.test_bundle import TUNED, tiny_bundle_root, tiny_fusion  # noqa: F401  (fixtures)


@pytest.fixture(scope="module")
def bundle(tiny_bundle_root: Path) -> Bundle:  # noqa: F811
    return load(tiny_bundle_root)


@pytest.fixture(scope="module")
def rec(bundle: Bundle) -> HybridRecommender:
    return HybridRecommender(bundle)


def brute(bundle: Bundle, query: np.ndarray, exclude, allowed=None, n: int = 10) -> list[int]:
    scores = np.asarray(bundle.index.vectors, dtype=np.float64) @ query.astype(np.float64)
    scores[np.asarray(exclude, dtype=np.int64)] = -np.inf
    if allowed is not None:
        scores[~allowed] = -np.inf
    order = np.lexsort((np.arange(len(scores)), -scores))
    return [int(i) for i in order[:n] if np.isfinite(scores[i])]


def seen_rows(bundle: Bundle, user_id: str) -> np.ndarray:
    row = bundle.users.row(user_id)
    return bundle.seen.indices[bundle.seen.indptr[row] : bundle.seen.indptr[row + 1]]


def train_counts(bundle: Bundle) -> np.ndarray:
    return np.diff(bundle.seen.tocsc().indptr)


def test_known_users_get_the_exact_blend(bundle: Bundle, rec: HybridRecommender):
    for user_id in bundle.users.ids[:20]:
        recs = rec.recommend(user_id, 10, variant="tuned")
        assert recs.variant == "tuned" and recs.weights == TUNED
        assert not recs.cold_start and recs.user_source == "trained" and recs.cold_start_reason is None
        query = bundle.fusion.query(bundle.fusion.user_parts(np.array([bundle.users.row(user_id)])), TUNED)[0]
        assert [r.item_row for r in recs.items] == brute(bundle, query, seen_rows(bundle, user_id))
        assert [r.rank for r in recs.items] == list(range(1, 11))
        scores = [r.score for r in recs.items]
        assert scores == sorted(scores, reverse=True)
        for r in recs.items:
            assert sum(r.contributions.values()) == pytest.approx(r.score, abs=1e-4)
            assert r.item_id == bundle.items.ids[r.item_row] and r.title.startswith("Movie ")
        assert not set(recs.item_ids) & set(bundle.items.ids[seen_rows(bundle, user_id)])


def test_sticky_variant_and_named_variants(bundle: Bundle, rec: HybridRecommender):
    for user_id in bundle.users.ids[:30]:
        recs = rec.recommend(user_id, 5)
        assert recs.variant == bundle.variants.assign(user_id)
        assert recs.weights == dict(bundle.variants.get(recs.variant).weights)
    als = rec.recommend("1", 5, variant="als")
    assert als.variant == "als"
    for r in als.items:
        assert r.contributions["content"] == r.contributions["lightgcn"] == r.contributions["popularity"] == 0.0
        assert r.contributions["als"] == pytest.approx(r.score, abs=1e-5)
    custom = rec.recommend("1", 5, weights={"content": 1.0, "popularity": 0.5})
    assert custom.variant == "custom" and custom.weights["als"] == 0.0
    with pytest.raises(ValueError, match="unknown variant 'bogus'; known: tuned, als"):
        rec.recommend("1", 5, variant="bogus")
    with pytest.raises(ValueError, match=">= 0"):
        rec.recommend("1", 5, weights={"als": -1})
    with pytest.raises(ValueError, match="n must be"):
        rec.recommend("1", 0)


def _single_item_filter(bundle: Bundle) -> tuple[ItemFilter, int]:
    table = bundle.items_table
    for year in sorted({int(y) for y in table.year if y == y}):
        for genre in sorted({g for cell in table.genres for g in cell}):
            f = ItemFilter(genres=(genre,), year_min=year, year_max=year)
            mask = f.mask(bundle.catalog)
            if mask.sum() == 1:
                return f, int(np.flatnonzero(mask)[0])
    raise AssertionError("no single-item filter in the tiny catalogue")


def test_filters_and_exclude_seen_are_exact(bundle: Bundle, rec: HybridRecommender):
    comedy = ItemFilter(genres=("comedy",))
    recs = rec.recommend("1", 10, variant="tuned", item_filter=comedy)
    assert recs.items and all("Comedy" in as_list(bundle.items_table.genres[r.item_row]) for r in recs.items)
    query = bundle.fusion.query(bundle.fusion.user_parts(np.array([bundle.users.row("1")])), TUNED)[0]
    allowed = comedy.mask(bundle.catalog)
    assert [r.item_row for r in recs.items] == brute(bundle, query, seen_rows(bundle, "1"), allowed)

    one, row = _single_item_filter(bundle)
    unseen_by = [u for u in bundle.users.ids if row not in seen_rows(bundle, u)]
    seen_by = [u for u in bundle.users.ids if row in seen_rows(bundle, u)]
    assert [r.item_row for r in rec.recommend(unseen_by[0], 10, item_filter=one).items] == [row]
    if seen_by:
        assert len(rec.recommend(seen_by[0], 10, item_filter=one)) == 0
        assert [r.item_row for r in rec.recommend(seen_by[0], 10, item_filter=one, exclude_seen=False).items] == [row]

    none = rec.recommend("1", 10, item_filter=ItemFilter(genres=("Western",)))
    assert len(none) == 0 and none.items == []
    # without exclusion the user's own items compete again
    everything = rec.recommend("1", len(bundle.items), variant="tuned", exclude_seen=False)
    assert len(everything) == len(bundle.items)
    assert set(seen_rows(bundle, "1")) <= {r.item_row for r in everything.items}


def test_cold_start_without_history_is_popularity(bundle: Bundle, rec: HybridRecommender):
    recs = rec.recommend("someone-new", 8)
    assert recs.cold_start and recs.user_source == "no_history"
    assert "popular" in recs.cold_start_reason
    assert recs.weights == {"als": 0.0, "content": 0.0, "lightgcn": 0.0, "popularity": 1.0}
    counts = train_counts(bundle)
    expected = np.lexsort((np.arange(len(counts)), -counts))[:8]
    assert [r.item_row for r in recs.items] == expected.tolist()
    for r in recs.items:
        assert r.contributions["popularity"] == pytest.approx(r.score, abs=1e-5)
    # a known user with an explicitly empty history is a cold start too
    empty = rec.recommend("1", 8, history_override=History(np.zeros(0, np.int64)))
    assert empty.cold_start and empty.user_source == "no_history"
    assert [r.item_row for r in empty.items] == expected.tolist()


def test_cold_start_content_variant_follows_the_filter(bundle: Bundle, rec: HybridRecommender):
    horror = ItemFilter(genres=("Horror",))
    recs = rec.recommend("someone-new", 5, variant="content", item_filter=horror)
    assert recs.cold_start and "content profile" in recs.cold_start_reason
    assert recs.variant == "content" and recs.weights["content"] == 1.0
    assert len(recs) == 5
    for r in recs.items:
        assert "Horror" in as_list(bundle.items_table.genres[r.item_row])
        assert r.contributions["content"] == pytest.approx(r.score, abs=1e-5) and r.score > 0


def test_new_user_with_history_is_folded_in(bundle: Bundle, rec: HybridRecommender):
    history = History(np.array([0, 2, 4, 6]), np.array([5.0, 4.0, 4.5, 3.0]))
    recs = rec.recommend("new-user", 10, variant="tuned", history_override=history)
    assert recs.cold_start and recs.user_source == "folded_in" and "folded in from 4" in recs.cold_start_reason
    assert not {0, 2, 4, 6} & {r.item_row for r in recs.items}
    state = rec.user_state("new-user", history)
    for s in bundle.signals:
        np.testing.assert_allclose(state.parts[s], bundle.fusion.models[s].fold_in(history.items, history.values))
    query = bundle.fusion.query(state.parts, TUNED)
    assert [r.item_row for r in recs.items] == brute(bundle, query, history.items)
    # tuples and plain item rows are accepted too
    as_tuple = rec.recommend("new-user", 10, variant="tuned", history_override=(history.items, history.values))
    assert as_tuple.item_ids == recs.item_ids
    with pytest.raises(ValueError, match="outside"):
        rec.recommend("new-user", 5, history_override=[len(bundle.items)])


def test_trained_history_is_oldest_first(bundle: Bundle, rec: HybridRecommender, tiny_dataset):
    train = tiny_dataset.load("train")
    for user_id in ("1", "2", "17"):
        mine = train[train["user"] == bundle.users.row(user_id)].sort_values(["timestamp", "item"])
        history = rec.history(user_id)
        assert history.items.tolist() == mine["item"].tolist()
        np.testing.assert_allclose(history.values, mine["value"].to_numpy())
    assert len(rec.history("stranger")) == 0


def test_known_user_with_new_interactions(bundle: Bundle, rec: HybridRecommender):
    trained = rec.history("1")
    assert set(trained.items) == set(seen_rows(bundle, "1"))
    # the stand-in signals fold in exactly, so re-folding the trained history changes nothing
    same = rec.recommend("1", 10, variant="tuned", history_override=trained)
    assert same.user_source == "folded_in" and not same.cold_start
    assert same.item_ids == rec.recommend("1", 10, variant="tuned").item_ids
    new_item = rec.recommend("1", 1, variant="tuned").items[0].item_row
    updated = rec.recommend("1", 10, variant="tuned", history_override=trained.extend([new_item], [5.0]))
    assert new_item not in [r.item_row for r in updated.items]
    assert updated.item_ids != same.item_ids


def test_similar_items(bundle: Bundle, rec: HybridRecommender):
    sims = rec.similar_items("1", 5)
    assert len(sims) == 5 and "1" not in [s.item_id for s in sims]
    assert [s.rank for s in sims] == [1, 2, 3, 4, 5]
    assert [s.score for s in sims] == sorted((s.score for s in sims), reverse=True)
    for s in sims:
        assert sum(s.signals.values()) == pytest.approx(s.score, abs=1e-5)
        assert set(s.signals) == {"als", "content", "lightgcn"}  # popularity has no item similarity
    als = rec.similar_items("1", 5, signal="als")
    factors = np.asarray(bundle.fusion.models["als"].item_factors_)
    unit = factors / np.maximum(np.linalg.norm(factors, axis=1, keepdims=True), 1e-12)
    cos = unit @ unit[0]
    cos[0] = -np.inf
    assert [s.item_row for s in als] == np.lexsort((np.arange(len(cos)), -cos))[:5].tolist()
    with pytest.raises(UnknownIdError, match="unknown item id"):
        rec.similar_items("no-such-item", 5)
    with pytest.raises(ValueError, match="unknown similarity signal"):
        rec.similar_items("1", 5, signal="popularity")
    with pytest.raises(UnknownIdError):
        rec.explain("1", "no-such-item")


def test_item_without_interactions_is_found_through_content(bundle: Bundle, rec: HybridRecommender):
    counts = train_counts(bundle)
    cold = int(np.flatnonzero(counts == 0)[0])
    cold_id = str(bundle.items.ids[cold])
    genres = set(as_list(bundle.items_table.genres[cold]))
    sims = rec.similar_items(cold_id, 5)
    assert set(sims[0].signals) == {"content"}
    for s in sims:
        assert set(as_list(bundle.items_table.genres[s.item_row])) & genres
    # and the cold item shows up for a warm item with the same content
    twin = sims[0].item_id
    found = rec.similar_items(twin, len(bundle.items) - 1, signal="content")
    assert cold_id in [s.item_id for s in found[:10]]
    fused = rec.similar_items(twin, len(bundle.items) - 1)
    entry = next(s for s in fused if s.item_id == cold_id)
    assert entry.signals["content"] > 0 and entry.signals["als"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.slow
def test_real_signals_end_to_end(tiny_dataset, tmp_path, client):
    """The same serving path over the real ALS, content, LightGCN and popularity signals."""
    from hybrid.bundle import publish
    from hybrid.fusion import Fusion
    from hybrid.variants import Variants
    from models.als import ALS, ALSConfig
    from models.base import TrainData, TrainingOptions
    from models.content import ContentConfig, ContentModel
    from models.lightgcn import LightGCN, LightGCNConfig
    from models.popularity import Popularity

    data = TrainData(tiny_dataset, "train")
    opts = TrainingOptions(client=client, device="cpu")
    models = {
        "als": ALS(ALSConfig(factors=8, iterations=5)).fit(data, opts),
        "content": ContentModel(ContentConfig(dim=8)).fit(data, opts),
        "lightgcn": LightGCN(LightGCNConfig(embedding_dim=8, num_layers=2, learning_rate=0.01, epochs=5, eval_every=5)).fit(
            data, opts
        ),
        "popularity": Popularity().fit(data, opts),
    }
    fusion = Fusion.fit_scales(models, tiny_dataset.matrix("test"))
    weights = {"als": 1.0, "content": 0.3, "lightgcn": 0.5, "popularity": 0.2}
    publish(tmp_path, fusion, tiny_dataset, weights=weights, variants=Variants(fusion.signals, weights), metrics={},
            params={})
    b = load(tmp_path)
    assert {s: b.fusion.models[s].kind for s in b.signals} == {s: s for s in b.signals}
    r = HybridRecommender(b)

    recs = r.recommend("1", 10, explain=True)
    query = b.fusion.query(b.fusion.user_parts(np.array([b.users.row("1")])), weights)[0]
    assert [i.item_row for i in recs.items] == brute(b, query, seen_rows(b, "1"))
    for item in recs.items:
        assert sum(item.contributions.values()) == pytest.approx(item.score, abs=1e-4)
        assert item.explanation.sentence.startswith("Recommended")
    assert recs.items[0].explanation.driver_signal in ("als", "lightgcn", "content")

    history = History(np.array([0, 2, 4]), np.array([4.0, 5.0, 3.0]))
    new = r.recommend("newcomer", 10, variant="tuned", history_override=history)
    parts = {s: b.fusion.models[s].fold_in(history.items, history.values) for s in b.signals}
    assert [i.item_row for i in new.items] == brute(b, b.fusion.query(parts, weights), history.items)

    cold = int(np.flatnonzero(np.diff(b.seen_by_item.indptr) == 0)[0])
    sims = r.similar_items(str(b.items.ids[cold]), 3)
    assert set(sims[0].signals) == {"content"} and sims[0].score > 0.5
