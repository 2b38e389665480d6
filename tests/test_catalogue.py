"""Items added while serving (hybrid/catalogue.py, Engine.with_items): in the catalogue at once,
searchable, filterable, recommendable, similar, explainable, and their interactions folded in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from etl.events_log import Event
from etl.items_log import CatalogueItem
from graphql_api.engine import Engine
from hybrid.catalogue import canonical
from graphql_api.store import UserState
from hybrid.index import ItemFilter

pytest_plugins = ["tests.api_helpers"]


def additions(*rows: dict) -> list[CatalogueItem]:
    return [CatalogueItem.from_dict(r) for r in rows]


NEW = {"id": "new-1", "title": "A Brand New Film (2031)", "genres": ["Action", "Adventure"], "tags": ["dark"],
       "year": 2031}


@pytest.fixture
def engine(api_root: Path) -> Engine:
    return Engine.load(api_root)


def test_an_added_item_is_served_at_once(engine: Engine) -> None:
    n = len(engine.bundle.items)
    twin = int(np.flatnonzero(engine.bundle.items_table.year == 1991)[0])  # same metadata kind
    new_meta = dict(NEW, genres=list(engine.record(twin).genres), tags=list(engine.record(twin).tags), year=1991)
    served = engine.with_items(additions(new_meta))
    assert engine.record_of("1").id == "1" and len(engine.bundle.items) == n  # the old engine is unchanged
    assert len(served.bundle.items) == n + 1 and len(served.bundle.index) == n + 1
    record = served.record_of("new-1")
    assert (record.row, record.title, record.year, record.popularity) == (n, NEW["title"], 1991, 0)
    assert [r.id for r in served.search_items("brand new", 5)] == ["new-1"]

    # its content vector is the trained twin's unit row (same genres, tags, decade); no lift
    content = served.bundle.fusion.models["content"]
    np.testing.assert_allclose(content.embedding_[n], content.embedding_[twin], atol=1e-6)
    np.testing.assert_allclose(content.item_factors_[n], content.embedding_[twin], atol=1e-6)
    assert served.bundle.fusion.models["popularity"].item_factors_[n, 0] == 0

    # recommendable and filterable: the only item of its year
    rec = served.recommender
    result = rec.recommend("1", n=50, item_filter=ItemFilter(year_min=1991, year_max=1991))
    assert "new-1" in [i.item_id for i in result.items]
    item = next(i for i in result.items if i.item_id == "new-1")
    contributions = item.table[item.rank - 1]
    assert sum(contributions.values()) == pytest.approx(item.score, rel=1e-4, abs=1e-5)  # the fused identity holds

    # similar items: by content, its twin first among items of its metadata
    similar = rec.similar_items("new-1", n=5)
    assert similar and similar[0].score == pytest.approx(1.0, abs=1e-4)
    assert any(s.item_id == str(engine.bundle.items.ids[twin]) for s in similar if s.score > 0.999)

    # explainable, and said to be new
    expl = rec.explain("1", "new-1")
    assert expl.sentence.startswith("New in the catalogue.")


def test_an_interaction_with_an_added_item_is_folded_in(engine: Engine) -> None:
    served = engine.with_items(additions(NEW))
    state = UserState(user_id="1", events=(Event("1", "new-1", 5.0, 2_000_000_000, accepted_at=1.0),), deleted_at=None)
    online = served.online_history(state)
    assert online.override is not None and online.online[-1][0] == len(engine.bundle.items)
    before = served.recommender.user_state("1")
    after = served.recommender.user_state("1", online.override)
    assert after.source == "folded_in" and not np.allclose(after.parts["content"], before.parts["content"])
    # the old engine does not know the item: its events are not folded in there
    assert engine.online_history(state).override is None


def test_known_ids_take_new_metadata_and_keep_their_vectors(engine: Engine) -> None:
    row = engine.bundle.items.row("3")
    vectors = engine.bundle.index.item_vectors([row])
    served = engine.with_items(additions({"id": "3", "title": "Renamed (1992)", "genres": ["Noir"], "tags": [],
                                          "year": 1992}))
    assert len(served.bundle.items) == len(engine.bundle.items)
    record = served.record_of("3")
    assert (record.title, record.genres, record.year) == ("Renamed (1992)", ("Noir",), 1992)
    np.testing.assert_array_equal(served.bundle.index.item_vectors([row]), vectors)
    assert served.bundle.catalog.genre_mask("noir")[row]


def test_with_items_rebuilds_from_the_loaded_bundle(engine: Engine) -> None:
    one = engine.with_items(additions(NEW))
    two = one.with_items(additions(NEW, dict(NEW, id="new-2", title="Another")))
    assert len(two.bundle.items) == len(engine.bundle.items) + 2  # not stacked on one's
    assert two.loaded is engine.bundle
    assert len(one.with_items(None).bundle.items) == len(engine.bundle.items)
    assert engine.with_items(None) is engine
    # the last write of an id wins, in the place of its first
    table = canonical(additions(NEW, dict(NEW, id="new-2"), dict(NEW, title="Retitled")))
    assert [(i.id, i.title) for i in table] == [("new-1", "Retitled"), ("new-2", NEW["title"])]
    retitled = engine.with_items(additions(NEW, dict(NEW, title="Retitled")))
    assert len(retitled.bundle.items) == len(engine.bundle.items) + 1
    assert retitled.record_of("new-1").title == "Retitled"


def test_item_maps_recover_a_linear_relation() -> None:
    from hybrid.item_maps import ItemMaps

    rng = np.random.default_rng(0)
    rows = rng.normal(size=(200, 6))
    true = rng.normal(size=(7, 4))
    y = np.hstack([rows, np.ones((200, 1))]) @ true
    x = np.hstack([rows, np.ones((200, 1))])
    fitted = ItemMaps({"als": np.linalg.solve(x.T @ x + 1e-9 * np.eye(7), x.T @ y)})
    np.testing.assert_allclose(fitted.apply(rows[:5])["als"], y[:5], rtol=1e-4, atol=1e-4)


def test_added_items_get_mapped_collaborative_vectors(api_root: Path) -> None:
    from hybrid.bundle import load
    from hybrid.item_maps import fit_item_maps

    engine = Engine.load(api_root)
    maps = engine.bundle.item_maps
    assert maps is not None and set(maps.maps) == {"als"}  # the tiny bundle's collaborative signal
    refit = fit_item_maps(engine.bundle.fusion.models)
    np.testing.assert_allclose(refit.maps["als"], maps.maps["als"], rtol=1e-5, atol=1e-6)
    served = engine.with_items(additions(NEW))
    n = len(engine.bundle.items)
    content_row = served.bundle.fusion.models["content"].embedding_[n]
    np.testing.assert_allclose(served.bundle.fusion.models["als"].item_factors_[n],
                               maps.apply(content_row[None, :])["als"][0], rtol=1e-5, atol=1e-6)
    assert np.abs(served.bundle.fusion.models["als"].item_factors_[n]).sum() > 0
    # a bundle published before the maps existed loads, and serves added items with zero vectors there
    (engine.bundle.path / "item_maps.npz").unlink()
    old = Engine(load(engine.bundle.path)).with_items(additions(NEW))
    assert old.bundle.item_maps is None and not old.bundle.fusion.models["als"].item_factors_[n].any()
