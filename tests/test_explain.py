"""Explanations on the tiny dataset: contributions, drivers, shared genres, graph path, sentence; svd,
sequence and content drivers on small fitted bundles."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from distributed import Client

from etl.dataset import Dataset
from etl.ingest import ingest
from etl.sources.base import RawSource
from hybrid.bundle import Bundle, load, publish
from hybrid.explain import Explanation, PathStep
from hybrid.fusion import Fusion
from hybrid.item_table import as_list
from hybrid.recommender import History, HybridRecommender
from hybrid.variants import Variants
from models.base import TrainData, TrainingOptions
from models.content import ContentConfig, ContentModel
from models.popularity import Popularity
from models.sequence import SequenceConfig, SequenceModel
from models.svd import SVDConfig, SVDItemItem, recency_weights
from tests.test_bundle import tiny_bundle_root, tiny_fusion  # noqa: F401  (fixtures)


@pytest.fixture(scope="module")
def bundle(tiny_bundle_root: Path) -> Bundle:  # noqa: F811
    return load(tiny_bundle_root)


@pytest.fixture(scope="module")
def rec(bundle: Bundle) -> HybridRecommender:
    return HybridRecommender(bundle)


def history_of(bundle: Bundle, user_id: str) -> np.ndarray:
    row = bundle.users.row(user_id)
    return bundle.seen.indices[bundle.seen.indptr[row] : bundle.seen.indptr[row + 1]]


def genres_of(bundle: Bundle, row: int) -> list[str]:
    return as_list(bundle.items_table.genres[row])


def short(title: str) -> str:
    return re.sub(r"\s*\(\d{4}\)$", "", title)


def check_path(bundle: Bundle, expl: Explanation, user_row: int | None, history: np.ndarray) -> None:
    path = expl.graph_path
    assert path is not None and len(path) == 4
    assert [p.kind for p in path] == ["user", "item", "user", "item"]
    assert path[0].label == "you" and path[0].id == expl.user_id and path[-1].id == expl.item_id
    seen_item = bundle.items.row(path[1].id)
    other = bundle.users.row(path[2].id)
    assert seen_item in history, "the first hop is an item the user saw"
    other_items = bundle.seen.indices[bundle.seen.indptr[other] : bundle.seen.indptr[other + 1]]
    assert seen_item in other_items and bundle.items.row(expl.item_id) in other_items
    assert other != user_row


def test_explanation_of_a_top_recommendation(bundle: Bundle, rec: HybridRecommender):
    recs = rec.recommend("1", 5, variant="tuned", explain=True)
    history = history_of(bundle, "1")
    for item in recs.items:
        expl = item.explanation
        assert expl.item_id == item.item_id and expl.user_id == "1"
        # contributions: the same split as the recommendation, adding up to its score
        assert expl.score == pytest.approx(item.score, abs=1e-4)
        assert sum(expl.contributions.values()) == pytest.approx(item.score, abs=1e-4)
        for s, v in item.contributions.items():
            assert expl.contributions[s] == pytest.approx(v, abs=1e-5)
        assert sum(expl.shares.values()) == pytest.approx(1.0)
        assert expl.main_signal == max(expl.contributions, key=expl.contributions.get)

        # shared genres: the item's genres that appear in the history, most frequent first
        freq = Counter(g for h in history for g in set(genres_of(bundle, h)))
        expected = sorted({g for g in genres_of(bundle, item.item_row) if freq[g]}, key=lambda g: -freq[g])
        assert set(expl.shared_genres) == set(expected) and expl.shared_genres
        assert [freq[g] for g in expl.shared_genres] == sorted((freq[g] for g in expected), reverse=True)
        assert "funny" in expl.shared_tags or "dark" in expl.shared_tags

        # drivers: history items ranked by their terms of the driver signal's folded-in score
        model = bundle.fusion.models[expl.driver_signal]
        rows, parts = model.history_terms(rec.user_state("1", None).history.items)
        assert set(rows.tolist()) == set(history.tolist())
        sims = parts.astype(np.float64) @ np.asarray(model.item_factors_[item.item_row], np.float64)
        top = rows[np.lexsort((rows, -sims))][: len(expl.drivers)]
        assert [bundle.items.row(d.item_id) for d in expl.drivers] == top.tolist()
        assert [d.row for d in expl.drivers] == top.tolist()
        assert all(d.similarity > 0 for d in expl.drivers) and expl.drivers
        assert [d.similarity for d in expl.drivers] == pytest.approx(sims[np.lexsort((rows, -sims))][: len(top)],
                                                                     rel=1e-4, abs=1e-6)

        check_path(bundle, expl, bundle.users.row("1"), history)

        # the sentence says which signal, how much, why, and what is shared
        label = {"als": "collaborative", "lightgcn": "graph", "content": "content", "popularity": "popularity"}
        share = expl.shares[expl.main_signal]
        assert expl.sentence.startswith(f"Recommended mostly for its {label[expl.main_signal]} signal ({share:.0%})")
        assert expl.sentence.endswith(f"; shares {', '.join(expl.shared_genres[:3])} with your history.")


def test_collaborative_sentence_names_the_drivers(rec: HybridRecommender):
    item = rec.recommend("1", 1, variant="als", explain=True).items[0]
    expl = item.explanation
    a, b = (short(d.title) for d in expl.drivers[:2])
    assert expl.driver_signal == "als" and expl.shares["als"] == pytest.approx(1.0)
    assert expl.sentence == (
        f"Recommended for its collaborative signal (100%): people who watched {a} and {b} also watched this; "
        f"shares {', '.join(expl.shared_genres[:3])} with your history."
    )
    assert "(19" not in expl.sentence.split(":")[1], "titles are shown without their year"


@pytest.mark.parametrize(
    ("variant", "phrase"),
    [
        ("content", "it is similar in content to"),
        ("lightgcn", "in the viewing graph"),
        ("popularity", "people watched it)"),
    ],
)
def test_sentence_per_dominant_signal(rec: HybridRecommender, variant: str, phrase: str):
    expl = rec.recommend("1", 1, variant=variant, explain=True).items[0].explanation
    assert expl.main_signal == variant
    assert phrase in expl.sentence


def test_cold_user_explanation(bundle: Bundle, rec: HybridRecommender):
    item = rec.recommend("brand-new", 1, explain=True).items[0]
    expl = item.explanation
    count = int(bundle.items_table.count[item.item_row])
    assert expl.sentence == f"Recommended for its popularity signal (100%): it is popular ({count} people watched it)."
    assert expl.drivers == [] and expl.graph_path is None and expl.shared_genres == []


def test_folded_in_user_explanation(bundle: Bundle, rec: HybridRecommender):
    history = History(np.array([0, 6, 12]))
    recs = rec.recommend("visitor", 3, variant="tuned", history_override=history, explain=True)
    expl = recs.items[0].explanation
    assert expl.drivers and {bundle.items.row(d.item_id) for d in expl.drivers} <= {0, 6, 12}
    check_path(bundle, expl, None, history.items)
    assert expl.graph_path[0].id == "visitor"
    same = rec.explain("visitor", recs.items[0].item_id, variant="tuned", history_override=history)
    assert same.sentence == expl.sentence and same.score == pytest.approx(recs.items[0].score, abs=1e-4)


def _reference_path(bundle: Bundle, user_row: int | None, history: np.ndarray, item_row: int,
                    driver_rows: list[int], max_neighbours: int) -> list[tuple[str, int]] | None:
    """The graph path by networkx over the same 2-hop neighbourhood (the definition the CSR search
    in hybrid/explain.py must reproduce, ties included)."""
    import networkx as nx

    by_item = bundle.seen_by_item
    you, target = ("user", -1 if user_row is None else user_row), ("item", item_row)
    graph = nx.Graph()
    graph.add_node(you)
    graph.add_node(target)
    rank = {r: k for k, r in enumerate(driver_rows)}
    ranked = sorted(history.tolist(), key=lambda h: (rank.get(h, len(rank)), h))
    watchers = np.setdiff1d(by_item.indices[by_item.indptr[item_row] : by_item.indptr[item_row + 1]], [you[1]])
    for k, h in enumerate(ranked[:max_neighbours]):
        graph.add_edge(you, ("item", h), weight=1.0 + 1e-3 * k)
        if h == item_row:
            continue
        co = by_item.indices[by_item.indptr[h] : by_item.indptr[h + 1]]
        for u in np.intersect1d(co, watchers, assume_unique=True)[:max_neighbours].tolist():
            graph.add_edge(("item", h), ("user", u), weight=1.0)
            graph.add_edge(("user", u), target, weight=1.0)
    try:
        return nx.shortest_path(graph, you, target, weight="weight")
    except nx.NetworkXNoPath:
        return None


@pytest.mark.parametrize("max_neighbours", [1, 3, 50])
def test_graph_path_matches_networkx_shortest_path(bundle: Bundle, rec: HybridRecommender, max_neighbours: int):
    from hybrid.explain import explain_pair

    cases = [(u, bundle.users.row(u), history_of(bundle, u)) for u in bundle.users.ids[:12]]
    cases.append(("visitor", None, np.array([0, 6, 12, 3])))
    checked = direct = none = 0
    for user_id, user_row, history in cases:
        state = rec.user_state(user_id, None if user_row is not None else History(history))
        query = rec.blend(state)[2]
        for item_row in range(len(bundle.items)):
            expl = explain_pair(bundle, user_id=user_id, user_row=user_row, history=history, query=query,
                                item_row=item_row, max_neighbours=max_neighbours)
            drivers = [bundle.items.row(d.item_id) for d in expl.drivers]
            ref = _reference_path(bundle, user_row, np.unique(history), item_row, drivers, max_neighbours)
            got = expl.graph_path
            if ref is None:
                none += 1
                assert got is None, (user_id, item_row)
                continue
            assert got is not None and len(got) == len(ref), (user_id, item_row)
            assert got[0] == PathStep("user", str(user_id), "you")
            for step, (kind, row) in zip(got[1:], ref[1:], strict=True):
                ids = bundle.items.ids if kind == "item" else bundle.users.ids
                assert (step.kind, step.id) == (kind, str(ids[row])), (user_id, item_row)
            direct += len(ref) == 2
            checked += 1
    assert checked > 50 and checked - direct > 50, "the cases cover 3-hop paths"
    if max_neighbours > 1:
        assert direct > 0, "and direct ones (the item is among the user's first items)"


@pytest.mark.parametrize("variant", ["tuned", "content"])
def test_explain_items_is_explain_pair_per_item(bundle: Bundle, rec: HybridRecommender, variant: str):
    """The batch shares per-user work only: every item, in the history or not, gets explain_pair's answer.

    With the 'content' blend most items are driven by the genre/tag stand-in, whose items with the
    same labels have equal factors: similarities tie, and ties go by history row.
    """
    from hybrid.explain import explain_items, explain_pair

    cases = [(u, bundle.users.row(u), history_of(bundle, u)) for u in bundle.users.ids[:6]]
    cases += [("visitor", None, np.array([12, 0, 6, 0])), ("brand-new", None, np.zeros(0, np.int64))]
    # a history holding an item whose first genre no other item of it has: that genre is not shared
    lone = next(r for r in range(len(bundle.items)) if genres_of(bundle, r))
    genre = genres_of(bundle, lone)[0]
    rest = [r for r in range(len(bundle.items)) if genre not in genres_of(bundle, r)][:5]
    cases.append(("crafted", None, np.array([lone, *rest])))
    in_history = ties = 0
    for user_id, user_row, history in cases:
        state = rec.user_state(user_id, None if user_row is not None else History(history))
        query = rec.blend(state, variant)[2]
        rows = np.random.default_rng(len(history)).permutation(len(bundle.items))
        batch = explain_items(bundle, user_id=user_id, user_row=user_row, history=history, query=query,
                              item_rows=rows, max_neighbours=5)
        assert len(batch) == len(rows)
        for row, got in zip(rows.tolist(), batch, strict=True):
            want = explain_pair(bundle, user_id=user_id, user_row=user_row, history=history, query=query,
                                item_row=row, max_neighbours=5)
            assert got.contributions == pytest.approx(want.contributions, rel=1e-5, abs=1e-6)
            assert got.score == pytest.approx(want.score, rel=1e-5, abs=1e-6)
            assert (got.main_signal, got.drivers, got.shared_genres, got.shared_tags, got.graph_path, got.sentence) \
                == (want.main_signal, want.drivers, want.shared_genres, want.shared_tags, want.graph_path,
                    want.sentence), (user_id, row)
            in_history += row in history
            # and the evidence is the item's own: drivers and shared genres from the rest of the history
            others = np.setdiff1d(history, [row])
            freq = Counter(g for h in others for g in set(genres_of(bundle, h)))
            assert sorted(got.shared_genres) == sorted({g for g in genres_of(bundle, row) if freq[g]})
            assert [freq[g] for g in got.shared_genres] == sorted((freq[g] for g in got.shared_genres), reverse=True)
            if got.driver_signal is not None and len(others):
                # each other history item's term of the signal's folded-in score
                model = bundle.fusion.models[got.driver_signal]
                factors = np.asarray(model.item_factors_, dtype=np.float32)
                term_rows, parts = model.history_terms(history)
                others, parts = term_rows[term_rows != row], parts[term_rows != row]
                sims = parts.astype(np.float64) @ factors[row].astype(np.float64)
                floor = 1e-6 * np.linalg.norm(factors[row]) * np.linalg.norm(parts, axis=1).max()
                order = np.lexsort((others, -sims))[: min(3, int((sims > floor).sum()))]
                assert [bundle.items.row(d.item_id) for d in got.drivers] == others[order].tolist(), (user_id, row)
                assert [d.similarity for d in got.drivers] == pytest.approx(sims[order].tolist(), rel=1e-6)
                ties += len(np.unique(sims[order])) < len(order)
    if variant == "content":
        assert ties > 50, "tied similarities are covered"
    assert genre not in batch[rows.tolist().index(lone)].shared_genres  # batch: the last case's
    assert in_history > 10, "items of the history are explained too (left out of their own evidence)"
    assert explain_items(bundle, user_id="1", user_row=0, history=history_of(bundle, "1"), query=query,
                         item_rows=[]) == []


# -- svd, sequence, content: drivers are the history's own terms of the signal's score----------------
GENRES = ("Drama", "Comedy", "Action", "Horror", "Romance")


def chain_source(n_users: int = 80, n_items: int = 30, per_user: int = 10, seed: int = 0,
                 varied: bool = False) -> RawSource:
    """Histories of random items, where in every other one item 1 is followed at once by item 2: that
    pair co-occurs and follows far more often than any other. ``varied``: items carry two of five
    genres and a tag of three (else every item is a Drama without tags)."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        seq = [str(i) for i in rng.choice(np.arange(3, n_items + 1), size=per_user, replace=False)]
        if u % 2 == 0:
            at = int(rng.integers(0, per_user - 3))
            seq[at:at] = ["1", "2"]
        rows += [(str(u + 1), i, 4.0, 1_000_000 + u * 1000 + t) for t, i in enumerate(seq)]
    items = pd.DataFrame({
        "item_id": [str(i) for i in range(1, n_items + 1)],
        "title": [f"Film {i} (2001)" for i in range(1, n_items + 1)],
        "genres": [[GENRES[i % 5], GENRES[(i // 5) % 5]] for i in range(1, n_items + 1)] if varied
        else [["Drama"]] * n_items,
        "tags": [[f"tag{i % 3}"] for i in range(1, n_items + 1)] if varied else [[]] * n_items,
        "year": pd.array([2001] * n_items, dtype="Int64"),
    })  # fmt: skip
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "value", "timestamp"])
    return RawSource(name="chain", interactions=dd.from_pandas(frame, npartitions=2), items=items,
                     value_range=(0.5, 5.0), numeric_ids=True)


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory, client: Client) -> HybridRecommender:
    """A bundle of the svd and sequence signals (and popularity) fit on ``chain_source``."""
    root = tmp_path_factory.mktemp("chain")
    with dask.config.set(scheduler="sync"):
        ingest(chain_source(), root / "dataset")
    dataset = Dataset.open(root / "dataset")
    data = TrainData(dataset, "train")
    options = TrainingOptions(client=client, seed=0)
    models = {
        "svd": SVDItemItem(SVDConfig(factors=12, shrinkage=1.0)).fit(data, options),
        "sequence": SequenceModel(SequenceConfig(factors=12)).fit(data, options),
        "popularity": Popularity().fit(data, options),
    }
    fusion = Fusion.fit_scales(models, dataset.matrix("test"))
    weights = {"svd": 1.0, "sequence": 1.0, "popularity": 0.1}
    publish(root / "bundles", fusion, dataset, weights=weights, variants=Variants(fusion.signals, weights),
            metrics={}, params={})
    return HybridRecommender(load(root / "bundles"))


@pytest.fixture(scope="module")
def content_chain(tmp_path_factory: pytest.TempPathFactory, client: Client) -> HybridRecommender:
    """A bundle of the content signal (and popularity) fit on ``chain_source`` with varied genres and tags."""
    root = tmp_path_factory.mktemp("content-chain")
    with dask.config.set(scheduler="sync"):
        ingest(chain_source(varied=True), root / "dataset")
    dataset = Dataset.open(root / "dataset")
    data = TrainData(dataset, "train")
    options = TrainingOptions(client=client, seed=0)
    models = {"content": ContentModel(ContentConfig()).fit(data, options), "popularity": Popularity().fit(data, options)}
    fusion = Fusion.fit_scales(models, dataset.matrix("test"))
    weights = {"content": 1.0, "popularity": 0.1}
    publish(root / "bundles", fusion, dataset, weights=weights, variants=Variants(fusion.signals, weights),
            metrics={}, params={})
    return HybridRecommender(load(root / "bundles"))


def pulls_by_definition(bundle, signal: str, ordered: np.ndarray, item_row: int) -> dict[int, float]:
    """Each history item's term w_j <p_j, i_item> of the signal's score, from the models' own
    definitions: svd weighs every distinct item by recency at its newest position (models/svd.py),
    sequence each of the last ``window`` positions by 0.5 ** (age / half_life) (models/sequence.py),
    content every position by 0.5 ** (age / half_life) over the sum of those weights, with its unit
    TF-IDF rows as p_j (models/content.py). i_item is the served item vector: the signal's slice of
    the fused vector over its scale (float32 rounding apart, the model's item factors)."""
    model, scale = bundle.fusion.models[signal], bundle.fusion.scales[signal]
    weights: dict[int, float] = {}
    for pos, j in enumerate(ordered.tolist()):
        age = len(ordered) - 1 - pos
        if signal == "svd":  # a later position overwrites: the newest counts
            weights[j] = float(recency_weights(np.array([age]), model.config)[0])
        elif signal == "content" or age < model.config.window:
            weights[j] = weights.get(j, 0.0) + 0.5 ** (age / model.config.half_life)
    if signal == "svd":  # count^-beta V diag(s^2 / (s^2 + shrinkage)), with the item vectors count^gamma V
        cfg, sigma = model.config, model.singular_values_.astype(np.float64)
        lift = np.maximum(model.item_counts_.astype(np.float64), 1.0) ** -(cfg.input_exponent + cfg.output_exponent)
        rows = model.item_factors_ * lift[:, None] * (sigma**2 / (sigma**2 + cfg.shrinkage))[None, :]
    else:
        rows = model.embedding_ if signal == "content" else model.projection_
    if signal == "content":
        total = sum(0.5 ** (age / model.config.half_life) for age in range(len(ordered))) + model.config.shrink
        weights = {j: w / total for j, w in weights.items()}
    item = np.asarray(bundle.index.columns(bundle.fusion.slices[signal])[item_row], np.float64) / scale
    np.testing.assert_allclose(item, model.item_factors_[item_row], rtol=1e-5, atol=1e-6)
    return {j: w * float(np.asarray(rows[j], np.float64) @ item) for j, w in weights.items()}


@pytest.mark.parametrize("signal, fixture", [("svd", "chain"), ("sequence", "chain"), ("content", "content_chain")])
def test_drivers_are_the_largest_terms_of_the_signal_score(signal: str, fixture: str, request: pytest.FixtureRequest):
    chain: HybridRecommender = request.getfixturevalue(fixture)
    bundle = chain.bundle
    model, scale = bundle.fusion.models[signal], bundle.fusion.scales[signal]
    rng = np.random.default_rng(3)
    users = [(str(u), None) for u in bundle.users.ids[:8]]
    users += [("visitor", History(rng.choice(len(bundle.items), 12))), ("repeats", History(np.array([4, 9, 4, 0, 9])))]
    explained = 0
    for user_id, override in users:
        state = chain.user_state(user_id, override)
        ordered = state.history.items
        scores = np.asarray(state.parts[signal], np.float64) @ np.asarray(model.item_factors_, np.float64).T
        rows, parts = model.history_terms(ordered)
        np.testing.assert_allclose((parts @ np.asarray(model.item_factors_).T).sum(axis=0), scores, atol=1e-4)
        recs = chain.recommend(user_id, 4, weights={signal: 1.0}, history_override=override, explain=True)
        for item in recs.items:
            expl = item.explanation
            assert expl.main_signal == expl.driver_signal == signal
            pulls = pulls_by_definition(bundle, signal, ordered, item.item_row)
            # the terms add up to the signal's score, which the explanation's contribution scales
            assert sum(pulls.values()) == pytest.approx(scores[item.item_row], abs=1e-4)
            assert sum(pulls.values()) * scale == pytest.approx(expl.contributions[signal], rel=1e-3, abs=1e-4)
            # and the drivers are the largest positive ones, best first, up to the float32 rounding
            # of the stored vectors and terms (~1e-7 relative), which may order two pulls that
            # close either way (exact ties go by row: test_explain_items_is_explain_pair_per_item)
            top = sorted((pulls[j] for j in pulls if pulls[j] > 1e-6), reverse=True)[:3]
            tol = 1e-6 * max(abs(v) for v in pulls.values())
            got = [bundle.items.row(d.item_id) for d in expl.drivers]
            assert len(got) == len(set(got)) == len(top), (user_id, item.item_row)
            for d, j, best in zip(expl.drivers, got, top, strict=True):
                assert pulls[j] == pytest.approx(best, abs=tol), (user_id, item.item_row, j)
                assert d.similarity == pytest.approx(pulls[j], rel=1e-4, abs=1e-6)
            explained += bool(top)
    assert explained > 20
    if signal == "sequence":  # only the last window items drive
        assert set(model.history_terms(np.arange(12))[0].tolist()) == set(range(12 - model.config.window, 12))


def test_constructed_strongest_driver(chain: HybridRecommender):
    """Item 1 is what goes with item 2, and what comes right before it: it drives item 2 in both signals,
    in sequence only while it is among the last five items."""
    bundle = chain.bundle
    rows = lambda *ids: History(np.array([bundle.items.row(str(i)) for i in ids]))  # noqa: E731

    def explain(signal: str, history: History) -> Explanation:
        return chain.explain("visitor", "2", weights={signal: 1.0}, history_override=history)

    for signal, words in (("svd", "item-item signal (100%): people who watched Film 1 and "),
                          ("sequence", "what-comes-next signal (100%): it is often watched after Film 1 and ")):
        expl = explain(signal, rows(5, 6, 1, 7, 8))
        assert expl.driver_signal == signal and expl.drivers[0].item_id == "1"
        assert expl.drivers[0].similarity > 2 * expl.drivers[1].similarity
        assert f"Recommended for its {words}" in expl.sentence
    old = rows(1, 5, 6, 7, 8, 9)  # item 1 six items back
    assert "1" not in [d.item_id for d in explain("sequence", old).drivers]
    assert "1" in [d.item_id for d in explain("svd", old).drivers]
    # popularity leading: the drivers come from the first driver signal the bundle has
    assert explain("popularity", rows(5, 6, 1, 7, 8)).driver_signal == "svd"


def test_rows_outside_the_catalogue_are_refused(bundle: Bundle, rec: HybridRecommender):
    """The drivers' kernel reads rows unchecked: bad rows are refused first, and named."""
    from hybrid.explain import explain_items

    n = len(bundle.items)
    query = rec.blend(rec.user_state("1"), "tuned")[2]
    for history, rows, name in (([0, n + 3], [1], "history"), ([0, -2], [1], "history"), ([0], [1, n], "item_rows"),
                                ([0], [-1], "item_rows")):
        with pytest.raises(ValueError, match=rf"{name} has item rows outside \[0, {n}\)"):
            explain_items(bundle, user_id="1", user_row=0, history=np.array(history), query=query, item_rows=rows)


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="reads /proc/self/smaps (Linux)")
def test_serving_reads_item_vectors_from_the_fused_ones_only(chain: HybridRecommender, tmp_path: Path):
    """Explained recommendations and fold-ins read no page of the signals' factor files: their
    item vectors come from the bundle's fused vectors (Bundle binds FactorModel.read_items_from),
    and svd's fold-in rows are derived from them, not stored."""
    import shutil

    from tests.test_index import _resident_kib

    copy = shutil.copytree(chain.bundle.path, tmp_path / chain.bundle.path.name)  # mapped by this test only
    chain = HybridRecommender(load(copy))
    bundle = chain.bundle
    folder = bundle.path / "signals"
    assert not (folder / "svd" / "projection.npy").exists()
    for user_id in bundle.users.ids[:8]:
        chain.recommend(str(user_id), 4, explain=True)
        chain.recommend(str(user_id), 4, weights={"svd": 1.0}, explain=True)
    chain.recommend("visitor", 4, history_override=History(np.array([3, 1, 4, 1, 5])), explain=True)
    assert _resident_kib(bundle.path / "item_vectors.npy") > 0  # the reads went there
    for signal in ("svd", "sequence"):
        assert _resident_kib(folder / signal / "item_factors.npy") == 0, signal
    for signal in ("svd", "sequence"):  # (this reads the files)
        model = bundle.fusion.models[signal]
        np.testing.assert_allclose(model.item_rows(np.arange(len(bundle.items))), model.item_factors_,
                                   rtol=1e-6, atol=1e-7)


def test_lowest_common_is_the_lowest_shared_value_but_the_skipped_one():
    from hybrid.explain import lowest_common

    rng = np.random.default_rng(3)
    for trial in range(300):
        a = np.unique(rng.integers(0, 5000, rng.integers(0, 400)))
        b = np.unique(rng.integers(0, 5000, rng.integers(0, 3000)))
        skip = int(rng.choice(a)) if len(a) and trial % 2 else None
        both = np.intersect1d(a, b)
        both = both[both != skip] if skip is not None else both
        expected = int(both[0]) if len(both) else None
        assert lowest_common(a, b, skip) == expected
        assert lowest_common(b, a, skip) == expected
    assert lowest_common(np.array([], np.int32), np.array([1, 2], np.int32)) is None
