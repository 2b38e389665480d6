"""The model bundle: the versioned folder that training publishes and serving loads.

A root is a local folder or an fsspec URL (``s3://bucket/bundles``, ``memory://bundles``), so
that servers and workers on other hosts can read it. Layout of ``root``::

    latest -> <version>            on a local disk: a relative symlink, swapped atomically
                                   (os.replace); elsewhere: a small file holding the version name
    <version>/
        manifest.json              hybrid.manifest.Manifest: version, created_at, dataset facts (and
                                   the API events it holds, up to their cutoff), signals (order,
                                   kinds, dims, scales, configs, params), tuned weights, variants,
                                   metrics, index config, and what the signals were fit on
                                   (training: split, interactions, newest timestamp)
        signals/<name>/            each model's parameters (FactorModel.save(data=False): config, npy)
        vocab/users.json           external ids in row order (etl.vocabulary)
        vocab/items.json
        items.json                 item metadata (item_id, title, genres, tags, year, count,
                                   mean_rating) by item row, as columns (hybrid.item_table)
        item_vectors.npy           fused item vectors [c_s * i_s for s] (float32): serving reads
                                   every signal's item vectors here (FactorModel.read_items_from),
                                   not in signals/<name>/item_factors.npy
        index.usearch              the HNSW inner-product index over item_vectors (in the graph
                                   space, when the manifest names one)
        graph_space.npz            hybrid.graph_space.GraphSpace: the maps of item vectors and
                                   queries into the graph's space (optional: not in bundles
                                   published before it, or with IndexConfig.graph_share None)
        history.npz                training interactions, users x items, each row's entries in
                                   time order (what fold-ins that weigh recency expect), with the
                                   split, its newest timestamp and the events cutoff as metadata

On a local disk a version is written to a hidden temporary folder and renamed into place in one
step, then ``latest`` is swapped, so a reader sees either the old bundle or the whole new one,
never half of one. Object stores have neither renames nor symlinks: there the version is uploaded
with its manifest.json last (a folder without one is not a version), then the ``latest`` file is
written in one put. Loading from a URL copies the version into a local cache folder first, since
the factors and the usearch index are memory-mapped. No pickle anywhere: JSON, npy/npz and the
usearch file. A version written before holds its vocabularies and item table as Parquet files
(``*.parquet`` in place of ``*.json``); it still loads, through pandas, which serving imports only
then.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import mmap as mmap_module
import os
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import scipy.sparse as sp
from fsspec.implementations.local import LocalFileSystem
from fsspec.spec import AbstractFileSystem

from etl.dataset import Dataset
from etl.errors import BundleError
from etl.jsonable import jsonable
from etl.vocabulary import Vocabulary, vocabulary_file
from hybrid.fusion import Fusion, check_weights
from hybrid.graph_space import FILE as SPACE_FILE
from hybrid.graph_space import GraphSpace, weighted_shares
from hybrid.index import FusedIndex, IndexConfig, ItemCatalog
from hybrid.item_maps import ItemMaps, fit_item_maps
from hybrid.item_table import ItemTable
from hybrid.manifest import DatasetFacts, EventsFacts, IndexEntry, Manifest, SignalEntry, TrainingFacts
from hybrid.variants import Variants
from models.base import FactorModel, FitData

__all__ = [
    "Bundle", "BundleInfo", "publish", "load", "list_bundles", "latest_version", "rollback", "version_path",
    "set_latest", "remove_version",
    "default_cache_dir",
]

LATEST = "latest"
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
CACHE_KEEP = 3
"""Versions copied from one URL root that the local cache keeps (the newest copies)."""
_FILES = (
    "manifest.json",
    "vocab/users.json",
    "vocab/items.json",
    "items.json",
    "item_vectors.npy",
    "index.usearch",
    "history.npz",
)
"""Every version's files; a version written before may hold a .parquet file for each .json one."""


