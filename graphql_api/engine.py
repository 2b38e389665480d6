"""One loaded bundle ready to serve: the recommender, item records, and the online fold-in.

An ``Engine`` is immutable once built; hot reload builds a new one and swaps the reference
(graphql_api.runtime), and every request works on the engine it started with, so a request never
mixes two bundle versions.
"""

from __future__ import annotations

import ctypes
import dataclasses
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from etl.events_log import learned_events
from etl.items_log import CatalogueItem
from etl.topk import topk
from graphql_api.errors import BadInput
from graphql_api.store import UserState
from hybrid import bundle as bundles
from hybrid.bundle import Bundle
from hybrid.catalogue import extend
from hybrid.explain import explain_items
from hybrid.index import ItemFilter
from hybrid.recommender import History, HybridRecommender
from models.signals import SIGNALS

MAX_FIRST = 100
EXACT_SCAN_ITEMS = 20_000
"""Catalogues up to this size are ranked exactly, not by HNSW: on one core the int8-screened exact
search (hybrid/screening.py) of 9.7k x 993 six-signal fused vectors takes ~0.6-1.1 ms alone and
~0.45 ms a query in a batch (a float32 scan ~2.4 ms), an HNSW search deep enough for a user's
excluded history 6-9 ms (and exact answers are the reference HNSW approximates). With graph spaces
(bench/search_paths.py, paths interleaved, 2026-12-07, load 0.7-0.9): at 9,742 items the screen
0.39 ms a query against 1.3 for the bundle's graph-space HNSW; at 62,423 items (the 25M bundle)
1.0-1.1 against 0.8."""

#: GraphQL signal names <-> bundle signal names.
SIGNAL_NAMES: dict[str, str] = {s.name: s.graphql for s in SIGNALS}


@dataclass(frozen=True)
class ItemRecord:
    """An item as the API shows it (a row of the bundle's item table)."""

    row: int
    id: str
    title: str
    genres: tuple[str, ...]
    tags: tuple[str, ...]
    year: int | None
    mean_rating: float | None
    popularity: int
    """Interactions with the item in the bundle's dataset (the item table's count)."""


@dataclass(frozen=True)
class OnlineHistory:
    """The history a request folds in, and what it was built from."""

    override: History | None
    """None: the trained vectors serve as they are."""
    online: tuple[tuple[int, float, int], ...]
    """(item row, value, timestamp) of online events the bundle knows the item of, newest last."""
    trained_hidden: bool
    """True when the user's data was deleted after this bundle was trained."""


def check_first(first: int, field: str = "first") -> int:
    if not 1 <= first <= MAX_FIRST:
        raise BadInput(f"{field} must be between 1 and {MAX_FIRST}, got {first}", field=field)
    return first


def serving_threads() -> None:
    """BLAS on one thread in a serving process: numpy's OpenBLAS and scipy's (a separate library,
    which the ALS fold-in's Cholesky uses), loaded here first, since a limit reaches only the
    libraries loaded when it is set.

    A request runs a few small products (a user vector against the catalogue: 9.7k x 129 on
    ml-latest-small), and the server runs one process per core: BLAS threads only contend with the
    other workers. On a loaded 2-core machine that product took 9-17 ms on two OpenBLAS threads
    against 0.6 ms on one; explained answers took 10 ms of CPU each instead of 2.8 when scipy's
    library was left on two threads.
    """
    import scipy.linalg  # noqa: F401 - loads scipy's OpenBLAS (numba's CPU target imports it anyway)

    threadpool_limits(limits=1, user_api="blas")


_M_TRIM_THRESHOLD = -1
"""glibc's mallopt parameter: free memory above this much at the top of the heap is given back."""
_M_MMAP_THRESHOLD = -3
"""glibc's mallopt parameter: allocations from this size up are mapped, and unmapped when freed."""

SERVING_MMAP_THRESHOLD = 4 * 1024 * 1024
"""Temporaries from this size up are mapped and given back when freed; smaller ones are reused
from the heap, whose free top is kept up to twice this (``serving_memory``)."""


