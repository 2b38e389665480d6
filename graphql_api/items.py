"""Items added to the catalogue while serving (``upsertItems``, ``hybridrec items add``): their
validation and how they are written.

An item is an id with its metadata (title, genres, tags, year). Upserting one is idempotent: the
same metadata again changes nothing (no new catalogue version); other metadata for a known id
replaces it (the newest write wins, by the time it was accepted). A bad row rejects its whole
batch, before anything is written, with an ``InvalidItem`` naming the row and the field.

Kept like the events, in either or both places (the stores and their reading: etl.items_log):

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
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from etl.events_log import RedisKeys
from etl.jsonable import is_missing
from etl.items_log import COLUMNS, CatalogueItem, ItemLog, Upserted, redis_client
from graphql_api.errors import InvalidItem
from graphql_api.input_limits import MAX_STRING_LENGTH

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


# -- validation ---------------------------------------------------------------------------------------

def _text(value: Any, row: int, field: str, most: int, *, required: bool) -> str:
    if is_missing(value):
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
    if is_missing(value):
        return ()
    if isinstance(value, str) or not isinstance(value, Sequence) and not hasattr(value, "tolist"):
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
    if is_missing(value):
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

def catalogue_token(items: Iterable[CatalogueItem]) -> str:
    """A short hash of the added catalogue's content, equal in every process that holds the same
    items (in the answer cache's key: an answer is never served for another catalogue)."""
    digest = hashlib.sha256()
    for item in sorted(items, key=lambda i: i.id):
        digest.update(item.content().encode() + b"\n")
    return digest.hexdigest()[:16]


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


# -- writing outside the API (CLI) --------------------------------------------------------------------

@dataclass(frozen=True)
class UpsertReport:
    added: int
    updated: int
    unchanged: int
    version: str
    """The Redis catalogue version after the write ('' without Redis)."""

    def summary(self) -> str:
        return f"{self.added} added, {self.updated} updated, {self.unchanged} unchanged"


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
    if events_dir is None and redis_url is None:
        raise ValueError("adding items needs an events folder or a Redis URL (--events-dir, --redis-url)")
    at = time.time()
    results: list[Upserted] = []
    if events_dir is not None:
        results = ItemLog(events_dir).upsert(items, at)
    version = ""
    if redis_url is not None:
        keys = RedisKeys(prefix)
        client = redis_client(redis_url)
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


def read_items_file(path: str | Path, *, most: int = MAX_FILE_ITEMS) -> list[CatalogueItem]:
    """Items from a CSV (genres and tags as '|'-separated strings) or Parquet file (lists or the
    same strings) with columns id, title, genres, tags, year; validated as a batch (InvalidItem
    naming the file's row, 0-based after the header)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file")
    import pandas as pd  # files are read by the CLI (hybridrec items add), not by a server

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
        row = {k: (None if is_missing(v) else v) for k, v in raw.items()}
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