@dataclass
class Bundle:
    """A loaded bundle: everything serving needs, factors and index memory-mapped."""

    path: Path
    manifest: Manifest
    fusion: Fusion
    index: FusedIndex
    items_table: ItemTable
    users: Vocabulary
    items: Vocabulary
    variants: Variants
    seen: sp.csr_matrix
    """users x items training interactions (values), shared by every signal."""
    catalog: ItemCatalog = field(repr=False)
    history_file: mmap_module.mmap | None = field(default=None, repr=False)
    item_maps: ItemMaps | None = field(default=None, repr=False)
    """Content -> collaborative item vectors for items added while serving (hybrid/item_maps.py)."""
    """history.npz mapped at load: read on first use even when the file is gone by then (a local
    cache prunes old versions while a process may still serve one)."""

    def __post_init__(self) -> None:
        # the signals' fold-ins read their item vectors from the fused ones, the bundle's one copy
        # that the ranking reads anyway (FactorModel.read_items_from): a worker does not also hold
        # the signals' factor files
        for s in self.fusion.signals:
            self.fusion.models[s].read_items_from(self.index.columns(self.fusion.slices[s]), self.fusion.scales[s])

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def weights(self) -> dict[str, float]:
        """The tuned blend weights."""
        return dict(self.manifest.weights)

    @property
    def signals(self) -> tuple[str, ...]:
        return self.fusion.signals

    @property
    def events_cutoff(self) -> float:
        """See Manifest.events_cutoff."""
        return self.manifest.events_cutoff

    @property
    def deletions_read_at(self) -> float:
        """See Manifest.deletions_read_at."""
        return self.manifest.deletions_read_at

    @cached_property
    def seen_by_item(self) -> sp.csc_matrix:
        """The training interactions by item (column access), each item's users sorted by row,
        built on first use."""
        by_item = self.seen.tocsc()
        by_item.sort_indices()  # a no-op after scipy's conversion, which sorts; explanations rely on it
        return by_item

    @cached_property
    def history(self) -> sp.csr_matrix:
        """Training interactions with each row's entries oldest first (read on first use).

        Not canonical on purpose (indices are in time order): use it for a user's history,
        never for sparse arithmetic, which would re-sort it.
        """
        source = io.BytesIO(self.history_file) if self.history_file is not None else self.path / "history.npz"
        with np.load(source, allow_pickle=False) as z:
            # columns: every served item (items added while serving come after the trained ones)
            return sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=(int(z["shape"][0]), len(self.items)))


@dataclass(frozen=True)
class BundleInfo:
    """One published version, as list_bundles reports it."""

    version: str
    created_at: str
    path: str | Path
    """The version folder: a Path under a local root, a URL under any other."""
    is_latest: bool
    metrics: dict[str, Any]
    events_cutoff: float = float("-inf")
    """See Manifest.events_cutoff."""


