"""Concurrent requests' rankings answered together: one ``FusedIndex.search`` for a batch of queries.

An uncached recommendation spent a third of its time in the exact search, most of that reading
the int8 screen's arrays (hybrid/screening.py), which are mostly out of the CPU cache by the next
request. A batch of queries reads them once: on the six-signal ml-latest-small bundle, with the
cache flushed between calls, ~0.44 ms a query in batches of 8 against ~1.1 ms one by one. Under
the load bench (16 connections, two workers) batches held ~6 queries on average; with this and
the batched kernel, server CPU per uncached request fell from 3.6 to 2.9 ms (same run of both).

Dynamic batching, as model servers do it: a request opens a ``slot`` before its first await (the
user's state), plans its query, and asks ``slot.search``. The batch is searched as soon as every
open slot has asked (the requests that were in flight together arrive within a few turns of the
event loop), when it holds ``max_batch`` queries, or ``max_delay`` seconds after its first query,
whichever comes first. A lone request is searched at the end of the loop turn it asked in.
Searches with an item filter are not batched (a batch shares one filter).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import numpy as np

from hybrid.index import FusedIndex

__all__ = ["MAX_BATCH", "MAX_DELAY", "SearchBatcher", "SearchSlot"]

MAX_BATCH = 16
"""Queries per search at most."""
MAX_DELAY = 0.002
"""Seconds a queued query waits at most for the other open slots."""

Answer = tuple[np.ndarray, np.ndarray]


class SearchSlot:
    """One request's place in the next batch (from ``SearchBatcher.slot``)."""

    def __init__(self, batcher: SearchBatcher) -> None:
        self._batcher = batcher
        self.asked = False

    async def search(self, index: FusedIndex, query: np.ndarray, k: int, exclude: np.ndarray,
                     allowed: np.ndarray | None = None) -> Answer:
        """``index.search(query, k, exclude=exclude, allowed=allowed)``, batched with the queries
        of the other open slots (same index and k, no filter)."""
        if self.asked:
            raise RuntimeError("a search slot answers one search")
        self.asked = True
        return await self._batcher._ask(index, query, k, exclude, allowed)


class SearchBatcher:
    """Batches the exact searches of one event loop (one per API process)."""

    def __init__(self, observe: Callable[[int], None] | None = None, max_batch: int = MAX_BATCH,
                 max_delay: float = MAX_DELAY) -> None:
        if max_batch < 1 or max_delay < 0:
            raise ValueError(f"max_batch must be >= 1 and max_delay >= 0, got {max_batch}, {max_delay}")
        self.max_batch = max_batch
        self.max_delay = max_delay
        self._observe = observe
        """Called with the size of every batch searched (the metrics' histogram)."""
        self._waiting = 0
        """Open slots that have not asked yet."""
        self._queue: list[tuple[FusedIndex, int, np.ndarray, np.ndarray, asyncio.Future[Answer]]] = []
        self._flush_handle: asyncio.Handle | None = None
        self._timer: asyncio.TimerHandle | None = None

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[SearchSlot]:
        """A slot for one request: open it before the request's first await and search through it."""
        slot = SearchSlot(self)
        self._waiting += 1
        try:
            yield slot
        finally:
            if not slot.asked:  # left without searching (an error, a cold answer): stop waiting for it
                self._waiting -= 1
                self._check()

    async def _ask(self, index: FusedIndex, query: np.ndarray, k: int, exclude: np.ndarray,
                   allowed: np.ndarray | None) -> Answer:
        self._waiting -= 1
        if allowed is not None:
            self._check()
            return self._searched(index, [query], k, [exclude], allowed)[0]
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._queue.append((index, k, query, exclude, future))
        self._check()
        return await future

    def _check(self) -> None:
        """Schedule the flush when the batch is complete, else arm the timer of its first query."""
        if not self._queue or self._flush_handle is not None:
            return
        loop = asyncio.get_running_loop()
        if self._waiting <= 0 or len(self._queue) >= self.max_batch:
            self._flush_handle = loop.call_soon(self._flush)
        elif self._timer is None:
            self._timer = loop.call_later(self.max_delay, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        queue, self._queue = self._queue, []
        groups: dict[tuple[int, int], list[tuple[FusedIndex, int, np.ndarray, np.ndarray, asyncio.Future[Answer]]]] = {}
        for entry in queue:
            if not entry[4].done():  # not cancelled
                groups.setdefault((id(entry[0]), entry[1]), []).append(entry)
        for group in groups.values():
            for start in range(0, len(group), self.max_batch):
                batch = group[start : start + self.max_batch]
                index, k = batch[0][0], batch[0][1]
                try:
                    answers: list[Answer | BaseException] = list(
                        self._searched(index, [e[2] for e in batch], k, [e[3] for e in batch], None))
                except Exception:  # noqa: BLE001 - one bad query must not fail the others: each alone
                    answers = [self._alone(index, e[2], k, e[3]) for e in batch]
                for entry, answer in zip(batch, answers, strict=True):
                    future = entry[4]
                    if future.done():
                        continue
                    if isinstance(answer, BaseException):
                        future.set_exception(answer)
                    else:
                        future.set_result(answer)

    def _searched(self, index: FusedIndex, queries: list[np.ndarray], k: int, excludes: list[np.ndarray],
                  allowed: np.ndarray | None) -> list[Answer]:
        if self._observe is not None:
            self._observe(len(queries))
        if len(queries) == 1:
            return [index.search(queries[0], k, exclude=excludes[0], allowed=allowed)]
        rows, scores = index.search(np.stack(queries), k, exclude=excludes, allowed=allowed)
        keep = rows >= 0
        return [(rows[j][keep[j]], scores[j][keep[j]]) for j in range(len(queries))]

    def _alone(self, index: FusedIndex, query: np.ndarray, k: int, exclude: np.ndarray) -> Answer | BaseException:
        try:
            return self._searched(index, [query], k, [exclude], None)[0]
        except Exception as err:  # noqa: BLE001 - handed to that request
            return err
