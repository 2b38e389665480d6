"""One interface for every signal: a factor model whose score is an inner product.

Every signal (ALS, content, LightGCN, popularity) ends as user vectors and item vectors with
score(u, i) = <u, i>; that is what lets hybrid/ fuse them into one index (../shared/DESIGN.md).
Subclasses implement ``_fit`` and ``fold_in``; recommend, similar_items, save and load are shared.
A model that learns one of its own hyperparameters while fitting (LightGCN's early-stopped epoch
count) overrides ``refit_config``, which the pipeline's final fit on 'train' uses; ``refold`` is the
other way to that final model on large data: the item side kept, every user folded in again.

Constructors only store the config; learned state ends in ``_``.
"""

from __future__ import annotations

import copy
import importlib
import json
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp

from etl.dataset import Dataset
from etl.errors import ClientRequiredError, ModelDivergedError, NotFittedError
from etl.topk import topk, unit_rows
from etl.vocabulary import Vocabulary, vocabulary_file
from models.signals import SIGNALS

logger = logging.getLogger(__name__)

_REGISTRY: dict[str, type[FactorModel]] = {}
_FIT_IMPORTS = threading.Lock()
_HISTORIES_READ = threading.Lock()


def fitting_module(name: str) -> ModuleType:
    """Import a module only fits use (scikit-learn), under one lock for the process.

    Fits run side by side (training.pipeline.fit_signals), so two tasks in threads of one Dask
    worker can import scikit-learn for the first time at once; its package has import cycles, and
    the second thread then sees a partially initialised module ("cannot import name
    '_approximate_mode' from partially initialized module 'sklearn.utils.extmath'", seen in
    tests/test_cluster_topology.py). A server never imports these: they stay out of module scope."""
    with _FIT_IMPORTS:
        return importlib.import_module(name)
#: Where each signal's model kind lives, so that model_class() can import it on first use.
SIGNAL_MODULES: dict[str, str] = {s.kind: s.module for s in SIGNALS}


@dataclass(frozen=True)
class TrainingOptions:
    """Runtime options, kept apart from a model's config."""

    client: Any = None
    """The dask.distributed Client a fit runs on. Every fit needs one (ClientRequiredError when None):
    a model never opens a cluster itself; cluster.client.get_client() gives the project's."""
    device: str = "auto"
    """'auto', 'cpu' or 'cuda' for torch fits. 'auto' is CUDA where the worker's process sees a GPU,
    else CPU."""
    resources: Mapping[str, float] | None = None
    """Dask worker resources a torch fit's task asks for (``Client.submit(..., resources=...)``), e.g.
    ``{"GPU": 1}`` to run on a worker started with ``--resources GPU=1``; None runs anywhere.
    cluster.placement.training_options decides it from the cluster and ``device``."""
    seed: int = 0
    """Seed for every random draw of the fit."""
    progress: bool = False
    """Show a progress bar in the terminal."""


def require_client(client: Any, what: str) -> Any:
    """``client``, or ClientRequiredError saying that ``what`` runs on a Dask cluster and needs one."""
    if client is None:
        raise ClientRequiredError(
            f"{what} runs on a Dask cluster: pass a client (cluster.client.get_client(), or your own distributed.Client)"
        )
    return client


def user_blocks(n_users: int, n_blocks: int | None, options: TrainingOptions, what: str) -> tuple[Any, np.ndarray]:
    """The Dask client of ``options`` (ClientRequiredError naming ``what`` when None) and the bounds of
    the row blocks a fit splits its users into: ``n_blocks``, or twice the number of workers when None."""
    client = require_client(options.client, what)
    n_workers = max(1, len(client.scheduler_info(n_workers=-1)["workers"]))
    count = max(1, min(n_blocks or 2 * n_workers, n_users))
    return client, np.linspace(0, n_users, count + 1).astype(np.int64)


