"""The model bundle: publish/load round trip, atomic publish, list/rollback, load validation, URL roots.

Also home of the small deterministic signals the hybrid tests share (an SVD stand-in for the
collaborative signals, a genre/tag one-hot stand-in for content), so that bundle, recommender and
explanation tests run without training the real models.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import fsspec
import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.linalg import svds

from etl.dataset import Dataset
from etl.errors import BundleError
from hybrid import bundle as bundle_mod
from hybrid.bundle import latest_version, list_bundles, load, publish, rollback
from hybrid.fusion import Fusion
from hybrid.index import FusedIndex, IndexConfig
from hybrid.item_table import as_list
from hybrid.manifest import Manifest, TrainingFacts
from hybrid.variants import Variants
from models.base import FactorModel, TrainData, TrainingOptions, register
from models.popularity import Popularity

TUNED = {"als": 1.0, "content": 0.3, "lightgcn": 0.6, "popularity": 0.2}
METRICS = {"ndcg@10": 0.12, "recall@10": 0.06}


# -- stand-in signals -----------------------------------------------------------------------------
@dataclass
class SVDConfig:
    """Truncated SVD of the binary interaction matrix."""

    factors: int = 8


@register
class SVDFactors(FactorModel):
    """user = R V, item = V: score is the rank-k reconstruction; fold-in is exact (x = r V)."""

    kind = "test_svd"
    Config = SVDConfig

    def _fit(self, data: TrainData, options: TrainingOptions) -> None:
        binary = (data.matrix() > 0).astype(np.float64)
        _, _, vt = svds(binary, k=self.config.factors, random_state=options.seed)
        self.item_factors_ = np.ascontiguousarray(vt.T, dtype=np.float32)
        self.user_factors_ = np.asarray(binary @ vt.T, dtype=np.float32)

    def fold_in(self, items: np.ndarray, values: np.ndarray | None = None) -> np.ndarray:
        items = np.unique(np.asarray(items, dtype=np.int64))
        return np.asarray(self.item_factors_[items].sum(axis=0), dtype=np.float32)

    def history_terms(self, items: np.ndarray, values: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        items = np.unique(np.asarray(items, dtype=np.int64))
        return items, np.asarray(self.item_factors_[items], dtype=np.float32).reshape(len(items), self.dim)


@dataclass
class GenreConfig:
    """One-hot genres and tags per item (a stand-in for TF-IDF content)."""


@register
class GenreFactors(FactorModel):
    """item = unit one-hot of its genres and tags; user = weighted mean of its items."""

    kind = "test_genre"
    Config = GenreConfig

    def _fit(self, data: TrainData, options: TrainingOptions) -> None:
        table = data.dataset.items_table
        terms = sorted({t for col in ("genres", "tags") for cell in table[col] for t in as_list(cell)})
        col = {t: j for j, t in enumerate(terms)}
        items = np.zeros((len(table), len(terms)), dtype=np.float32)
        for i, (g, t) in enumerate(zip(table["genres"], table["tags"], strict=True)):
            for term in [*as_list(g), *as_list(t)]:
                items[i, col[term]] = 1.0
        items /= np.maximum(np.linalg.norm(items, axis=1, keepdims=True), 1e-12)
        self.item_factors_ = items
        seen = self.seen_
        users = np.zeros((seen.shape[0], items.shape[1]), dtype=np.float32)
        for u in range(seen.shape[0]):
            lo, hi = seen.indptr[u], seen.indptr[u + 1]
            users[u] = self.fold_in(seen.indices[lo:hi], seen.data[lo:hi])
        self.user_factors_ = users

    def fold_in(self, items: np.ndarray, values: np.ndarray | None = None) -> np.ndarray:
        items = np.asarray(items, dtype=np.int64)
        if items.size == 0:
            return np.zeros(self.item_factors_.shape[1], dtype=np.float32)
        w = np.ones(items.size) if values is None else np.asarray(values, dtype=np.float64)
        return np.asarray(w @ self.item_factors_[items] / w.sum(), dtype=np.float32)

    def history_terms(self, items: np.ndarray, values: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        items = np.asarray(items, dtype=np.int64)
        w = np.ones(items.size) if values is None else np.asarray(values, dtype=np.float64)
        rows, at = np.unique(items, return_inverse=True)
        weights = np.bincount(at, weights=w / w.sum(), minlength=rows.size) if items.size else np.zeros(0)
        return rows, (weights[:, None] * self.item_factors_[rows]).astype(np.float32).reshape(len(rows), self.dim)


def make_fusion(dataset: Dataset) -> Fusion:
    data = TrainData(dataset, "train")
    models = {
        "als": SVDFactors(SVDConfig(8)).fit(data),
        "content": GenreFactors().fit(data),
        "lightgcn": SVDFactors(SVDConfig(5)).fit(data),
        "popularity": Popularity().fit(data),
    }
    return Fusion.fit_scales(models, dataset.matrix("test"))


def publish_tiny(root: Path, dataset: Dataset, fusion: Fusion, version: str | None = None, **kwargs) -> Path:
    variants = kwargs.pop("variants", None) or Variants(
        fusion.signals,
        TUNED,
        {"als_heavy": {"weights": {"als": 2.0, "popularity": 0.2}}},
        {"tuned": 0.8, "als_heavy": 0.2},
    )
    return publish(
        root,
        fusion,
        dataset,
        weights=TUNED,
        variants=variants,
        metrics=METRICS,
        params={"als": {"note": "svd stand-in"}, "seed": 0},
        version=version,
        **kwargs,
    )


@pytest.fixture(scope="module")
def tiny_fusion(tiny_dataset: Dataset) -> Fusion:
    return make_fusion(tiny_dataset)


@pytest.fixture(scope="module")
def tiny_bundle_root(tiny_dataset: Dataset, tiny_fusion: Fusion, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bundles")
    publish_tiny(root, tiny_dataset, tiny_fusion, version="v1")
    return root


# -- tests ------------------------------------------------------------------------------------------
def test_publish_and_load_round_trip(tiny_dataset: Dataset, tiny_fusion: Fusion, tiny_bundle_root: Path):
    root = tiny_bundle_root
    assert latest_version(root) == "v1" and (root / "latest").is_symlink()
    folder = root / "v1"
    files = ["manifest.json", "items.json", "item_vectors.npy", "index.usearch", "history.npz"]
    files += ["vocab/users.json", "vocab/items.json", *(f"signals/{s}/model.json" for s in tiny_fusion.signals)]
    for name in files:
        assert (folder / name).exists(), name
    assert not [p for p in folder.rglob("*") if p.suffix in (".pkl", ".pickle", ".parquet")]
    # the models hold their parameters only; what they were fit on is the bundle's one copy
    for s in tiny_fusion.signals:
        assert not {"seen.npz", "users.json", "items.json"} & {p.name for p in (folder / "signals" / s).iterdir()}
    with pytest.raises(ValueError, match="parameters only"):
        FactorModel.load(folder / "signals" / "als")
    loaded = load(root)
    seen = {id(m.seen_) for m in loaded.fusion.models.values()} | {id(loaded.seen)}
    assert len(seen) == 1 and (loaded.seen != tiny_dataset.matrix("train")).nnz == 0 and loaded.seen.has_sorted_indices

    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["version"] == "v1" and manifest["created_at"]
    assert manifest["dataset"]["content_hash"] == tiny_dataset.manifest["content_hash"]
    assert (manifest["n_users"], manifest["n_items"]) == (tiny_dataset.n_users, tiny_dataset.n_items)
    assert manifest["signal_order"] == ["als", "content", "lightgcn", "popularity"]
    assert manifest["dim"] == tiny_fusion.dim
    assert manifest["signals"]["als"]["dim"] == 8 and manifest["signals"]["als"]["config"] == {"factors": 8}
    assert manifest["signals"]["als"]["scale"] == pytest.approx(tiny_fusion.scales["als"])
    assert manifest["signals"]["als"]["params"] == {"note": "svd stand-in"} and manifest["params"] == {"seed": 0}
    assert manifest["weights"] == TUNED and manifest["metrics"] == METRICS
    assert set(manifest["variants"]["variants"]) >= {"tuned", "als", "content", "lightgcn", "popularity", "als_heavy"}
    assert (manifest["index"]["metric"], manifest["index"]["dtype"]) == ("ip", "f16")  # hybrid.index.GRAPH_DTYPE

    b = load(root)
    assert b.version == "v1" and b.path == folder.resolve()
    assert b.index.mapped and isinstance(b.index.vectors, np.memmap)
    assert isinstance(b.fusion.models["als"].item_factors_, np.memmap)
    np.testing.assert_allclose(b.fusion.item_vectors(), tiny_fusion.item_vectors(), rtol=1e-6)
    assert b.users == tiny_dataset.users and b.items == tiny_dataset.items
    assert b.items_table.title.tolist() == tiny_dataset.items_table["title"].fillna("").tolist()
    assert (b.seen != tiny_dataset.matrix("train")).nnz == 0
    assert b.variants.traffic == {"als_heavy": 0.2, "tuned": 0.8}
    assert b.weights == TUNED
    q = tiny_fusion.query(tiny_fusion.user_parts(np.array([0])), TUNED)[0]
    fresh = FusedIndex.build(tiny_fusion.item_vectors())
    assert b.index.search(q, 10)[0].tolist() == fresh.search(q, 10)[0].tolist()


def test_the_index_lives_in_a_graph_space_fit_for_the_tuned_blend(tiny_dataset, tiny_fusion, tiny_bundle_root, tmp_path):
    """The published graph holds each item's fused vector mapped into the graph space (its file and
    build time named in the manifest); search answers rank from the fused vectors as before, and a
    bundle without a space (graph_share None, or published before spaces) still loads and answers."""
    from hybrid.graph_space import GraphSpace, weighted_shares

    manifest = json.loads((tiny_bundle_root / "v1" / "manifest.json").read_text())
    assert manifest["index"]["space_file"] == "graph_space.npz" and manifest["index"]["build_seconds"] > 0
    b = load(tiny_bundle_root)
    space = GraphSpace.load(tiny_bundle_root / "v1" / "graph_space.npz")
    assert b.index.space is not None and b.index.graph.ndim == space.width < tiny_fusion.dim
    assert b.index.dim == tiny_fusion.dim
    shares = weighted_shares(TUNED, 0.999, 0.8)
    assert shares["als"] == pytest.approx(0.999) and all(0.8 <= v <= 1.0 for v in shares.values())
    assert set(space.dims) == set(tiny_fusion.signals) and max(space.loss(np.eye(tiny_fusion.dim))) <= 0.2 + 1e-6
    queries = tiny_fusion.query(tiny_fusion.user_parts(np.arange(tiny_dataset.n_users)), TUNED)
    vectors = tiny_fusion.item_vectors()
    exact = np.sort(queries @ vectors.T, axis=1)[:, ::-1][:, :5]
    # through the graph: a catalogue this small is otherwise ranked exactly
    b.index.config = IndexConfig(exact_count=0, exact_share=0.0, min_active_share=0.0, overfetch=2,
                                 expansion_search=10)  # a fetch of 10, not beyond a quarter of 42 items
    rows, scores = b.index.search(queries, 5)
    assert b.index.stats["hnsw"] == len(queries)
    np.testing.assert_allclose(scores, exact, rtol=1e-5, atol=1e-5)

    broken = tmp_path / "wrong-dims"  # a space of other signals' widths
    shutil.copytree(tiny_bundle_root / "v1", broken)
    dims = list(space.dims.values())
    moved = [1, *dims[1:-1], dims[-1] + dims[0] - 1]  # the same total width, cut elsewhere
    other = GraphSpace(space.item_map, space.query_map, space.widths, dict(zip(space.dims, moved, strict=True)),
                       space.kept, space.gains)
    other.save(broken / "graph_space.npz")
    with pytest.raises(BundleError, match="graph_space.npz maps signals"):
        load(broken)

    plain = publish_tiny(tmp_path / "plain", tiny_dataset, tiny_fusion, version="v1",
                         index_config=IndexConfig(graph_share=None))
    assert json.loads((plain / "manifest.json").read_text())["index"]["space_file"] is None
    assert not (plain / "graph_space.npz").exists()
    p = load(tmp_path / "plain")
    assert p.index.space is None and p.index.graph.ndim == tiny_fusion.dim
    np.testing.assert_allclose(p.index.search(queries, 5)[1], exact, rtol=1e-5, atol=1e-5)


def test_a_bundle_with_parquet_tables_written_before_still_loads(tiny_dataset, tiny_fusion, tmp_path):
    import pandas as pd

    folder = Path(publish_tiny(tmp_path, tiny_dataset, tiny_fusion, version="v1"))
    new = load(tmp_path)
    for name, vocab in (("users", tiny_dataset.users), ("items", tiny_dataset.items)):  # the format before
        (folder / "vocab" / f"{name}.json").unlink()
        pd.DataFrame({"id": pd.Series(vocab.ids, dtype="string"), "row": np.arange(len(vocab))}).to_parquet(
            folder / "vocab" / f"{name}.parquet", index=False)
    (folder / "items.json").unlink()
    tiny_dataset.items_table.to_parquet(folder / "items.parquet", index=False)

    old = load(tmp_path)
    assert old.users == new.users and old.items == new.items
    for column in ("item_id", "title", "year", "count", "mean_rating", "added"):
        np.testing.assert_array_equal(getattr(old.items_table, column), getattr(new.items_table, column))
    assert old.items_table.genres == new.items_table.genres and old.items_table.tags == new.items_table.tags
    assert any(new.items_table.genres) and np.isnan(new.items_table.mean_rating).sum() < len(new.items_table)


def test_failed_publish_leaves_latest_alone(tiny_dataset, tiny_fusion, tmp_path, monkeypatch):
    publish_tiny(tmp_path, tiny_dataset, tiny_fusion, version="v1")
    before = load(tmp_path)

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(bundle_mod.FusedIndex, "build", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        publish_tiny(tmp_path, tiny_dataset, tiny_fusion, version="v2")
    assert latest_version(tmp_path) == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "v1"], "no v2 and no temporary folder left"
    assert [b.version for b in list_bundles(tmp_path)] == ["v1"]
    assert load(tmp_path).version == "v1"
    # a reader that loaded v1 before keeps serving it
    assert len(before.index.search(np.ones(before.index.dim, np.float32), 3)[0]) == 3


def test_list_and_rollback(tiny_dataset, tiny_fusion, tmp_path):
    assert list_bundles(tmp_path) == [] and latest_version(tmp_path) is None
    publish_tiny(tmp_path, tiny_dataset, tiny_fusion, version="v1")
    auto = publish_tiny(tmp_path, tiny_dataset, tiny_fusion).name  # a timestamp version
    infos = list_bundles(tmp_path)
    assert [b.version for b in infos] == ["v1", auto]
    assert [b.is_latest for b in infos] == [False, True] and infos[0].metrics == METRICS
    assert load(tmp_path).version == auto

    rollback(tmp_path, "v1")
    assert latest_version(tmp_path) == "v1" and load(tmp_path).version == "v1"
    assert [b.is_latest for b in list_bundles(tmp_path)] == [True, False]
    rollback(tmp_path, auto)
    assert latest_version(tmp_path) == auto

    with pytest.raises(BundleError, match=r"no bundle version 'v9'.*published: \['v1'"):
        rollback(tmp_path, "v9")
    with pytest.raises(BundleError, match="already exists"):
        publish_tiny(tmp_path, tiny_dataset, tiny_fusion, version="v1")
    for bad in ("latest", "../escape", ".hidden", ""):
        with pytest.raises(ValueError, match="bad bundle version"):
            publish_tiny(tmp_path, tiny_dataset, tiny_fusion, version=bad)


def test_publish_checks_inputs(tiny_dataset, tiny_fusion, tmp_path):
    wrong = Variants(tiny_fusion.signals, {"als": 1.0})
    with pytest.raises(BundleError, match="variant 'tuned'"):
        publish_tiny(tmp_path, tiny_dataset, tiny_fusion, version="v1", variants=wrong)
    assert list_bundles(tmp_path) == []


@pytest.fixture
def broken_copy(tiny_bundle_root: Path, tmp_path: Path):
    """A fresh copy of the published v1 to damage."""

    def make() -> Path:
        dst = tmp_path / f"copy{len(list(tmp_path.iterdir()))}"
        shutil.copytree(tiny_bundle_root / "v1", dst)
        return dst

    return make


def _edit_manifest(folder: Path, edit) -> None:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def test_load_validation_names_the_problem(broken_copy, tmp_path):
    b = broken_copy()
    (b / "index.usearch").unlink()
    with pytest.raises(BundleError, match="missing index.usearch"):
        load(b)

    b = broken_copy()
    (b / "graph_space.npz").write_bytes(b"torn")
    with pytest.raises(BundleError, match="graph_space.npz: .*not a readable graph space"):
        load(b)

    b = broken_copy()
    _edit_manifest(b, lambda m: m["index"].update(space_file=None))  # the graph is not the fused width
    with pytest.raises(BundleError, match="index.usearch: vectors have shape"):
        load(b)

    b = broken_copy()
    shutil.rmtree(b / "signals" / "content")
    with pytest.raises(BundleError, match="missing signals/content/"):
        load(b)

    b = broken_copy()
    _edit_manifest(b, lambda m: m.update(dim=m["dim"] + 1))
    with pytest.raises(BundleError, match="fused dim"):
        load(b)

    b = broken_copy()
    _edit_manifest(b, lambda m: m["signals"]["als"].update(dim=9))
    with pytest.raises(BundleError, match="signal 'als' has dim 8, manifest says 9"):
        load(b)

    b = broken_copy()
    _edit_manifest(b, lambda m: m.update(n_items=m["n_items"] + 1))
    with pytest.raises(BundleError, match="items"):
        load(b)

    b = broken_copy()
    vectors = np.load(b / "item_vectors.npy")
    np.save(b / "item_vectors.npy", vectors[:, :-1])
    with pytest.raises(BundleError, match=r"item_vectors.npy has shape"):
        load(b)

    b = broken_copy()
    (b / "index.usearch").write_bytes(b"\0" * 64)
    with pytest.raises(BundleError, match="index.usearch"):
        load(b)

    b = broken_copy()
    (b / "history.npz").write_bytes(b"junk")
    with pytest.raises(BundleError, match="history.npz"):
        load(b)

    b = broken_copy()
    (b / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load(b)

    b = broken_copy()
    _edit_manifest(b, lambda m: m.pop("weights"))
    with pytest.raises(BundleError, match="lacks 'weights'"):
        load(b)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BundleError, match="neither a bundle version"):
        load(empty)
    os.symlink("gone", empty / "latest")
    with pytest.raises(BundleError, match="points at 'gone'"):
        load(empty)


def test_load_without_mmap(tiny_bundle_root: Path):
    b = load(tiny_bundle_root / "v1", mmap=False)
    assert not b.index.mapped and not isinstance(b.index.vectors, np.memmap)
    assert sp.issparse(b.seen) and b.seen.shape == (len(b.users), len(b.items))


# -- the manifest and what the signals were fit on -----------------------------------------------
def test_the_manifest_records_what_the_signals_were_fit_on(tiny_dataset: Dataset, tiny_bundle_root: Path):
    raw = json.loads((tiny_bundle_root / "v1" / "manifest.json").read_text())
    manifest = Manifest.from_dict(raw)
    assert manifest.to_dict() == raw, "the typed manifest writes back exactly what it read"
    b = load(tiny_bundle_root)
    assert b.manifest.to_dict() == raw and b.manifest.signal_order == tuple(b.signals)
    assert {m.split_ for m in b.fusion.models.values()} == {"train"}
    train = tiny_dataset.load("train")
    newest = int(train["timestamp"].max())
    assert newest < int(tiny_dataset.load("test")["timestamp"].max()), "the test split's tail is newer"
    assert manifest.training == TrainingFacts(split="train", interactions=len(train), cutoff=newest)
    assert b.events_cutoff == float("-inf") and manifest.dataset.events is None  # no API events in this data
    with np.load(tiny_bundle_root / "v1" / "history.npz", allow_pickle=False) as z:
        assert (str(z["split"]), int(z["cutoff"]), float(z["events_cutoff"])) == ("train", newest, float("-inf"))


def test_a_bundle_of_signals_fit_on_the_tuning_split_says_so(tiny_dataset: Dataset, tmp_path: Path):
    """The split comes from the models (``FactorModel.split_``), not from comparing counts."""
    data = TrainData(tiny_dataset, "fit")
    models = {"als": SVDFactors(SVDConfig(8)).fit(data), "popularity": Popularity().fit(data)}
    fusion = Fusion.fit_scales(models, tiny_dataset.matrix("validation"))
    weights = {"als": 1.0, "popularity": 0.2}
    publish(tmp_path, fusion, tiny_dataset, weights=weights, variants=Variants(fusion.signals, weights), metrics={},
            params={}, version="fit")
    b = load(tmp_path)
    assert b.manifest.training is not None and b.manifest.training.split == "fit"
    assert b.manifest.training.interactions == tiny_dataset.count("fit") == b.seen.nnz
    assert (b.seen != tiny_dataset.matrix("fit")).nnz == 0

    models["popularity"] = Popularity().fit(TrainData(tiny_dataset, "train"))
    mixed = Fusion(models, dict(fusion.scales))
    with pytest.raises(BundleError, match=r"one split.*'als': 'fit', 'popularity': 'train'"):
        publish(tmp_path, mixed, tiny_dataset, weights=weights, variants=Variants(fusion.signals, weights), metrics={},
                params={}, version="mixed")
    assert [v.version for v in list_bundles(tmp_path)] == ["fit"]


def test_a_bundle_published_before_the_training_split_was_recorded_loads(tiny_bundle_root: Path, tmp_path: Path):
    """The manifest and history.npz of a bundle published before the split was recorded: no 'training'
    section, no API events recorded, history.npz without metadata. It loads and answers the same."""
    old = tmp_path / "old"
    shutil.copytree(tiny_bundle_root / "v1", old)
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["training"]
    manifest["dataset"]["events"] = None
    (old / "manifest.json").write_text(json.dumps(manifest))
    with np.load(old / "history.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in ("data", "indices", "indptr", "shape")}
    np.savez_compressed(old / "history.npz", **arrays)

    b = load(old)
    assert b.manifest.training is None and b.events_cutoff == float("-inf")
    assert {m.split_ for m in b.fusion.models.values()} == {None}
    assert b.deletions_read_at == b.manifest.created_at.timestamp()
    assert b.manifest.to_dict() == manifest
    assert _answers(b) == _answers(load(tiny_bundle_root))
    # deletions read by an older trainer: before 'read_at' was recorded
    manifest["dataset"]["events"] = {"cutoff": 1.5e9, "count": 3}
    facts = Manifest.from_dict(manifest)
    assert facts.events_cutoff == 1.5e9 and facts.deletions_read_at == facts.created_at.timestamp()


def test_a_manifest_names_the_field_it_cannot_read(broken_copy):
    cases = [
        (lambda m: m["signals"]["als"].update(dim="8"), "field 'signals.als.dim' must be an integer, got '8'"),
        (lambda m: m["signals"]["als"].update(scale=0.0), "field 'signals.als.scale' must be a positive number, got 0.0"),
        (lambda m: m["dataset"].update(events={"read_at": 1.0}), "lacks 'dataset.events.cutoff'"),
        (lambda m: m.update(created_at="yesterday"), "field 'created_at' is not an ISO time"),
        (lambda m: m["training"].update(split=None), "field 'training.split' must be a string, got None"),
        (lambda m: m["weights"].pop("content"), "field 'weights' is for"),
        (lambda m: m.update(signal_order=["als", "content"]), "field 'signals' holds"),
        (lambda m: m["index"].update(connectivity=0), "field 'index' is invalid: IndexConfig.connectivity"),
        (lambda m: m.update(format="hybridrec-bundle/0"), "unsupported bundle format 'hybridrec-bundle/0'"),
    ]
    for edit, message in cases:
        b = broken_copy()
        _edit_manifest(b, edit)
        with pytest.raises(BundleError, match=f"{b.resolve()}/manifest.json.*{re.escape(message)}"):
            load(b)
        assert b.name not in [v.version for v in list_bundles(b.parent)], "an unreadable manifest is no version"

    b = broken_copy()  # history.npz of another publish than the manifest
    _edit_manifest(b, lambda m: m["training"].update(cutoff=m["training"]["cutoff"] - 1))
    with pytest.raises(BundleError, match=r"history.npz holds split and cutoff \('train', \d+\), manifest says"):
        load(b)


# -- roots given as fsspec URLs -------------------------------------------------------------------
@pytest.fixture
def memory_root():
    """A fresh bundle root on fsspec's in-process memory filesystem, removed afterwards."""
    url = f"memory://hybridrec-tests-{uuid.uuid4().hex[:8]}/bundles"
    yield url
    fs, path = fsspec.core.url_to_fs(url)
    if fs.exists(path.rsplit("/", 1)[0]):
        fs.rm(path.rsplit("/", 1)[0], recursive=True)


