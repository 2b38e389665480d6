"""Items added to the catalogue while serving, as stored, and how they are read back.

Kept like the events (etl.events_log), in either or both places:

- the events folder (HYBRIDREC_EVENTS_DIR): ``items.jsonl``, one JSON line per accepted change
  (``{"at": accepted_at, "item": {...}}``), appended under the folder's lock and fsync'd before the
  write answers; a line repeating the id's current metadata is never written. Its size and inode
  tell a poller cheaply that it changed;
- Redis (HYBRIDREC_REDIS_URL): the hash ``<prefix>:items`` (id -> the item's canonical JSON) and
  the hash ``<prefix>:items:at`` (id -> when that metadata was accepted), written by the API's
  Lua script (graphql_api.items).

Where both are configured an id's newest write wins across them. The full table
(``read_added_items``) is what serving overlays on the bundle (``graphql_api.engine.Engine.with_items``)
and what the next training run merges into the items table of its dataset
(``cluster.jobs.training_source``); validation of new items stays with the API (graphql_api.items).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from etl.events_log import RedisKeys
from etl.file_lock import append_durably, exclusive, fsync_dir

if TYPE_CHECKING:  # pandas is the trainer's: a server serves added items without it
    import pandas as pd

ITEMS_FILE = "items.jsonl"
LOCK_FILE = ".lock"
"""The events folder's lock (etl.events_log.LOCK_FILE): one writer at a time in the folder."""
COLUMNS: tuple[str, ...] = ("id", "title", "genres", "tags", "year")
"""Columns of an additions table (``additions_frame``): one row per id."""