@dataclass
class TrainData:
    """What a model is fit on: a dataset, the split to fit, and the split to validate on."""

    dataset: Dataset
    split: str = "train"
    """'train' for a final fit, 'fit' while tuning (then validation is 'validation')."""
    validation: str | None = None

    def __post_init__(self) -> None:
        if self.validation is not None and self.split == "train":
            raise ValueError("validation must be None when fitting on the whole 'train' split (it is part of it)")

    def matrix(self, split: str | None = None) -> sp.csr_matrix:
        """users x items CSR of ``split`` (default: the fitted split), cached per split."""
        key = split or self.split
        cache = self.__dict__.setdefault("_matrices", {})
        if key not in cache:
            cache[key] = self.dataset.matrix(key)
        return cache[key]

    def histories(self, split: str | None = None) -> sp.csr_matrix:
        """The time-ordered users x items CSR of ``split`` (``Dataset.matrix(split, ordered=True)``;
        default: the fitted split), cached per split: the fits and fold-ins that read histories in
        order share one copy (at 25M interactions each read took seconds). Readers must not
        change it (``sum_duplicates`` on a matrix sharing its index arrays sorts them in place)."""
        key = split or self.split
        with _HISTORIES_READ:  # fits side by side wait for one read rather than each reading
            cache = self.__dict__.setdefault("_histories", {})
            if key not in cache:
                cache[key] = self.dataset.matrix(key, ordered=True)
            return cache[key]


def register(cls: type[FactorModel]) -> type[FactorModel]:
    """Class decorator: make a model loadable by its ``kind``."""
    _REGISTRY[cls.kind] = cls
    return cls