def _answers(b) -> list:
    from hybrid.recommender import HybridRecommender

    rec = HybridRecommender(b)
    out = []
    for user in ("1", "2", "7", "stranger"):
        out.append(rec.recommend(user, 8).items)
        out.append(rec.recommend(user, 5, variant="als_heavy").items)
    out.append(rec.recommend("3", 5, history_override=rec.history("3").extend(np.array([0, 1]))).items)
    out.append(rec.similar_items("5", 6))
    return out


def test_memory_root_publish_list_rollback_load(tiny_dataset, tiny_fusion, tiny_bundle_root, memory_root, tmp_path):
    fs, root_path = fsspec.core.url_to_fs(memory_root)
    cache = tmp_path / "cache"
    assert list_bundles(memory_root) == [] and latest_version(memory_root) is None

    assert publish_tiny(memory_root, tiny_dataset, tiny_fusion, version="v1") == f"{memory_root}/v1"
    assert fs.cat_file(f"{root_path}/latest") == b"v1\n"  # a pointer file: no symlinks on object stores
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(root_path, detail=False))
    assert names == ["latest", "v1"], "no staging left behind"
    published = sorted(p[len(f"{root_path}/v1/"):] for p in fs.find(f"{root_path}/v1"))
    assert published == sorted(p.relative_to(tiny_bundle_root / "v1").as_posix()
                               for p in (tiny_bundle_root / "v1").rglob("*") if p.is_file())

    # loaded from the URL, the bundle answers exactly as the same bundle published locally
    remote, local = load(memory_root, cache_dir=cache), load(tiny_bundle_root)
    assert remote.version == "v1" and remote.path.is_relative_to(cache.resolve()) and remote.path.name == "v1"
    assert remote.index.mapped and isinstance(remote.index.vectors, np.memmap)
    assert isinstance(remote.fusion.models["als"].item_factors_, np.memmap)
    assert _answers(remote) == _answers(local)

    auto = publish_tiny(memory_root, tiny_dataset, tiny_fusion)
    assert isinstance(auto, str) and latest_version(memory_root) == auto.rsplit("/", 1)[-1]
    infos = list_bundles(memory_root)
    assert [b.version for b in infos] == ["v1", auto.rsplit("/", 1)[-1]]
    assert [b.is_latest for b in infos] == [False, True] and infos[0].path == f"{memory_root}/v1"
    assert infos[0].metrics == METRICS
    assert load(memory_root, cache_dir=cache).version == infos[1].version

    assert rollback(memory_root, "v1", cache_dir=cache) == f"{memory_root}/v1"
    assert latest_version(memory_root) == "v1" and load(memory_root, cache_dir=cache).version == "v1"
    assert [b.is_latest for b in list_bundles(memory_root)] == [True, False]
    with pytest.raises(BundleError, match=r"no bundle version 'v9'.*published: \['v1'"):
        rollback(memory_root, "v9", cache_dir=cache)
    with pytest.raises(BundleError, match="already exists"):
        publish_tiny(memory_root, tiny_dataset, tiny_fusion, version="v1")