# -- publish -------------------------------------------------------------------------------------
def publish(
    root: str | Path,
    fusion: Fusion,
    dataset: Dataset,
    *,
    weights: dict[str, float],
    variants: Variants,
    metrics: dict[str, Any],
    params: dict[str, Any],
    version: str | None = None,
    index_config: IndexConfig | None = None,
    make_latest: bool = True,
) -> str | Path:
    """Write a new bundle version under ``root`` and point ``latest`` at it; returns its folder.

    ``make_latest=False`` leaves ``latest`` alone (a candidate to compare before ``set_latest``).

    ``root`` is a local folder (the result is a Path) or an fsspec URL (the result is the version's
    URL). ``weights`` are the tuned blend weights (variant 'tuned' must carry the same);
    ``metrics`` the test figures; ``params`` the training parameters (per signal under its name,
    or global).
    """
    local = _local(root)
    if local is not None:
        local.mkdir(parents=True, exist_ok=True)
    created = datetime.now(UTC)
    version = created.strftime("%Y%m%dT%H%M%S%fZ") if version is None else version
    _check_version(version)
    if _exists(version_path(root, version)):
        raise BundleError(f"bundle version {version!r} already exists in {root}")
    weights = check_weights(weights, fusion.signals)
    if variants.signals != fusion.signals:
        raise BundleError(f"variants are for signals {variants.signals}, the fusion has {fusion.signals}")
    if dict(variants.get("tuned").weights) != weights:
        raise BundleError(f"variant 'tuned' has weights {dict(variants.get('tuned').weights)}, not the tuned {weights}")
    n_users, n_items = dataset.n_users, dataset.n_items
    for s in fusion.signals:
        m = fusion.models[s]
        if m.item_factors_.shape[0] != n_items or m.user_factors_.shape[0] != n_users:
            raise BundleError(
                f"signal {s!r} has {m.user_factors_.shape[0]} users x {m.item_factors_.shape[0]} items, "
                f"the dataset {n_users} x {n_items}"
            )
    index_config = index_config or IndexConfig()
    manifest = Manifest(
        version=version,
        created_at=created,
        dataset=_dataset_facts(dataset),
        signals={
            s: SignalEntry(
                kind=fusion.models[s].kind,
                dim=fusion.models[s].dim,
                scale=float(fusion.scales[s]),
                config=jsonable(fusion.models[s].config),
                params=jsonable(params.get(s, {})),
            )
            for s in fusion.signals
        },
        dim=fusion.dim,
        n_users=n_users,
        n_items=n_items,
        weights=weights,
        variants=variants,
        metrics=jsonable(metrics),
        params=jsonable({k: v for k, v in params.items() if k not in fusion.signals}),
        index=IndexEntry(index_config),
        training=_training_facts(fusion, dataset),
    )

    if local is not None:
        tmp = local / f".tmp-{version}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            _write_version(tmp, fusion, dataset, manifest, index_config)
            _fsync_tree(tmp)
            os.rename(tmp, local / version)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    else:
        with tempfile.TemporaryDirectory(prefix=f"hybridrec-{version}-") as staging:
            _write_version(Path(staging), fusion, dataset, manifest, index_config)
            _upload(Path(staging), str(version_path(root, version)))
    if make_latest:
        _point_latest(root, version)
    return version_path(root, version)


def _write_version(folder: Path, fusion: Fusion, dataset: Dataset, manifest: Manifest,
                   index_config: IndexConfig) -> None:
    """Every file of a version into an empty local ``folder``, manifest.json last."""
    n_items = dataset.n_items
    for s in fusion.signals:
        fusion.models[s].save(folder / "signals" / s, data=False)  # their data once: vocab/, history.npz
    (folder / "vocab").mkdir()
    dataset.users.save(folder / "vocab" / "users.json")
    dataset.items.save(folder / "vocab" / "items.json")
    items_table = dataset.items_table
    if len(items_table) != n_items:
        raise BundleError(f"items table has {len(items_table)} rows for {n_items} items")
    ItemTable.from_columns(items_table, n_items).save(folder)
    assert manifest.training is not None  # publish records it
    _save_history(folder / "history.npz", dataset, fusion.models[fusion.signals[0]].seen_, manifest.training,
                  manifest.events_cutoff)
    vectors = fusion.item_vectors()
    np.save(folder / "item_vectors.npy", vectors, allow_pickle=False)
    start = time.perf_counter()
    space = None if index_config.graph_share is None else graph_space(fusion, vectors, manifest.weights, index_config)
    index = FusedIndex.build(vectors, index_config, space=space)
    seconds = time.perf_counter() - start
    index.save(folder / "index.usearch")
    if space is not None:
        space.save(folder / SPACE_FILE)
    manifest = replace(manifest, index=IndexEntry(index_config, dtype=index.graph.dtype,
                                                  space_file=None if space is None else SPACE_FILE,
                                                  build_seconds=round(seconds, 3)))
    maps = fit_item_maps(fusion.models)
    if maps is not None:
        maps.save(folder)
    _write_json(folder / "manifest.json", manifest.to_dict())


GRAPH_SPACE_USERS = 20_000
"""Users whose vectors fit a bundle's graph space (a seeded sample when there are more)."""


