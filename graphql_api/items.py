"""Items added to the catalogue while serving (``upsertItems``, ``hybridrec items add``): their
validation, where they are kept, and how the trainer reads them.

An item is an id with its metadata (title, genres, tags, year). Upserting one is idempotent: the
same metadata again changes nothing (no new catalogue version); other metadata for a known id
replaces it (the newest write wins, by the time it was accepted). A bad row rejects its whole
batch, before anything is written, with an ``InvalidItem`` naming the row and the field.

Kept like the events (graphql_api.events), in either or both places:

- the events folder (HYBRIDREC_EVENTS_DIR): ``items.jsonl``, one JSON line per accepted change
  (``{"at": accepted_at, "item": {...}}``), appended under the folder's lock and fsync'd before the
  write answers; a line repeating the id's current metadata is never written. Its size and inode
  tell a poller cheaply that it changed;
- Redis (HYBRIDREC_REDIS_URL): the hash ``<prefix>:items`` (id -> the item's canonical JSON), the
  hash ``<prefix>:items:at`` (id -> when that metadata was accepted) and the counter
  ``<prefix>:items:version``, raised by the one Lua script that writes them, only when something
  changed. Replicas poll the counter.

Where both are configured an id's newest write wins across them (a write queued in the log while
Redis was down is copied into Redis when it answers again, unless Redis holds a newer one).
The full table (``read_added_items``) is what serving overlays on the bundle
(``graphql_api.engine.Engine.with_items``) and what the next training run merges into the items
table of its dataset (``cluster.jobs.training_source``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from etl.file_lock import append_durably, exclusive, fsync_dir
from graphql_api.errors import InvalidItem
from graphql_api.input_limits import MAX_STRING_LENGTH

ITEMS_FILE = "items.jsonl"
LOCK_FILE = ".lock"
"""The events folder's lock (graphql_api.events.LOCK_FILE): one writer at a time in the folder."""
MAX_ID_LENGTH = MAX_STRING_LENGTH
"""As every id the API takes (graphql_api.service.check_id)."""
MAX_TITLE_LENGTH = MAX_STRING_LENGTH
MAX_LABELS = {"genres": 20, "tags": 50}
"""Most genres and tags an item may carry."""
MAX_LABEL_LENGTH = 64
"""Longest genre or tag, in characters."""
MIN_YEAR, MAX_YEAR = 1800, 2100
MAX_BATCH = 100
"""Items per ``upsertItems`` call (hybridrec items add takes up to MAX_FILE_ITEMS)."""
MAX_FILE_ITEMS = 100_000
"""Items per file given to ``hybridrec items add``."""
REDIS_CHUNK = 500
"""Items per Lua call when a large file is written into Redis."""
COLUMNS: tuple[str, ...] = ("id", "title", "genres", "tags", "year")
"""Columns of an additions table (Engine.with_items): one row per id."""


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


# -- validation ---------------------------------------------------------------------------------------

def _missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    return isinstance(value, float) and math.isnan(value)


def _text(value: Any, row: int, field: str, most: int, *, required: bool) -> str:
    if _missing(value):
        if required:
            raise InvalidItem(f"{field} is missing", field=field, row=row)
        return ""
    if not isinstance(value, str):
        raise InvalidItem(f"{field} must be a string, got {type(value).__name__}", field=field, row=row)
    text = value.strip()
    if required and not text:
        raise InvalidItem(f"{field} must not be empty", field=field, row=row)
    if len(text) > most:
        raise InvalidItem(f"{field} is {len(text)} characters; at most {most}", field=field, row=row)
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise InvalidItem(f"{field} holds a control character", field=field, row=row)
    return text


def _labels(value: Any, row: int, field: str) -> tuple[str, ...]:
    if _missing(value):
        return ()
    if isinstance(value, str) or not isinstance(value, Sequence | pd.Series) and not hasattr(value, "tolist"):
        raise InvalidItem(f"{field} must be a list of strings", field=field, row=row)
    values = value.tolist() if hasattr(value, "tolist") else list(value)
    if len(values) > MAX_LABELS[field]:
        raise InvalidItem(f"{field} holds {len(values)} entries; at most {MAX_LABELS[field]}", field=field, row=row)
    out: dict[str, None] = {}
    for k, v in enumerate(values):
        label = _text(v, row, f"{field}[{k}]", MAX_LABEL_LENGTH, required=True)
        if "|" in label:  # the separator of the CSV form: it would not read back as one label
            raise InvalidItem(f"{field}[{k}] must not contain '|'", field=field, row=row)
        out.setdefault(label, None)
    return tuple(out)


def _year(value: Any, row: int) -> int | None:
    if _missing(value):
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) and not hasattr(value, "__index__"):
        raise InvalidItem(f"year must be an integer, got {str(value)[:40]!r}", field="year", row=row)
    if isinstance(value, float) and not value.is_integer():
        raise InvalidItem(f"year must be an integer, got {value!r}", field="year", row=row)
    year = int(value)
    if not MIN_YEAR <= year <= MAX_YEAR:
        raise InvalidItem(f"year must be between {MIN_YEAR} and {MAX_YEAR}, got {year}", field="year", row=row)
    return year


