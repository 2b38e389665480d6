"""What one API process holds between requests: settings, metrics, the store and the engine.

The engine (one loaded bundle) sits behind a single attribute; hot reload builds the next engine
in a worker thread and then rebinds that attribute, an atomic swap: a request that already took
the old engine finishes on it, the next one gets the new one, and none fails in between.

The running experiment (hybrid.experiments, the bundle root's ``experiments.json``) is polled the
same way and compiled for the served engine; the engine and its experiment are rebound together,
without an await between, so a request always takes a matching pair.

Items added while serving (graphql_api.items: ``upsertItems``, ``hybridrec items add``) are polled
too, several times a second and cheaply (the log's size, Redis's version counter): when they
changed, the served engine becomes the loaded bundle's engine with them
(``Engine.with_items``), built in a worker thread and swapped in like a new bundle, and a newly
loaded bundle gets them before it is served. ``catalogue_token`` names the additions the served
engine holds; it is swapped with the engine and is part of the answer cache's key.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time

import anyio.to_thread

from etl.items_log import CatalogueItem, ordered
from graphql_api.batching import SearchBatcher
from graphql_api.engine import Engine
from graphql_api.errors import NoBundle
from graphql_api.items import catalogue_token
from graphql_api.logs import get_logger
from graphql_api.metrics import Metrics
from graphql_api.settings import Settings
from graphql_api.store import RedisUnavailable, Store
from hybrid.bundle import latest_version, version_path
from hybrid.experiments import ActiveExperiment, ExperimentBook, read_book

log = get_logger("runtime")
FAILED_RETRY_SECONDS = 30.0
"""A version that failed to load is tried again after this long (it may have been repaired)."""
GC_YOUNG_THRESHOLD = 5000
"""Net allocations before a youngest-generation collection (Python's default: 700). A request
allocates and frees some thousand objects; at 700 nearly every request paid a collection, at 5000
the transient objects are freed by reference counting first (explained answers: GC time per
request 0.25 -> 0.08 ms)."""


def settle_heap(collect: bool = False) -> None:
    """Keep the cyclic garbage collector off what a loaded bundle holds.

    A served bundle is some 200,000 long-lived Python objects (vocabularies, item records, item
    text); each full collection walked them all, a 100-300 ms pause every few hundred requests
    in the middle of one (the p99 of answers with explanations). ``gc.freeze`` moves what is alive
    now out of the collector's sight; ``collect`` first reclaims what is garbage (a replaced bundle).
    """
    young, middle, old = gc.get_threshold()
    if young < GC_YOUNG_THRESHOLD:
        gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)
    if collect:
        gc.collect()
    gc.freeze()


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.store = Store(settings, self.metrics)
        self.searches = SearchBatcher(observe=self.metrics.search_batch.observe)
        """Rankings of concurrent requests, searched together."""
        self._engine: Engine | None = None
        self._base: Engine | None = None
        """The loaded bundle's engine, without added items (what ``with_items`` extends)."""
        self.catalogue_token = ""
        """catalogue_token of the added items the served engine holds ('' for none)."""
        self.added: dict[str, CatalogueItem] = {}
        """The added items the served engine holds, by id."""
        self._catalogue_seen: tuple[object, ...] | None = None
        self._catalogue_lock = asyncio.Lock()
        self._items_failed: tuple[str, str, float] | None = None  # (bundle folder, token, retry at)
        self.last_items_error: str | None = None
        self._failed: dict[str, float] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.started_at = time.time()
        self.last_reload_error: str | None = None
        self.experiments = ExperimentBook()
        """The bundle root's experiments as last read."""
        self.experiment: ActiveExperiment | None = None
        """The running experiment compiled for the served engine (None: none runs, or it does not fit)."""
        self.last_experiment_error: str | None = None
        self._settle_due = False

    # -- the engine ---------------------------------------------------------------------------------
    @property
    def engine(self) -> Engine:
        engine = self._engine
        if engine is None:
            raise NoBundle(f"no model bundle loaded from {self.settings.bundle_root}")
        return engine

    @property
    def ready(self) -> bool:
        return self._engine is not None

    def swap(self, engine: Engine, base: Engine | None = None, token: str = "",
             added: dict[str, CatalogueItem] | None = None) -> None:
        """Serve ``engine`` from the next request on: a bundle's engine (``base``, default
        ``engine``) with the added items of ``token`` (``added``; none by default)."""
        old = self._engine
        self._engine, self._base = engine, base if base is not None else engine
        self.catalogue_token, self.added = token, dict(added or {})
        self._compile_experiment()
        if old is None:
            settle_heap()
        else:
            # the previous bundle is collectable again; it is collected (and the new one frozen) on
            # the next poll, once the requests that started on it have finished
            gc.unfreeze()
            self._settle_due = True
        self.metrics.set_bundle(engine.version)
        if old is not None and old.version == engine.version and old.folder == engine.folder:
            log.info("serving the added catalogue", extra={"version": engine.version, "catalogue": token,
                                                            "added_items": len(self.added)})
        elif old is not None:
            self.metrics.reloads.inc()
            log.info("switched bundle", extra={"from_version": old.version, "to_version": engine.version})
        else:
            log.info("loaded bundle", extra={"version": engine.version, "path": str(engine.bundle.path)})

    # -- the experiment ------------------------------------------------------------------------------
    def _compile_experiment(self) -> None:
        engine, book = self._engine, self.experiments
        active = None
        if engine is not None and book.running is not None:
            try:
                active = ActiveExperiment.compile(book, engine.version, engine.signals, engine.bundle.weights,
                                                  engine.bundle.variants)
                self.last_experiment_error = None
            except ValueError as err:
                self.last_experiment_error = str(err)
                log.error("the running experiment does not fit the served bundle; serving without it",
                          extra={"experiment": book.running.name, "version": engine.version, "error": str(err)})
        previous, self.experiment = self.experiment, active
        if (previous.token if previous else None) != (active.token if active else None):
            self.metrics.set_experiment(active.name if active else None)
            log.info("experiment", extra={"running": active.token if active else None,
                                          "version": engine.version if engine else None})

    async def load_experiments(self) -> bool:
        """Read the root's experiments file; True when it changed (the new split serves from the next request)."""
        try:
            book = await anyio.to_thread.run_sync(read_book, self.settings.bundle_root)
        except Exception as err:  # noqa: BLE001 - a bad file must not stop the server: the last good one serves
            if self.last_experiment_error != str(err):
                log.error("experiments file unreadable; keeping the previous one", extra={"error": str(err)})
            self.last_experiment_error = str(err)
            return False
        if book == self.experiments:
            return False
        self.experiments = book
        self._compile_experiment()
        return True

    async def load_latest(self) -> bool:
        """Load the root's latest bundle if it differs from the one served; True when swapped."""
        root = self.settings.bundle_root
        try:
            target = await anyio.to_thread.run_sync(latest_version, root)
        except Exception as err:  # noqa: BLE001 - an unreadable root (network, bad pointer) must not stop the server
            self.last_reload_error = f"{root}: {err}"
            log.error("bundle root unreadable; still serving the current bundle",
                      extra={"bundle_root": str(root), "error": str(err)})
            return False
        if target is None:
            return False
        current = self._engine
        if current is not None and current.folder == target:
            return False
        if time.monotonic() < self._failed.get(target, 0.0):
            return False
        try:
            engine = await anyio.to_thread.run_sync(Engine.load, version_path(root, target), self.settings.bundle_cache)
        except Exception as err:  # noqa: BLE001 - a bad bundle must not stop the server
            self._failed[target] = time.monotonic() + FAILED_RETRY_SECONDS
            self.last_reload_error = f"{target}: {err}"
            log.error("bundle failed to load; still serving the previous one",
                      extra={"version": target, "error": str(err)})
            return False
        self.last_reload_error = None
        async with self._catalogue_lock:  # the catalogue poll swaps nothing in between
            signature = await self.store.catalogue_signature()
            token, added = await self._current_catalogue()
            served, served_token, served_items = await self._with_items(engine, token, added)
            self._catalogue_seen = signature if served_token == token else None
            self.swap(served, engine, served_token, served_items)
        return True

    # -- the added catalogue ------------------------------------------------------------------------------
    async def _current_catalogue(self) -> tuple[str, dict[str, CatalogueItem]]:
        """(token, items) of the added catalogue as the store holds it now; what is served now when
        the store cannot be read (Redis-only mode with Redis down)."""
        try:
            table = await self.store.catalogue()
        except RedisUnavailable:
            return self.catalogue_token, self.added
        items = ordered(table)
        return catalogue_token(items), {i.id: i for i in items}

    async def _with_items(self, base: Engine, token: str,
                          added: dict[str, CatalogueItem]) -> tuple[Engine, str, dict[str, CatalogueItem]]:
        """``base`` serving ``added`` (built in a worker thread), or, when that fails, ``base`` as
        served now: the error is logged and on /health, and the build retried after a while."""
        if not added:
            return base, "", {}
        failed = self._items_failed
        if failed is not None and failed[:2] == (base.folder, token) and time.monotonic() < failed[2]:
            return self._fallback(base)
        try:
            engine = await anyio.to_thread.run_sync(base.with_items, list(added.values()))
        except Exception as err:  # noqa: BLE001 - a catalogue that cannot be served must not stop serving
            self._items_failed = (base.folder, token, time.monotonic() + FAILED_RETRY_SECONDS)
            self.last_items_error = f"{len(added)} added items: {type(err).__name__}: {err}"
            log.exception("added items could not be served; serving without the change",
                          extra={"version": base.version, "catalogue": token})
            return self._fallback(base)
        self._items_failed, self.last_items_error = None, None
        return engine, token, added

    def _fallback(self, base: Engine) -> tuple[Engine, str, dict[str, CatalogueItem]]:
        """What to serve when the added catalogue cannot be applied to ``base``: the engine served
        now if it is of the same bundle, else ``base`` alone."""
        current = self._engine
        if current is not None and self._base is not None and self._base.folder == base.folder:
            return current, self.catalogue_token, self.added
        return base, "", {}

    async def refresh_catalogue(self, force: bool = False) -> bool:
        """Serve the store's added catalogue if it changed since the last look (cheap when it did
        not: a stat and a GET); True when the served engine was swapped. ``force`` reads it whatever
        the signature says (after this process wrote to it)."""
        base = self._base
        if base is None:
            return False
        async with self._catalogue_lock:  # one build at a time; a waiter finds it done
            signature = await self.store.catalogue_signature()
            if not force and signature == self._catalogue_seen:
                return False
            token, added = await self._current_catalogue()
            base = self._base
            if base is None:
                return False
            if token == self.catalogue_token:
                self._catalogue_seen = signature
                return False
            engine, served_token, served = await self._with_items(base, token, added)
            if served_token == token:
                self._catalogue_seen = signature
            if self._base is not base or engine is self._engine:  # a new bundle was swapped in meanwhile
                return False
            self.swap(engine, base, served_token, served)
            return True

    # -- life cycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        settings = self.settings
        if not settings.keys_configured:
            log.warning("DEVELOPMENT MODE: no API keys; anyone who reaches this server may record interactions, "
                        "read histories and erase users (HYBRIDREC_DEV=true). Set HYBRIDREC_API_KEYS in production.")
        if settings.weak_keys():
            log.warning("API keys shorter than 16 characters can be guessed", extra={"keys": settings.weak_keys()})
        await self.store.start()
        await self.load_experiments()
        await self.load_latest()
        if self._engine is None:
            log.warning("no bundle to serve yet; /health reports not ready until one is published",
                        extra={"bundle_root": str(self.settings.bundle_root)})
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._background()))
        if self.settings.items_poll_interval > 0:
            self._tasks.append(loop.create_task(self._poll_catalogue()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        await self.store.close()

    def settle(self) -> None:
        """After a reload: collect the previous bundle and freeze the served one (see settle_heap)."""
        if self._settle_due:
            self._settle_due = False
            settle_heap(collect=True)

    async def _background(self) -> None:
        """Poll the latest pointer (hot reload) and Redis (state, replay of queued events)."""
        interval = self.settings.reload_interval or 2.0
        while True:
            await asyncio.sleep(interval)
            try:
                self.settle()
                if self.settings.reload_interval > 0:
                    await self.load_latest()
                await self.load_experiments()
                await self.store.ping()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep polling whatever happens
                log.exception("background poll failed")

    async def _poll_catalogue(self) -> None:
        """Poll the added catalogue every ``items_poll_interval`` seconds (an item added on any
        replica is served here within about that, plus the build)."""
        while True:
            await asyncio.sleep(self.settings.items_poll_interval)
            try:
                await self.refresh_catalogue()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep polling whatever happens
                log.exception("catalogue poll failed")