def graph_space(fusion: Fusion, vectors: np.ndarray, weights: dict[str, float], config: IndexConfig,
                seed: int = 0) -> GraphSpace:
    """The graph space of a fusion for its tuned ``weights`` (hybrid/graph_space.py: the shares
    ``config.graph_share`` and ``graph_floor`` give): its item columns, and the user vectors of up
    to ``GRAPH_SPACE_USERS`` of its users."""
    if config.graph_share is None:
        raise ValueError("IndexConfig.graph_share is None: the graph holds the fused vectors, no space")
    shares = weighted_shares(weights, config.graph_share, config.graph_floor)
    n_users = fusion.models[fusion.signals[0]].user_factors_.shape[0]
    rows = np.arange(n_users) if n_users <= GRAPH_SPACE_USERS else np.sort(
        np.random.default_rng(seed).choice(n_users, size=GRAPH_SPACE_USERS, replace=False))
    return GraphSpace.fit({s: vectors[:, sl] for s, sl in fusion.slices.items()}, fusion.user_parts(rows), shares)


def _upload(folder: Path, url: str) -> None:
    """Copy a staged version folder to ``url``, its manifest.json last.

    Until the manifest lands the version is invisible (list_bundles and load need it); a failed
    upload removes what it wrote.
    """
    fs, dest = _filesystem(url)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p != folder / "manifest.json")
    try:
        fs.put([str(p) for p in files], [f"{dest}/{p.relative_to(folder).as_posix()}" for p in files])
        fs.put_file(str(folder / "manifest.json"), f"{dest}/manifest.json")
    except BaseException:
        with contextlib.suppress(Exception):
            fs.rm(dest, recursive=True)
        raise


def _training_facts(fusion: Fusion, dataset: Dataset) -> TrainingFacts:
    """What the signals were fit on, as each recorded it (``FactorModel.split_``): one split of
    ``dataset`` for all, its size and its newest interaction's timestamp."""
    splits = {s: fusion.models[s].split_ for s in fusion.signals}
    if None in splits.values() or len(set(splits.values())) != 1:
        raise BundleError(
            f"the signals must all be fit on one split of the dataset, and record it; they were fit on {splits} "
            "(None: a model saved before the split was recorded; fit it again)"
        )
    split = str(next(iter(splits.values())))
    cutoff = dataset.newest_timestamp(split)
    if cutoff is None:
        raise BundleError(f"the dataset's {split!r} split is empty: the signals learned nothing to publish")
    return TrainingFacts(split=split, interactions=dataset.count(split), cutoff=cutoff)


def _save_history(path: Path, dataset: Dataset, seen: sp.csr_matrix, training: TrainingFacts,
                  events_cutoff: float) -> None:
    """The fitted interactions with each user's entries in time order (``Dataset.matrix(split,
    ordered=True)`` of the training split), which must hold exactly the pairs the signals were fit
    on (``seen``); the split, its newest timestamp and the events cutoff go with them as metadata."""
    history = dataset.matrix(training.split, ordered=True)
    if history.nnz != seen.nnz or not np.array_equal(np.diff(history.indptr), np.diff(seen.indptr)):
        raise BundleError(
            f"the dataset's {training.split!r} split ({history.nnz} interactions) is not what the signals were fit on "
            f"({seen.nnz}); publish with the dataset the models were trained on"
        )
    np.savez_compressed(path, data=history.data.astype(np.float32), indices=history.indices.astype(np.int32),
                        indptr=history.indptr.astype(np.int64), shape=np.array([dataset.n_users, dataset.n_items]),
                        split=np.array(training.split), cutoff=np.array(training.cutoff, dtype=np.int64),
                        events_cutoff=np.array(events_cutoff, dtype=np.float64))