def validate_item(raw: Mapping[str, Any], row: int = 0) -> CatalogueItem:
    """One item from a mapping with id, title, genres, tags, year (InvalidItem naming the field)."""
    item_id = _text(raw.get("id"), row, "id", MAX_ID_LENGTH, required=True)
    if item_id != str(raw.get("id")):
        raise InvalidItem("id must not start or end with whitespace", field="id", row=row)
    return CatalogueItem(
        id=item_id,
        title=_text(raw.get("title"), row, "title", MAX_TITLE_LENGTH, required=True),
        genres=_labels(raw.get("genres"), row, "genres"),
        tags=_labels(raw.get("tags"), row, "tags"),
        year=_year(raw.get("year"), row),
    )


def validate_items(rows: Sequence[Mapping[str, Any]], *, most: int = MAX_BATCH) -> list[CatalogueItem]:
    """A batch, every row checked before anything is stored: InvalidItem (row and field named) for
    the first bad one, or for an empty or oversized batch. An id given twice keeps its last row."""
    if not rows:
        raise InvalidItem("the batch holds no items", field="items")
    if len(rows) > most:
        raise InvalidItem(f"the batch holds {len(rows)} items; at most {most} per call", field="items")
    last: dict[str, CatalogueItem] = {}
    for k, raw in enumerate(rows):
        item = validate_item(raw, k)
        last.pop(item.id, None)
        last[item.id] = item
    return list(last.values())


# -- the table ---------------------------------------------------------------------------------------

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
    """The additions table Engine.with_items takes: id, title (str), genres, tags (lists of str),
    year (nullable Int64), one row per id, in the order given."""
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


def catalogue_token(items: Iterable[CatalogueItem]) -> str:
    """A short hash of the added catalogue's content, equal in every process that holds the same
    items (in the answer cache's key: an answer is never served for another catalogue)."""
    digest = hashlib.sha256()
    for item in sorted(items, key=lambda i: i.id):
        digest.update(item.content().encode() + b"\n")
    return digest.hexdigest()[:16]


# -- the events folder's file ---------------------------------------------------------------------------

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


# -- Redis ---------------------------------------------------------------------------------------------

UPSERT_SCRIPT = """
-- KEYS[1] items hash, KEYS[2] accepted-at hash, KEYS[3] version counter; ARGV: groups of (id,
-- canonical json, accepted_at). An id's metadata is replaced when it differs and is not older
-- than what Redis holds; the version rises once per call that changed something. Returns the
-- version, then one flag per item: 1 changed, 0 unchanged (or older), and a flag whether the id
-- was held before.
local out = {}
local changed = 0
for i = 1, #ARGV, 3 do
  local held = redis.call('HGET', KEYS[1], ARGV[i])
  local flag = 0
  if held ~= ARGV[i + 1] then
    local at = redis.call('HGET', KEYS[2], ARGV[i])
    if not at or tonumber(at) <= tonumber(ARGV[i + 2]) then
      redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
      redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 2])
      changed = changed + 1
      flag = 1
    end
  end
  table.insert(out, flag)
  table.insert(out, held and 1 or 0)
end
local version = redis.call('GET', KEYS[3]) or '0'
if changed > 0 then version = tostring(redis.call('INCR', KEYS[3])) end
table.insert(out, 1, version)
return out
"""


def script_args(writes: Iterable[tuple[float, CatalogueItem]]) -> list[str]:
    """ARGV of UPSERT_SCRIPT for (accepted_at, item) pairs."""
    args: list[str] = []
    for at, item in writes:
        args += [item.id, item.content(), repr(at)]
    return args


def script_result(items: Sequence[CatalogueItem], out: Sequence[Any]) -> tuple[str, list[Upserted]]:
    flags = [int(x) for x in out[1:]]
    version = out[0].decode() if isinstance(out[0], bytes) else str(out[0])
    return version, [Upserted(item, bool(flags[2 * k]), bool(flags[2 * k + 1])) for k, item in enumerate(items)]


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


# -- writing and reading outside the API (CLI, trainer) -----------------------------------------------------

@dataclass(frozen=True)
class UpsertReport:
    added: int
    updated: int
    unchanged: int
    version: str
    """The Redis catalogue version after the write ('' without Redis)."""

    def summary(self) -> str:
        return f"{self.added} added, {self.updated} updated, {self.unchanged} unchanged"


def _redis_client(redis_url: str) -> Any:
    import redis

    return redis.Redis.from_url(redis_url)