def test_memory_root_failed_or_partial_publish_is_invisible(tiny_dataset, tiny_fusion, memory_root, tmp_path,
                                                            monkeypatch):
    fs, root_path = fsspec.core.url_to_fs(memory_root)
    publish_tiny(memory_root, tiny_dataset, tiny_fusion, version="v1")

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    with monkeypatch.context() as m:
        m.setattr(bundle_mod.FusedIndex, "build", broken)
        with pytest.raises(RuntimeError, match="disk full"):
            publish_tiny(memory_root, tiny_dataset, tiny_fusion, version="v2")
    assert latest_version(memory_root) == "v1" and not fs.exists(f"{root_path}/v2")

    # an upload cut short before its manifest (written last) is no version at all
    for name in ("index.usearch", "item_vectors.npy"):
        fs.pipe_file(f"{root_path}/v3/{name}", b"partial")
    assert [b.version for b in list_bundles(memory_root)] == ["v1"]
    with pytest.raises(BundleError, match=f"{memory_root}/v3 is neither a bundle version"):
        load(f"{memory_root}/v3", cache_dir=tmp_path / "cache")
    assert load(memory_root, cache_dir=tmp_path / "cache").version == "v1"


def test_url_cache_reuses_refreshes_and_prunes(tiny_dataset, tiny_fusion, memory_root, tmp_path):
    fs, root_path = fsspec.core.url_to_fs(memory_root)
    cache = tmp_path / "cache"
    publish_tiny(memory_root, tiny_dataset, tiny_fusion, version="v1")
    first = load(memory_root, cache_dir=cache).path
    (first / "marker").write_text("kept")
    assert load(f"{memory_root}/v1", cache_dir=cache).path == first and (first / "marker").exists(), "copy reused"

    # the same version name published again (after deleting the old one) is copied afresh
    fs.rm(f"{root_path}/v1", recursive=True)
    fs.rm(f"{root_path}/latest")
    publish_tiny(memory_root, tiny_dataset, tiny_fusion, version="v1",
                 variants=Variants(tiny_fusion.signals, TUNED, {"fresh": {"weights": {"als": 1.0}}}))
    again = load(memory_root, cache_dir=cache)
    assert again.path == first and "fresh" in again.variants and not (first / "marker").exists()

    expected_history = again.history.toarray()
    serving = load(memory_root, cache_dir=cache)  # a process still serving v1, history not read yet
    for v in ("v2", "v3", "v4"):
        publish_tiny(memory_root, tiny_dataset, tiny_fusion, version=v)
        assert load(memory_root, cache_dir=cache).version == v
    copies = sorted(p.name for p in first.parent.iterdir())
    assert copies == ["v2", "v3", "v4"][-bundle_mod.CACHE_KEEP:], copies
    assert not serving.path.exists(), "v1's copy was pruned"
    np.testing.assert_array_equal(serving.history.toarray(), expected_history)  # mapped at load: still readable
    assert serving.index.search(np.ones(serving.index.dim, np.float32), 2)[0].size == 2, "index memory-mapped"