def _seen(path: Path, manifest: Manifest) -> sp.csr_matrix:
    """The fitted interactions as a canonical users x items CSR (sorted rows), from history.npz: the
    one copy of what every signal of the bundle was fit on. A bundle written before the training
    split was recorded has it in neither file."""
    n_users, n_items = manifest.n_users, manifest.n_items
    try:
        with np.load(path / "history.npz", allow_pickle=False) as z:
            shape = tuple(int(x) for x in z["shape"])
            if shape != (n_users, n_items):
                raise BundleError(f"bundle {path}: history.npz has shape {shape}, manifest says ({n_users}, {n_items})")
            recorded = (str(z["split"]), int(z["cutoff"])) if "split" in z.files else None
            expected = None if manifest.training is None else (manifest.training.split, manifest.training.cutoff)
            if recorded != expected:
                raise BundleError(f"bundle {path}: history.npz holds split and cutoff {recorded}, manifest says {expected}")
            seen = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=shape)
    except (OSError, ValueError, KeyError) as exc:
        raise BundleError(f"bundle {path}: history.npz does not load: {exc}") from exc
    seen.sort_indices()
    return seen


def _dataset_facts(dataset: Dataset) -> DatasetFacts:
    m = dataset.manifest
    # which of the API's accepted events the dataset holds: those accepted up to 'cutoff';
    # deletions were applied as recorded at 'read_at' (cluster.event_intake)
    events = (m.get("extra") or {}).get("events")
    return DatasetFacts(
        path=str(dataset.path),
        content_hash=m.get("content_hash"),
        source=m.get("source"),
        users=int(m.get("users", dataset.n_users)),
        items=int(m.get("items", dataset.n_items)),
        interactions=m.get("interactions"),
        splits=m.get("splits"),
        events=None if events is None else EventsFacts.from_dict(events, "dataset.events"),
    )


# -- roots and the latest pointer ----------------------------------------------------------------
def version_path(root: str | Path, version: str) -> str | Path:
    """Where ``version`` lives under ``root``: a Path under a local root, a URL under any other."""
    local = _local(root)
    return local / version if local is not None else f"{str(root).rstrip('/')}/{version}"


def _filesystem(location: str | Path) -> tuple[AbstractFileSystem, str]:
    """The fsspec filesystem of a root or version and the path on it (no trailing slash)."""
    try:
        fs, path = fsspec.core.url_to_fs(str(location))
    except (ValueError, ImportError) as exc:  # an unknown protocol, or one whose package is missing
        raise BundleError(f"cannot open bundle location {str(location)!r}: {exc}") from exc
    return fs, path.rstrip("/")


def _local(location: str | Path) -> Path | None:
    """The local folder of a root or version (a path or a file:// URL); None on other filesystems."""
    if isinstance(location, Path):
        return location
    fs, path = _filesystem(location)
    if not isinstance(fs, LocalFileSystem):
        return None
    return Path(path) if "://" in location else Path(location)


def _exists(location: str | Path, *parts: str) -> bool:
    """Whether location/parts... exists (local or not)."""
    if isinstance(location, Path):
        return location.joinpath(*parts).exists()
    fs, path = _filesystem(location)
    return bool(fs.exists("/".join([path, *parts])))


def _point_latest(root: str | Path, version: str) -> None:
    """Point root/latest at ``version`` in one step.

    On a local disk a new symlink is renamed over the old; elsewhere the ``latest`` file is
    rewritten with one put, which object stores apply whole.
    """
    local = _local(root)
    if local is None:
        fs, path = _filesystem(root)
        fs.pipe_file(f"{path}/{LATEST}", f"{version}\n".encode())
        return
    tmp = local / f".latest-{uuid.uuid4().hex[:8]}"
    os.symlink(version, tmp)
    try:
        os.replace(tmp, local / LATEST)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(local)


def latest_version(root: str | Path) -> str | None:
    """The version ``latest`` points at (a symlink or a pointer file), or None when nothing is published."""
    local = _local(root)
    if local is not None:
        link = local / LATEST
        if link.is_symlink():
            return os.readlink(link)
        if not link.is_file():
            return None
        text = link.read_text()
    else:
        fs, path = _filesystem(root)
        try:
            text = fs.cat_file(f"{path}/{LATEST}").decode()
        except FileNotFoundError:
            return None
    version = text.strip()
    if not _VERSION_RE.match(version) or version == LATEST:
        raise BundleError(f"{str(root).rstrip('/')}/{LATEST} holds {version[:80]!r}, which is not a bundle version")
    return version