def _check_redis_durable(client: Any) -> None:
    """Redis-only writes need an append-only file, as the API's (graphql_api.store): ValueError else."""
    from redis.exceptions import ResponseError

    if os.environ.get("HYBRIDREC_REDIS_ASSUME_DURABLE", "").lower() in ("1", "true", "yes"):
        return
    try:
        appendonly = str(client.config_get("appendonly").get("appendonly", "")).lower()
    except ResponseError:
        raise ValueError("redis persistence cannot be checked (CONFIG is disabled): give --events-dir, or set "
                         "HYBRIDREC_REDIS_ASSUME_DURABLE=true if it keeps an append-only file") from None
    if appendonly != "yes":
        raise ValueError("redis has no append-only file, so added items could be lost: give --events-dir, "
                         "or run redis-server --appendonly yes")


def upsert_items(items: Sequence[CatalogueItem], events_dir: str | Path | None = None, *,
                 redis_url: str | None = None, prefix: str = "hybridrec") -> UpsertReport:
    """Write validated items through the same store the API uses (the log first, then Redis), as
    ``hybridrec items add`` does; replicas pick them up on their next poll."""
    from graphql_api.store import RedisKeys

    if events_dir is None and redis_url is None:
        raise ValueError("adding items needs an events folder or a Redis URL (--events-dir, --redis-url)")
    at = time.time()
    results: list[Upserted] = []
    if events_dir is not None:
        results = ItemLog(events_dir).upsert(items, at)
    version = ""
    if redis_url is not None:
        keys = RedisKeys(prefix)
        client = _redis_client(redis_url)
        try:
            if events_dir is None:
                _check_redis_durable(client)
            script = client.register_script(UPSERT_SCRIPT)
            remote: list[Upserted] = []
            for start in range(0, len(items), REDIS_CHUNK):
                chunk = list(items[start:start + REDIS_CHUNK])
                version, done = script_result(chunk, script(keys=[keys.items, keys.items_at, keys.items_version],
                                                            args=script_args((at, i) for i in chunk)))
                remote += done
        finally:
            client.close()
        results = remote if not results else [
            Upserted(a.item, a.changed or b.changed, a.known or b.known) for a, b in zip(results, remote, strict=True)]
    added = sum(1 for r in results if r.changed and not r.known)
    updated = sum(1 for r in results if r.changed and r.known)
    return UpsertReport(added, updated, len(results) - added - updated, version)


def read_table(events_dir: str | Path | None = None, *, redis_url: str | None = None,
               prefix: str = "hybridrec") -> dict[str, tuple[float, CatalogueItem]]:
    """id -> (accepted_at, item): every added item, its newest write across both places."""
    from graphql_api.store import RedisKeys

    sources: list[Iterable[tuple[float, CatalogueItem]]] = []
    if events_dir is not None:
        sources.append(ItemLog(events_dir).table().values())
    if redis_url is not None:
        keys = RedisKeys(prefix)
        client = _redis_client(redis_url)
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


def read_items_file(path: str | Path, *, most: int = MAX_FILE_ITEMS) -> list[CatalogueItem]:
    """Items from a CSV (genres and tags as '|'-separated strings) or Parquet file (lists or the
    same strings) with columns id, title, genres, tags, year; validated as a batch (InvalidItem
    naming the file's row, 0-based after the header)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file")
    if p.suffix.lower() in (".parquet", ".pq"):
        frame = pd.read_parquet(p)
    elif p.suffix.lower() in (".csv", ".txt", ".tsv"):
        try:
            frame = pd.read_csv(p, dtype={"id": "string", "title": "string", "genres": "string", "tags": "string"},
                                keep_default_na=False, na_values={"year": [""]}, sep="\t" if p.suffix.lower() == ".tsv" else ",")
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
            raise ValueError(f"{p}: unreadable: {str(err).strip().splitlines()[0]}") from None
    else:
        raise ValueError(f"{p}: expected a .csv or .parquet file")
    missing = [c for c in ("id", "title") if c not in frame.columns]
    if missing:
        raise ValueError(f"{p}: missing column(s) {missing}; expected id,title,genres,tags,year")
    unknown = sorted(set(frame.columns) - set(COLUMNS))
    if unknown:
        raise ValueError(f"{p}: unknown column(s) {unknown}; expected id,title,genres,tags,year")
    rows: list[dict[str, Any]] = []
    for raw in frame.to_dict("records"):
        row = {k: (None if _missing(v) else v) for k, v in raw.items()}
        if isinstance(row.get("id"), int | np.integer) and not isinstance(row["id"], bool):
            row["id"] = str(row["id"])  # a Parquet column of integer ids
        for col in ("genres", "tags"):
            v = row.get(col)
            if isinstance(v, str):
                row[col] = [s for s in (x.strip() for x in v.split("|")) if s] if v.strip() else []
        year = row.get("year")
        if isinstance(year, str):  # a year that is not a number is refused by validate_items, named
            row["year"] = int(year.strip()) if year.strip().isdigit() else (year.strip() or None)
        rows.append(row)
    try:
        return validate_items(rows, most=most)
    except InvalidItem as err:
        where = f"line {err.row + 2}" if err.row is not None and p.suffix.lower() != ".parquet" else f"row {err.row}"
        raise InvalidItem(f"{p.name} {where}: {err.bare}" if err.row is not None else f"{p.name}: {err.bare}",
                          field=err.field or "items") from None