def test_file_url_root_is_a_local_root(tiny_dataset, tiny_fusion, tmp_path):
    folder = tmp_path / "bundles"
    url = f"file://{folder}"
    assert publish_tiny(url, tiny_dataset, tiny_fusion, version="v1") == folder / "v1"
    assert (folder / "latest").is_symlink(), "a local disk keeps the atomic symlink"
    publish_tiny(url, tiny_dataset, tiny_fusion, version="v2")
    assert [(b.version, b.is_latest, b.path) for b in list_bundles(url)] == [
        ("v1", False, folder / "v1"), ("v2", True, folder / "v2")]
    b = load(url)
    assert b.version == "v2" and b.path == (folder / "v2").resolve(), "loaded in place, not copied"
    assert rollback(url, "v1") == folder / "v1" and latest_version(url) == "v1" and load(url).version == "v1"
    assert latest_version(folder) == "v1"


def test_local_root_reads_a_pointer_file(tiny_bundle_root: Path, tmp_path: Path):
    """A root copied from an object store (``latest`` a file holding the version) still loads."""
    root = tmp_path / "synced"
    shutil.copytree(tiny_bundle_root / "v1", root / "v1")
    (root / "latest").write_text("v1\n")
    assert latest_version(root) == "v1" and load(root).version == "v1"
    assert [(b.version, b.is_latest) for b in list_bundles(root)] == [("v1", True)]
    (root / "latest").write_text("../../etc\n")
    with pytest.raises(BundleError, match=r"latest holds '../../etc', which is not a bundle version"):
        latest_version(root)


def test_url_errors_name_the_url(memory_root, tmp_path):
    for call in (latest_version, list_bundles, load):
        with pytest.raises(BundleError, match=r"cannot open bundle location 'nope://bundles': Protocol not known"):
            call("nope://bundles")
    with pytest.raises(BundleError, match=f"{memory_root} is neither a bundle version .* nor a bundle root"):
        load(memory_root, cache_dir=tmp_path)
    assert list_bundles(memory_root) == [] and latest_version(memory_root) is None