def serving_memory() -> None:
    """Fixed malloc thresholds for a serving process (glibc's malloc; elsewhere nothing).

    Left to glibc, the mmap threshold rises each time a mapped block is freed (up to 32 MiB), so
    large temporaries soon come from the heap and stay in the worker's RSS once freed. At glibc's
    fixed default (128 KiB, trim at 128 KiB) every temporary above it (an explanation's gather of
    150 history rows of svd's 512 columns is 300 KiB) is mapped, or the heap top trimmed, afresh
    and faulted in page by page on each request. On the ml-latest-small six-signal bundle (a worker
    after bench/api_memory.py's warm-up of 200 users; explain_items over the top 10 of its 610
    users): left to glibc 286.5 MiB RSS and 0 page faults a user; 128 KiB fixed 272.9 MiB and
    19.6 faults a user (explain_items 10-30% slower in alternated processes); 4 MiB with the
    trim at 8 MiB, as set here, 274.4 MiB and 0 faults a user.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    for param, value in ((_M_MMAP_THRESHOLD, SERVING_MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, 2 * SERVING_MMAP_THRESHOLD)):
        if libc.mallopt(param, value) != 1:  # glibc answers 1 when it took the setting
            warnings.warn(f"serving_memory: mallopt({param}, {value}) was refused", RuntimeWarning, stacklevel=2)


class Engine:
    """Serving state of one bundle version."""

    def __init__(self, bundle: Bundle, loaded: Bundle | None = None) -> None:
        """``loaded``: the bundle as loaded from disk when ``bundle`` extends it with added items
        (``with_items``)."""
        self.loaded = loaded if loaded is not None else bundle
        index = bundle.index
        # a serving setting of the loaded index (the bundle on disk is unchanged)
        if index.config.exact_count < EXACT_SCAN_ITEMS:
            index.config = dataclasses.replace(index.config, exact_count=EXACT_SCAN_ITEMS)
        if len(index) <= EXACT_SCAN_ITEMS:
            # build the int8 screen and load its jitted kernel now, not in the first request
            index.screen.top_k(np.zeros((1, index.dim), np.float32), 1)
        else:  # HNSW ranks it: restore the graph now (a broken file fails the start, not a request)
            index.graph.get()
        if len(bundle.items):  # and the explanations' kernel
            explain_items(bundle, user_id="", user_row=None, history=np.zeros(1, np.int64),
                          query=np.zeros(index.dim, np.float32), item_rows=[0])
        index.release_pages()  # the warm-ups read every row (a zero query screens none out)
        self.bundle = bundle
        self.recommender = HybridRecommender(bundle)
        self._ids = bundle.items.ids
        self._table = bundle.items_table
        self._lower_titles = [t.casefold() for t in self._table.title.tolist()]
        self._records: dict[int, ItemRecord] = {}

    @classmethod
    def load(cls, path: str | Path, cache_dir: Path | None = None) -> Engine:
        """Load a bundle version folder, or a root's latest (memory-mapped factors and index).

        ``path`` may be an fsspec URL; the bundle is then copied into ``cache_dir`` first (see
        hybrid.bundle.load). Also puts this process's BLAS on one thread (see ``serving_threads``)
        and keeps its large temporaries out of the heap (``serving_memory``).
        """
        serving_threads()
        serving_memory()
        return cls(bundles.load(path, mmap=True, cache_dir=cache_dir))

    def with_items(self, additions: Sequence[CatalogueItem] | None) -> Engine:
        """An engine serving this bundle as loaded plus ``additions``, every item added while
        serving (hybrid/catalogue.py; for an id given twice the last one counts).
        Built from the loaded bundle each time, so a longer table replaces the last one, never
        stacks on it; an empty or None table gives the loaded bundle's engine. This engine is
        unchanged (requests in flight keep it); the caller decides when the table changed
        (graphql_api.runtime compares ``graphql_api.items.catalogue_token``)."""
        if not additions:
            return self if self.loaded is self.bundle else Engine(self.loaded)
        return Engine(extend(self.loaded, additions), loaded=self.loaded)

    # -- facts ------------------------------------------------------------------------------------
    @property
    def version(self) -> str:
        return self.bundle.version

    @property
    def folder(self) -> str:
        return self.bundle.path.name

    @property
    def created_at(self) -> datetime:
        return self.bundle.manifest.created_at

    @property
    def signals(self) -> tuple[str, ...]:
        return self.bundle.signals

    def user_known(self, user_id: str) -> bool:
        return user_id in self.bundle.users

    # -- items ------------------------------------------------------------------------------------
    def record(self, row: int) -> ItemRecord:
        rec = self._records.get(row)
        if rec is None:
            table = self._table
            year, rating = table.year[row], table.mean_rating[row]
            rec = ItemRecord(
                row=row,
                id=str(self._ids[row]),
                title=str(table.title[row]) or str(self._ids[row]),
                genres=table.genres[row],
                tags=table.tags[row],
                year=None if math.isnan(year) else int(year),
                mean_rating=None if math.isnan(rating) else float(rating),
                popularity=int(table.count[row]),
            )
            self._records[row] = rec  # bounded by the catalogue size
        return rec

    def record_of(self, item_id: str) -> ItemRecord:
        """The record of an id of this bundle; UnknownIdError for any other id."""
        return self.record(self.bundle.items.row(item_id))

    def item_rows(self, ids: Sequence[str]) -> np.ndarray:
        """Rows of external item ids; -1 for an id the bundle does not know."""
        return self.bundle.items.rows([str(i) for i in ids], missing="ignore")

    def items_by_id(self, ids: Sequence[str]) -> list[ItemRecord | None]:
        return [self.record(int(r)) if r >= 0 else None for r in self.item_rows(ids)]

    def search_items(self, title: str, first: int) -> list[ItemRecord]:
        """Items whose title contains ``title`` (case-insensitive), most popular first."""
        needle = title.strip().casefold()
        if not needle:
            raise BadInput("title must not be empty", field="title")
        hits = np.flatnonzero(np.fromiter((needle in t for t in self._lower_titles), bool, len(self._lower_titles)))
        best, _ = topk(self._table.count[hits].astype(np.float64), first)
        order = hits[best[best >= 0]]
        return [self.record(int(r)) for r in order]

    # -- users ------------------------------------------------------------------------------------
    def online_history(self, state: UserState) -> OnlineHistory:
        """The history to fold in for a user: trained interactions plus the online events this bundle
        has not learned (see etl.events_log.learned_events: each event counts once).

        A user deleted after this bundle read the deletions has no trained history here (the bundle
        still holds it, but it must not be used); one deleted before was left out of training.
        """
        hidden = state.deleted_at is not None and self.bundle.deletions_read_at < state.deleted_at
        if not state.events and not hidden:
            return OnlineHistory(None, (), False)
        trained = History(np.zeros(0, np.int64), np.zeros(0, np.float32)) if hidden \
            else self.recommender.history(state.user_id)
        online: list[tuple[int, float, int]] = []
        if state.events:
            rows = self.item_rows([e.item_id for e in state.events])
            learned = learned_events(trained.items, rows, [e.accepted_at for e in state.events],
                                     self.bundle.events_cutoff)
            online = [(int(r), float(e.value), int(e.timestamp))
                      for r, e, known in zip(rows, state.events, learned, strict=True) if r >= 0 and not known]
        if not online and not hidden:
            return OnlineHistory(None, (), False)
        base = trained
        if online:
            base = base.extend(np.array([o[0] for o in online]), np.array([o[1] for o in online], np.float32))
        return OnlineHistory(base, tuple(online), hidden)

    def trained_history(self, user_id: str) -> History:
        return self.recommender.history(user_id)

    # -- requests ---------------------------------------------------------------------------------
    def check_blend(self, variant: str | None, weights: Mapping[str, float] | None) -> None:
        """BadInput for an unknown variant, bad weights, or both given."""
        if variant is not None and weights is not None:
            raise BadInput("give either a variant or weights, not both", field="weights")
        if variant is not None and variant not in self.bundle.variants:
            known = ", ".join(self.bundle.variants.names)
            raise BadInput(f"unknown variant {variant!r}; known variants: {known}", field="variant")
        if weights is not None:
            missing = sorted(SIGNAL_NAMES.get(s, s) for s, w in weights.items() if s not in self.signals and w != 0)
            if missing:
                have = ", ".join(SIGNAL_NAMES.get(s, s) for s in self.signals)
                raise BadInput(f"weights name signal(s) {missing} that bundle {self.version} lacks; it has {have}",
                               field="weights")
            present = {s: w for s, w in weights.items() if s in self.signals}
            try:
                self.bundle.variants.weights_for(present)
            except ValueError as err:
                msg = str(err)
                for s, label in SIGNAL_NAMES.items():
                    msg = msg.replace(f"for {s} ", f"for {label} ")
                raise BadInput(msg, field="weights") from err

    def item_filter(self, spec: Mapping[str, Any] | None) -> ItemFilter | None:
        if not spec:
            return None
        try:
            return ItemFilter(**spec)
        except ValueError as err:
            raise BadInput(str(err), field="filter") from err

    def restrict_weights(self, weights: Mapping[str, float] | None) -> dict[str, float] | None:
        return None if weights is None else {s: float(w) for s, w in weights.items() if s in self.signals}