def list_bundles(root: str | Path) -> list[BundleInfo]:
    """Published versions, oldest first (by created_at, then name)."""
    fs, path = _filesystem(root)
    fs.invalidate_cache(path)  # another host may have published since this process last listed
    try:
        entries = fs.ls(path, detail=True)
    except (FileNotFoundError, NotADirectoryError):
        return []
    latest = latest_version(root)
    out = []
    for entry in entries:
        name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
        if name.startswith(".") or name == LATEST or entry["type"] != "directory":
            continue
        try:
            m = Manifest.from_json(fs.cat_file(f"{path}/{name}/manifest.json"))
        except (OSError, BundleError):
            continue
        out.append(BundleInfo(name, m.created_at.isoformat(), version_path(root, name), name == latest,
                              dict(m.metrics), m.events_cutoff))
    return sorted(out, key=lambda b: (b.created_at, b.version))


def rollback(root: str | Path, version: str, cache_dir: str | Path | None = None) -> str | Path:
    """Point ``latest`` at an existing (usually older) version, after checking that it loads."""
    _check_version(version)
    target = version_path(root, version)
    if not _exists(target, "manifest.json"):
        known = [b.version for b in list_bundles(root)]
        raise BundleError(f"no bundle version {version!r} in {root}; published: {known}")
    load(target, cache_dir=cache_dir)
    _point_latest(root, version)
    return target


def set_latest(root: str | Path, version: str) -> str | Path:
    """Point ``latest`` at a published version (a candidate that passed its comparison)."""
    _check_version(version)
    if not _exists(version_path(root, version), "manifest.json"):
        raise BundleError(f"no bundle version {version!r} in {root}")
    _point_latest(root, version)
    return version_path(root, version)


def remove_version(root: str | Path, version: str) -> None:
    """Delete a version that is not ``latest`` (a refused candidate, an old or erased one)."""
    _check_version(version)
    if latest_version(root) == version:
        raise BundleError(f"bundle version {version!r} is latest in {root}: point latest elsewhere first")
    fs, path = _filesystem(version_path(root, version))
    local = _local(version_path(root, version))
    if local is not None:
        # renamed away first, so no reader ever sees half a version
        trash = local.with_name(f".removed-{version}-{uuid.uuid4().hex[:8]}")
        os.rename(local, trash)
        shutil.rmtree(trash)
    elif fs.exists(path):
        fs.rm(f"{path}/manifest.json")  # no longer a version, then the rest
        fs.rm(path, recursive=True)