def model_class(kind: str) -> type[FactorModel]:
    """The registered class of a model kind, importing its module on first use."""
    if kind not in _REGISTRY and kind in SIGNAL_MODULES:
        importlib.import_module(SIGNAL_MODULES[kind])
    if kind not in _REGISTRY:
        raise ValueError(f"unknown model kind {kind!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[kind]


@dataclass(frozen=True)
class FitData:
    """What a model was fit on besides its parameters: the user and item vocabularies, the users x
    items interactions (``seen_``) and the dataset split they are (``split_``). A bundle holds one
    copy for all its models."""

    users: Vocabulary
    items: Vocabulary
    seen: sp.csr_matrix
    split: str | None = None
    """The dataset split ``seen`` holds ('train', 'fit'); None for a model saved before it was recorded."""


class FactorModel(ABC):
    """A recommender with score(u, i) = <user_factors_[u], item_factors_[i]>."""

    kind: ClassVar[str]
    refolds: ClassVar[bool] = True
    """Whether the pipeline's fold-in refit (``refold``) applies; False for a signal whose fit
    costs less than a fold-in and whose item side follows the latest interactions (popularity)."""
    Config: ClassVar[type]
    _item_source: tuple[np.ndarray, float] | None = None
    """(columns, scale) that ``item_rows`` reads instead of ``item_factors_`` (``read_items_from``)."""

    def __init__(self, config: Any = None) -> None:
        if config is not None and not isinstance(config, self.Config):
            raise TypeError(f"{self.kind}: config must be a {self.Config.__name__}, got {type(config).__name__}")
        self.config = config if config is not None else self.Config()

    # -- learning -----------------------------------------------------------------------------
    def fit(self, data: TrainData, options: TrainingOptions | None = None) -> Self:
        """Learn user and item factors from ``data.split``. A fit that runs on Dask (every signal's
        but popularity's) does so on ``options.client``'s cluster: ClientRequiredError without one."""
        options = options or TrainingOptions()
        self.users_ = data.dataset.users
        self.items_ = data.dataset.items
        self.seen_ = data.matrix()
        self.split_: str | None = data.split
        self._fit(data, options)
        self._check_finite()
        return self

    @abstractmethod
    def _fit(self, data: TrainData, options: TrainingOptions) -> None:
        """Set user_factors_ and item_factors_ (float32, rows in vocabulary order)."""

    def refit_config(self) -> Any:
        """The config for the final fit on the whole 'train' split after this fit (training.pipeline
        refits every signal so): of this model's Config type, with whatever this fit learned about
        its own hyperparameters (an early-stopped model's validated epoch count). By default the
        config as given."""
        return self.config

    def refold(self, data: TrainData) -> Self:
        """A copy of this fitted model for ``data``'s split with the item side unchanged and every
        user's vector folded in from that split's history (``fold_in_histories``): what the
        pipeline's final model is instead of a fit on 'train' when the data is large
        (training.pipeline.refit_signals); the same fold-in serving applies, one user at a time,
        to events after a bundle's cutoff. The vocabularies must be the ones this model was fit with (the same dataset's
        other split); the copy shares the item arrays."""
        self._require_fitted()
        histories = data.histories()
        if histories.shape != (len(self.users_), self.item_factors_.shape[0]):
            raise ValueError(f"{self.kind}: split {data.split!r} is {histories.shape[0]} users x "
                             f"{histories.shape[1]} items; the model was fit on "
                             f"{len(self.users_)} x {self.item_factors_.shape[0]}")
        new = copy.copy(self)
        new.users_, new.items_ = data.dataset.users, data.dataset.items
        new.seen_, new.split_ = data.matrix(), data.split
        new.user_factors_ = np.ascontiguousarray(self.fold_in_histories(histories), dtype=np.float32)
        new._check_finite()
        return new

    def fold_in_histories(self, histories: sp.csr_matrix) -> np.ndarray:
        """(rows, dim) float32: ``fold_in`` of every row of a time-ordered history matrix
        (``Dataset.matrix(split, ordered=True)``: item rows as columns, values as data). One call
        per row here; a model with a vectorised form of its fold-in overrides this."""
        out = np.zeros((histories.shape[0], self.dim), dtype=np.float32)
        indptr, indices, data = histories.indptr, histories.indices, histories.data
        for row in range(histories.shape[0]):
            lo, hi = indptr[row], indptr[row + 1]
            out[row] = self.fold_in(indices[lo:hi], data[lo:hi])
        return out

    @abstractmethod
    def fold_in(self, items: np.ndarray, values: np.ndarray | None = None) -> np.ndarray:
        """A user vector for a history (item rows, optional values), with item factors fixed.

        Used for users with new or no training history; an empty history gives a defined vector.
        """

    def history_terms(self, items: np.ndarray, values: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """A history's fold-in split by item: the distinct history rows (ascending) and each one's
        part of ``fold_in(items, values)``, float32 rows that add up to it. So
        <part_j, item_factors_[i]> is history item j's exact term of the folded-in user's score
        for item i: what explanations rank drivers by and show as their pull. A model whose
        fold-in does not split by history item (popularity) gives no rows."""
        return np.zeros(0, dtype=np.int64), np.zeros((0, self.dim), dtype=np.float32)

    def pull_operands(self, items: np.ndarray, item_rows: np.ndarray,
                      values: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each history item's pull on each of ``item_rows`` as a product of two sides: (rows, a,
        b) with <a[j], b[i]> = <part_j, item_factors_[item_rows[i]]>, ``history_terms``' term of
        history item rows[j] in the score of item_rows[i]; float32, C-contiguous. Explanations
        rank drivers by it. By default a holds the parts and b the items' vectors (``item_rows``);
        a model may split the product where that is cheaper (ALS)."""
        rows, parts = self.history_terms(items, values)
        targets = self.item_rows(np.asarray(item_rows, dtype=np.int64), dtype=np.float32)
        return rows, np.ascontiguousarray(parts, dtype=np.float32), targets

    def with_items(self, item_factors: np.ndarray, items: Vocabulary) -> Self:
        """A copy of this fitted model that also scores ``len(item_factors)`` items appended after its
        own (items added while serving, hybrid/catalogue.py), with these item vectors; ``items`` is
        the vocabulary of all of them. Their other per-item state is that of an item without
        interactions (``_extend_items``); user vectors and the trained items' arrays are shared."""
        self._require_fitted()
        factors = np.asarray(item_factors, dtype=self.item_factors_.dtype).reshape(-1, self.dim)
        n = self.item_factors_.shape[0] + len(factors)
        if len(items) != n:
            raise ValueError(f"items holds {len(items)} ids for {n} items")
        new = copy.copy(self)
        new.item_factors_ = np.concatenate([np.asarray(self.item_factors_), factors])
        new._item_source = None  # the columns it read hold only the old items
        new.items_ = items
        seen = self.seen_
        new.seen_ = sp.csr_matrix((seen.data, seen.indices, seen.indptr), shape=(seen.shape[0], n))
        new._extend_items(factors)
        return new

    def _extend_items(self, item_factors: np.ndarray) -> None:
        """Append the per-item arrays beyond the factors for items without interactions whose item
        vectors are ``item_factors`` (subclasses with such arrays override)."""

    def _check_finite(self) -> None:
        for name in ("user_factors_", "item_factors_"):
            arr = getattr(self, name)
            if not np.isfinite(arr).all():
                raise ModelDivergedError(f"{self.kind}: {name} has non-finite values after fit (diverged)")

    # -- scoring ------------------------------------------------------------------------------
    def _require_fitted(self) -> None:
        if not hasattr(self, "item_factors_"):
            raise NotFittedError(f"{self.kind} model is not fitted: call fit() or load() first")

    def _history(self, items: np.ndarray, values: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """``fold_in``'s arguments, checked: item rows (int64, each in [0, n_items)) and their values
        (float64, one per item) or None."""
        self._require_fitted()
        n_items = self.item_factors_.shape[0]
        items = np.asarray(items, dtype=np.int64).ravel()
        if items.size and (items.min() < 0 or items.max() >= n_items):
            bad = items[(items < 0) | (items >= n_items)]
            raise ValueError(f"item rows out of range [0, {n_items}): {bad[:5].tolist()}")
        if values is not None:
            values = np.asarray(values, dtype=np.float64).ravel()
            if values.shape != items.shape:
                raise ValueError(f"values has {values.size} entries for {items.size} items")
        return items, values

    @property
    def dim(self) -> int:
        self._require_fitted()
        return int(self.item_factors_.shape[1])

    def item_rows(self, rows: np.ndarray | slice, weights: np.ndarray | None = None,
                  dtype: type = np.float64) -> np.ndarray:
        """``weights[:, None] * item_factors_[rows]`` (no weights: the rows) as a new array of
        ``dtype`` (callers may change it in place): what fold-ins and their terms read. A served
        bundle points them at its fused item vectors (``read_items_from``), which its ranking reads
        anyway, so an API worker does not hold the signals' factor files as well."""
        source, scale = (self.item_factors_, 1.0) if self._item_source is None else self._item_source
        gathered = source[rows]  # an index array gathers a new array; a slice is a view
        factor = 1.0 / scale if weights is None else np.asarray(weights, dtype=np.float64)[:, None] / scale
        factor = np.asarray(factor, dtype=dtype)
        if isinstance(rows, slice) or gathered.dtype != dtype:  # converted and scaled in one pass
            return np.multiply(gathered, factor, dtype=dtype)
        gathered *= factor
        return gathered

    def read_items_from(self, columns: np.ndarray, scale: float) -> None:
        """Let ``item_rows`` read ``columns / scale`` instead of ``item_factors_``: this signal's
        columns of the fused item vectors (``FusedIndex.columns``), which are ``scale *
        item_factors_`` up to float32 rounding (hybrid/fusion.py). ValueError when the shapes
        differ or the scale is not positive."""
        self._require_fitted()
        if columns.shape != self.item_factors_.shape:
            raise ValueError(f"{self.kind}: columns have shape {columns.shape}, item factors {self.item_factors_.shape}")
        if not (np.isfinite(scale) and scale > 0):
            raise ValueError(f"{self.kind}: the scale must be finite and > 0, got {scale!r}")
        self._item_source = (columns, float(scale))

    def user_vectors(self, user_rows: np.ndarray) -> np.ndarray:
        self._require_fitted()
        return self.user_factors_[np.asarray(user_rows, dtype=np.int64)]

    def score(self, user_rows: np.ndarray) -> np.ndarray:
        """Dense (len(user_rows), n_items) float32 scores for a batch of users."""
        return self.user_vectors(user_rows) @ self.item_factors_.T

    def recommend(
        self,
        user_rows: np.ndarray,
        n: int = 10,
        filter_seen: bool = True,
        candidates: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-n item rows and scores per user, best first; -1 pads when too few are eligible."""
        user_rows = np.atleast_1d(np.asarray(user_rows, dtype=np.int64))
        scores = self.score(user_rows).astype(np.float32, copy=True)
        if candidates is not None:
            mask = np.ones(scores.shape[1], dtype=bool)
            mask[np.asarray(candidates, dtype=np.int64)] = False
            scores[:, mask] = -np.inf
        return topk(scores, n, exclude=self.seen_[user_rows] if filter_seen else None)

    def similar_items(self, item_rows: np.ndarray, n: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Top-n most similar items by cosine of item factors (the item itself excluded)."""
        self._require_fitted()
        item_rows = np.atleast_1d(np.asarray(item_rows, dtype=np.int64))
        unit = unit_rows(self.item_factors_)
        scores = unit[item_rows] @ unit.T
        scores[np.arange(len(item_rows)), item_rows] = -np.inf
        return topk(scores, n)

    # -- persistence (npy/JSON/Parquet, no pickle) ----------------------------------------------
    def save(self, path: str | Path, *, data: bool = True) -> None:
        """Write the model to a folder: its kind, config and learned parameters (npy/JSON), and with
        ``data`` the interactions it was fit on, their vocabularies and their split, so the folder
        loads on its own. A bundle saves its models without them (``data=False``): it holds one
        copy for all."""
        self._require_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta: dict[str, Any] = {"kind": self.kind, "config": asdict(self.config), "state": self._extra_state()}
        if data:
            meta["data"] = {"split": self.split_}
        (path / "model.json").write_text(json.dumps(meta, indent=2, default=str))
        np.save(path / "user_factors.npy", self.user_factors_, allow_pickle=False)
        np.save(path / "item_factors.npy", self.item_factors_, allow_pickle=False)
        if data:
            sp.save_npz(path / "seen.npz", self.seen_.tocsr(), compressed=True)
            self.users_.save(path / "users.json")
            self.items_.save(path / "items.json")
        for name, arr in self._extra_arrays().items():
            np.save(path / f"{name}.npy", arr, allow_pickle=False)

    @classmethod
    def load(cls, path: str | Path, mmap: bool = False, *, data: FitData | None = None) -> FactorModel:
        """Load any registered model kind from a folder written by save(); ``mmap``: every array
        (factors and the rest, such as projections) memory-mapped read-only, so a server holds
        only the pages it reads and its workers share them. ``data``: the interactions and
        vocabularies it was fit on, for a folder saved without them (a bundle's); when given they
        are used instead of the folder's own."""
        path = Path(path)
        meta = json.loads((path / "model.json").read_text())
        klass = model_class(meta["kind"])
        if cls is not FactorModel and klass is not cls:
            raise ValueError(f"{path} holds a {meta['kind']} model, not {cls.kind}")
        known = {f.name for f in fields(klass.Config)}
        model = klass(klass.Config(**{k: v for k, v in meta["config"].items() if k in known}))
        mode = "r" if mmap else None
        model.user_factors_ = np.load(path / "user_factors.npy", mmap_mode=mode, allow_pickle=False)
        model.item_factors_ = np.load(path / "item_factors.npy", mmap_mode=mode, allow_pickle=False)
        if data is None:
            if not (path / "seen.npz").exists():
                raise ValueError(f"{path} holds the model's parameters only: load it with the data it was fit on")
            data = FitData(Vocabulary.load(vocabulary_file(path, "users"), kind="user"),
                           Vocabulary.load(vocabulary_file(path, "items"), kind="item"), sp.load_npz(path / "seen.npz").tocsr(),
                           meta.get("data", {}).get("split"))
        model.users_, model.items_, model.seen_, model.split_ = data.users, data.items, data.seen, data.split
        arrays = {p.stem: np.load(p, mmap_mode=mode, allow_pickle=False) for p in path.glob("*.npy")
                  if p.stem not in ("user_factors", "item_factors")}
        model._restore(meta.get("state", {}), arrays)
        return model

    def _extra_state(self) -> dict[str, Any]:
        """JSON-able learned state beyond the factors (subclasses override)."""
        return {}

    def _extra_arrays(self) -> dict[str, np.ndarray]:
        """Array state beyond the factors, saved as <name>.npy (subclasses override)."""
        return {}

    def _restore(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Inverse of _extra_state/_extra_arrays."""


class LinearFoldIn(FactorModel):
    """A model whose user vector is a weighted sum of per-item rows of ``projection_``:
    ``fold_in(history) = w @ projection_[rows]`` with ``(rows, w) = history_weights(history)``
    (content, lightgcn, svd, sequence). So w_j <projection_[j], item_factors_[i]> is history item j's exact
    part of the user's score for item i, which explanations show as its pull."""

    projection_: np.ndarray
    """(n_items, dim) rows a history is folded over (learned state, set by ``_fit`` or ``load``;
    a model that derives them overrides ``projection_rows`` instead)."""

    @abstractmethod
    def history_weights(self, items: np.ndarray, values: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The distinct item rows of a history given oldest first (ascending) and each one's
        weight in the user vector; no rows when the history gives the zero vector."""

    def fold_in(self, items: np.ndarray, values: np.ndarray | None = None) -> np.ndarray:
        """The user vector of a history given oldest first (item rows, optional values); a history
        without weighted rows (e.g. an empty one) gives the zero vector."""
        rows, weights = self.history_weights(items, values)
        if rows.size == 0:
            return np.zeros(self.dim, dtype=np.float32)
        return (weights @ self.projection_rows(rows)).astype(np.float32)

    def history_terms(self, items: np.ndarray, values: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """w_j * projection_[j] per distinct history row (``FactorModel.history_terms``)."""
        rows, weights = self.history_weights(items, values)
        parts = weights[:, None] * self.projection_rows(rows)
        return rows, parts.astype(np.float32).reshape(len(rows), self.dim)

    def projection_rows(self, rows: np.ndarray) -> np.ndarray:
        """``projection_[rows]`` as float64."""
        return np.asarray(self.projection_[rows], dtype=np.float64)


# -- data the workers read from this process -------------------------------------------------------
SUBMIT_ATTEMPTS = 4
"""Submissions of one round of tasks on shared data before a lost-data error is final."""


def _lost_errors() -> tuple[type[BaseException], ...]:
    from distributed import CancelledError
    from distributed.comm import CommClosedError
    from distributed.scheduler import KilledWorker

    return CancelledError, KilledWorker, CommClosedError, OSError


class SharedValues:
    """Values this process holds and the workers read, scattered once and again only if lost.

    Dask cannot recompute scattered data, and broadcasting does not protect it: the active
    memory manager trims idle replicas to one (``Client.scatter``'s docs ask to turn its
    ReduceReplicas policy off for ``broadcast=True``; dask/dask#11148), and a broadcast that meets a
    dying worker stalls on connection time-outs. So each value lives on one worker (tasks go to
    their block's data, or workers fetch it), and a value the cluster lost is scattered again from
    here (``gather_shared``). Every scatter of the project's training code goes through this class.
    """

    def __init__(self, client: Any, values: list[Any]) -> None:
        self.client, self.values = client, values
        self.futures: list[Any] = [None] * len(values)

    def get(self, fresh: bool = False) -> list[Any]:
        """Futures of the values; ``fresh`` scatters them all again."""
        stale = [k for k, f in enumerate(self.futures) if fresh or f is None or f.status != "finished"]
        if stale:
            new = self.client.scatter([self.values[k] for k in stale], hash=False)
            for k, f in zip(stale, new, strict=True):
                self.futures[k] = f
        return list(self.futures)

    def release(self) -> None:
        """Let the cluster drop the values (a later ``get`` scatters them again)."""
        self.futures = [None] * len(self.values)


def gather_shared(client: Any, what: str, submit: Callable[[bool, str], list[Any]]) -> list[Any]:
    """The results of one round of tasks that read SharedValues.

    ``submit(fresh, suffix)`` submits the round (``fresh``: scatter the shared values again;
    ``suffix``: for the task keys of a retry). A lost worker costs only its running tasks (Dask
    reruns them) unless it took the last copy of shared data with it: then the round is submitted
    again, from the second retry on data scattered afresh from this process.
    """
    lost = _lost_errors()
    for attempt in range(SUBMIT_ATTEMPTS):
        try:
            return client.gather(submit(attempt > 1, f"-retry{attempt}" if attempt else ""))
        except lost as err:
            if attempt + 1 == SUBMIT_ATTEMPTS:
                raise
            logger.warning("%s lost a worker or its data (%s: %s); submitting again", what, type(err).__name__, err)
            time.sleep(0.5 * (attempt + 1))  # let the scheduler notice the dead worker
    raise AssertionError("unreachable")
