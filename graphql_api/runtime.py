"""What one API process holds between requests: settings, metrics, the store and the engine.

The engine (one loaded bundle) sits behind a single attribute; hot reload builds the next engine
in a worker thread and then rebinds that attribute, an atomic swap: a request that already took
the old engine finishes on it, the next one gets the new one, and none fails in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time

import anyio.to_thread

from graphql_api.batching import SearchBatcher
from graphql_api.engine import Engine
from graphql_api.errors import NoBundle
from graphql_api.logs import get_logger
from graphql_api.metrics import Metrics
from graphql_api.settings import Settings
from graphql_api.store import Store
from hybrid.bundle import latest_version, version_path

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
        self._failed: dict[str, float] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.started_at = time.time()
        self.last_reload_error: str | None = None
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

    def swap(self, engine: Engine) -> None:
        """Serve ``engine`` from the next request on."""
        old = self._engine
        self._engine = engine
        if old is None:
            settle_heap()
        else:
            # the previous bundle is collectable again; it is collected (and the new one frozen) on
            # the next poll, once the requests that started on it have finished
            gc.unfreeze()
            self._settle_due = True
        self.metrics.set_bundle(engine.version)
        if old is not None:
            self.metrics.reloads.inc()
            log.info("switched bundle", extra={"from_version": old.version, "to_version": engine.version})
        else:
            log.info("loaded bundle", extra={"version": engine.version, "path": str(engine.bundle.path)})

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
        self.swap(engine)
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
        await self.load_latest()
        if self._engine is None:
            log.warning("no bundle to serve yet; /health reports not ready until one is published",
                        extra={"bundle_root": str(self.settings.bundle_root)})
        self._tasks.append(asyncio.get_running_loop().create_task(self._background()))

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
                await self.store.ping()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep polling whatever happens
                log.exception("background poll failed")