# -- load ----------------------------------------------------------------------------------------
def load(path: str | Path, mmap: bool = True, cache_dir: str | Path | None = None) -> Bundle:
    """Load a bundle from a version folder, or from a root (its ``latest``).

    ``path`` may be an fsspec URL: the version is then copied into ``cache_dir`` (default:
    ``default_cache_dir()``) and loaded from there, since factors and index are memory-mapped.
    Checks that every file is present and that dims and sizes agree with the manifest; anything
    wrong raises BundleError naming it.
    """
    local = _local(path)
    path = local if local is not None else _fetch(str(path), cache_dir)
    if not (path / "manifest.json").exists():
        version = latest_version(path)
        if version is None:
            raise BundleError(f"{path} is neither a bundle version (no manifest.json) nor a bundle root (no latest)")
        if not (path / version / "manifest.json").exists():
            raise BundleError(f"{path}/latest points at {version!r}, which is not a bundle version")
        path = path / version
    path = path.resolve()
    try:
        manifest = Manifest.from_json((path / "manifest.json").read_bytes())
    except BundleError as exc:
        raise BundleError(f"{path}/{exc}") from exc
    order = list(manifest.signal_order)
    missing = [f for f in _FILES if not (path / f).exists() and not (path / f).with_suffix(".parquet").exists()]
    missing += [f"signals/{s}/" for s in order if not (path / "signals" / s / "model.json").exists()]
    if missing:
        raise BundleError(f"bundle {path} is incomplete: missing {', '.join(missing)}")

    n_users, n_items, dim = manifest.n_users, manifest.n_items, manifest.dim
    try:
        users = Vocabulary.load(vocabulary_file(path / "vocab", "users"), kind="user")
        items = Vocabulary.load(vocabulary_file(path / "vocab", "items"), kind="item")
    except ValueError as exc:
        raise BundleError(f"bundle {path}: a vocabulary does not load: {exc}") from exc
    if (len(users), len(items)) != (n_users, n_items):
        raise BundleError(
            f"bundle {path}: vocabularies hold {len(users)} users, {len(items)} items; "
            f"manifest says {n_users}, {n_items}"
        )
    seen = _seen(path, manifest)
    # one copy for every signal: they were fit on the same interactions
    fit_data = FitData(users, items, seen, None if manifest.training is None else manifest.training.split)
    models: dict[str, FactorModel] = {}
    for s in order:
        try:
            model = FactorModel.load(path / "signals" / s, mmap=mmap, data=fit_data)
        except (OSError, ValueError, KeyError) as exc:
            raise BundleError(f"bundle {path}: signal {s!r} does not load: {exc}") from exc
        spec = manifest.signals[s]
        if model.kind != spec.kind:
            raise BundleError(f"bundle {path}: signal {s!r} holds a {model.kind} model, manifest says {spec.kind}")
        if model.dim != spec.dim:
            raise BundleError(f"bundle {path}: signal {s!r} has dim {model.dim}, manifest says {spec.dim}")
        shape = (model.user_factors_.shape[0], model.item_factors_.shape[0])
        if shape != (n_users, n_items):
            raise BundleError(
                f"bundle {path}: signal {s!r} has {shape[0]} users x {shape[1]} items, "
                f"manifest says {n_users} x {n_items}"
            )
        models[s] = model
    fusion = Fusion(models, {s: manifest.signals[s].scale for s in order})
    if list(fusion.signals) != order:
        raise BundleError(f"bundle {path}: signals order {list(fusion.signals)} differs from the manifest's {order}")
    if fusion.dim != dim:
        raise BundleError(f"bundle {path}: fused dim {fusion.dim} differs from the manifest's {dim}")

    try:
        items_table = ItemTable.load(path)
    except ValueError as exc:
        raise BundleError(f"bundle {path}: the item table does not load: {exc}") from exc
    if len(items_table) != n_items:
        raise BundleError(f"bundle {path}: the item table has {len(items_table)} rows for {n_items} items")
    try:
        vectors = np.load(path / "item_vectors.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as exc:
        raise BundleError(f"bundle {path}: item_vectors.npy does not load: {exc}") from exc
    if vectors.shape != (n_items, dim):
        raise BundleError(
            f"bundle {path}: item_vectors.npy has shape {vectors.shape}, manifest says ({n_items}, {dim})"
        )
    space = None
    if manifest.index.space_file is not None:
        try:
            space = GraphSpace.load(path / manifest.index.space_file)
        except ValueError as exc:
            raise BundleError(f"bundle {path}: {manifest.index.space_file}: {exc}") from exc
        dims = {s: fusion.models[s].dim for s in fusion.signals}
        if space.dims != dims:
            raise BundleError(f"bundle {path}: {manifest.index.space_file} maps signals {space.dims}, "
                              f"the bundle has {dims}")
    try:
        index = FusedIndex.load(path / "index.usearch", vectors, mmap=mmap, config=manifest.index.config, space=space)
    except ValueError as exc:
        raise BundleError(f"bundle {path}: index.usearch: {exc}") from exc
    variants = manifest.variants
    if variants.signals != fusion.signals:
        raise BundleError(
            f"bundle {path}: variants are for signals {variants.signals}, the bundle has {fusion.signals}"
        )

    with open(path / "history.npz", "rb") as fh:  # mapped now, read on first use (Bundle.history)
        history_file = mmap_module.mmap(fh.fileno(), 0, access=mmap_module.ACCESS_READ)
    return Bundle(
        path=path,
        manifest=manifest,
        fusion=fusion,
        index=index,
        items_table=items_table,
        users=users,
        items=items,
        variants=variants,
        seen=seen,
        catalog=ItemCatalog(items_table),
        history_file=history_file,
        item_maps=_load_item_maps(path),
    )


def _load_item_maps(path: Path) -> ItemMaps | None:
    try:
        return ItemMaps.load(path)
    except (OSError, ValueError) as exc:
        raise BundleError(f"bundle {path}: item_maps.npz does not load: {exc}") from exc


def default_cache_dir() -> Path:
    """Where bundles loaded from a URL are copied: $XDG_CACHE_HOME (else ~/.cache)/hybridrec/bundles."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hybridrec" / "bundles"


def _fetch(location: str, cache_dir: str | Path | None) -> Path:
    """A local copy of the version at ``location`` (a version URL, or a root URL's latest).

    Memory-mapping needs local files, so the version is copied to ``<cache>/<root hash>/<version>``
    and reused while its manifest is unchanged. (fsspec's own file caches keep single files under
    hashed names, not a folder that the loaders open by path.) A copy lands by one rename, so
    processes sharing the cache see all of it or none; only the newest CACHE_KEEP copies of a root
    are kept.
    """
    fs, path = _filesystem(location)
    try:
        manifest = fs.cat_file(f"{path}/manifest.json")
    except FileNotFoundError:
        version = latest_version(location)
        if version is None:
            raise BundleError(
                f"{location} is neither a bundle version (no manifest.json) nor a bundle root (no latest)"
            ) from None
        path = f"{path}/{version}"
        try:
            manifest = fs.cat_file(f"{path}/manifest.json")
        except FileNotFoundError:
            raise BundleError(f"{location}/latest points at {version!r}, which is not a bundle version") from None
    parent, _, name = path.rpartition("/")
    root_key = hashlib.sha256(fs.unstrip_protocol(parent).encode()).hexdigest()[:16]
    cache = Path(cache_dir or default_cache_dir()) / root_key
    target = cache / name
    if _holds(target, manifest):
        with contextlib.suppress(OSError):
            os.utime(target)  # a copy in use counts as new when pruning
        return target
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
    try:
        files = [f for f in fs.find(path) if f.startswith(f"{path}/")]
        fs.get(files, [str(tmp / f[len(path) + 1:]) for f in files])
        if not _holds(tmp, manifest):
            raise BundleError(f"{location} changed while it was copied; try again")
        if target.exists() and not _holds(target, manifest):  # that version name was published again
            stale = cache / f".stale-{name}-{uuid.uuid4().hex[:8]}"
            os.rename(target, stale)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(tmp, target)
        except OSError:
            if not _holds(target, manifest):  # another process placed the same copy first: use it
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    copies = sorted((p for p in cache.iterdir() if not p.name.startswith(".") and p != target),
                    key=_mtime, reverse=True)
    for old in copies[CACHE_KEEP - 1:]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def _holds(folder: Path, manifest: bytes) -> bool:
    """Whether ``folder`` is a complete copy of the version with this manifest."""
    try:
        return (folder / "manifest.json").read_bytes() == manifest
    except OSError:
        return False


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


# -- helpers -------------------------------------------------------------------------------------
def _check_version(version: str) -> None:
    if not isinstance(version, str) or not _VERSION_RE.match(version) or version == LATEST:
        raise ValueError(f"bad bundle version {version!r}: use letters, digits, '.', '_' and '-', not 'latest'")


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False, allow_nan=False))


def _fsync_tree(folder: Path) -> None:
    """Flush the written files before the rename makes them visible."""
    for p in folder.rglob("*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