@dataclass(frozen=True)
class CatalogueItem:
    """One item's metadata, validated and in canonical form (labels stripped, duplicates dropped)."""

    id: str
    title: str
    genres: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    year: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "genres": list(self.genres), "tags": list(self.tags),
                "year": self.year}

    def content(self) -> str:
        """Canonical JSON of the metadata: equal items, equal strings (what idempotence compares)."""
        return json.dumps(self.as_dict(), separators=(",", ":"), sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> CatalogueItem:
        year = raw.get("year")
        return cls(str(raw["id"]), str(raw["title"]), tuple(map(str, raw.get("genres") or ())),
                   tuple(map(str, raw.get("tags") or ())), None if year is None else int(year))


@dataclass(frozen=True)
class Upserted:
    """What one upsert did to one item."""

    item: CatalogueItem
    changed: bool
    """False: the catalogue held this exact metadata already (nothing written)."""
    known: bool
    """True: the id was in the added catalogue before (a change is then an update)."""


def newest(*sources: Iterable[tuple[float, CatalogueItem]]) -> dict[str, tuple[float, CatalogueItem]]:
    """id -> (accepted_at, item): each id's newest write across sources (ties: the larger content,
    so every process picks the same)."""
    out: dict[str, tuple[float, CatalogueItem]] = {}
    for source in sources:
        for at, item in source:
            held = out.get(item.id)
            if held is None or (at, item.content()) > (held[0], held[1].content()):
                out[item.id] = (at, item)
    return out


def additions_frame(items: Iterable[CatalogueItem]) -> pd.DataFrame:
    """The additions table the trainer merges into its items table: id, title (str), genres, tags
    (lists of str), year (nullable Int64), one row per id, in the order given."""
    import pandas as pd

    items = list(items)
    return pd.DataFrame({
        "id": pd.Series([i.id for i in items], dtype=object),
        "title": pd.Series([i.title for i in items], dtype=object),
        "genres": pd.Series([list(i.genres) for i in items], dtype=object),
        "tags": pd.Series([list(i.tags) for i in items], dtype=object),
        "year": pd.Series([i.year for i in items], dtype="Int64"),
    }, columns=list(COLUMNS))


def ordered(table: Mapping[str, tuple[float, CatalogueItem]]) -> list[CatalogueItem]:
    """A table's items by acceptance time (then id): the same order in every process."""
    return [item for _, item in sorted(table.values(), key=lambda p: (p[0], p[1].id))]


class ItemLog:
    """``items.jsonl`` of one events folder, read by tailing it (blocking: run it in a thread)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / ITEMS_FILE
        if not self.path.exists():
            self.path.touch()
            fsync_dir(self.folder)
        self._pos = (-1, 0)  # (inode, offset) read so far
        self._table: dict[str, tuple[float, CatalogueItem]] = {}
        self._lock = threading.RLock()  # the API reads and writes it from worker threads

    def signature(self) -> tuple[int, int]:
        """(inode, size): changes whenever a line is appended or the file is replaced (one stat)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return (-1, 0)
        return (st.st_ino, st.st_size)

    def table(self) -> dict[str, tuple[float, CatalogueItem]]:
        """id -> (accepted_at, item) as the file says now (new lines read since the last call)."""
        with self._lock:
            return self._read()

    def _read(self) -> dict[str, tuple[float, CatalogueItem]]:
        inode, size = self.signature()
        if inode != self._pos[0] or size < self._pos[1]:
            self._pos, self._table = (inode, 0), {}
        if size > self._pos[1]:
            with open(self.path, "rb") as fh:
                fh.seek(self._pos[1])
                data = fh.read(size - self._pos[1])
            end = data.rfind(b"\n") + 1  # a torn last line (a crash mid-write) waits, and is never completed
            lines = [line for line in data[:end].splitlines() if line.strip()]
            self._table = newest(self._table.values(), _parse(lines))
            self._pos = (inode, self._pos[1] + end)
        return dict(self._table)

    def upsert(self, items: Sequence[CatalogueItem], at: float | None = None) -> list[Upserted]:
        """Append the items whose metadata differs from the file's (fsync'd before this returns)."""
        at = time.time() if at is None else at
        with self._lock, exclusive(self.folder / LOCK_FILE):
            table = self._read()
            out = [Upserted(i, table.get(i.id, (0.0, None))[1] != i, i.id in table) for i in items]
            lines = [json.dumps({"at": at, "item": u.item.as_dict()}, separators=(",", ":"), ensure_ascii=False)
                     for u in out if u.changed]
            if lines:
                append_durably(self.path, ("\n".join(lines) + "\n").encode())
        return out


def _parse(lines: Iterable[bytes]) -> Iterator[tuple[float, CatalogueItem]]:
    for line in lines:
        try:
            raw = json.loads(line)
            yield float(raw["at"]), CatalogueItem.from_dict(raw["item"])
        except (ValueError, KeyError, TypeError):
            continue  # a torn line from a crash before the fsync


def redis_table(contents: Mapping[Any, Any], times: Mapping[Any, Any]) -> dict[str, tuple[float, CatalogueItem]]:
    """HGETALL of the items hash and of the accepted-at hash -> id -> (accepted_at, item)."""
    out: dict[str, tuple[float, CatalogueItem]] = {}
    for key, raw in contents.items():
        try:
            item = CatalogueItem.from_dict(json.loads(raw))
        except (ValueError, KeyError, TypeError):
            continue
        at = times.get(key)
        out[item.id] = (float(at) if at is not None else 0.0, item)
    return out


def redis_client(redis_url: str) -> Any:
    import redis

    return redis.Redis.from_url(redis_url)


def read_table(events_dir: str | Path | None = None, *, redis_url: str | None = None,
               prefix: str = "hybridrec") -> dict[str, tuple[float, CatalogueItem]]:
    """id -> (accepted_at, item): every added item, its newest write across both places."""
    sources: list[Iterable[tuple[float, CatalogueItem]]] = []
    if events_dir is not None:
        sources.append(ItemLog(events_dir).table().values())
    if redis_url is not None:
        keys = RedisKeys(prefix)
        client = redis_client(redis_url)
        try:
            sources.append(redis_table(client.hgetall(keys.items), client.hgetall(keys.items_at)).values())
        finally:
            client.close()
    return newest(*sources)


def read_added_items(events_dir: str | Path | None = None, *, redis_url: str | None = None,
                     prefix: str = "hybridrec") -> pd.DataFrame:
    """Every added item (the additions table: id, title, genres, tags, year), for the trainer."""
    if events_dir is None and redis_url is None:
        raise ValueError("read_added_items needs events_dir or redis_url")
    return additions_frame(ordered(read_table(events_dir, redis_url=redis_url, prefix=prefix)))
