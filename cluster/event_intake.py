"""The trainer's copy of the API's accepted events: read once, up to a cutoff, kept in the data root.

The API appends accepted interactions to its events folder and/or Redis; they are read here through
etl.events_log, the stores' reading side that the API imports too. A training run does not re-read
all of that every time: it reads only the events accepted after the previous run's cutoff and up to
a new one, adds them to ``<data root>/events.parquet`` (every event learned so far, written
atomically, the cutoff in the file's metadata), and trains on the source plus that file. Once every retained bundle version has learned an event, the online stores may drop
it (``trim_learned``).

Items added to the catalogue while serving (etl.items_log) are read whole at every run (the
stores keep them; they are few): ``Intake.items``, which ``cluster.jobs.training_source`` merges into
the items table of the dataset, so the next bundle knows them natively, with their events.

The cutoff is a time on the API's clock (``Event.accepted_at``), and it trails the moment of reading
by ``SETTLE_SECONDS``: an event is stamped just before it is appended, so everything stamped a
minute before the read is surely on disk or in Redis, on any replica whose clock is within a minute
of the trainer's. The invariant the serving side relies on: a bundle trained on a dataset with
cutoff ``c`` learned exactly the (undeleted) events with ``accepted_at <= c``; serving folds in only
events after ``c`` (graphql_api.engine.Engine.online_history), so no event is counted twice.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from etl.events_log import deleted_users, erasure_salt, read_accepted_events, user_key
from etl.items_log import read_added_items

EVENTS_FILE = "events.parquet"
SETTLE_SECONDS = 60.0
"""How far the cutoff trails the read: events stamped later wait for the next run."""
_META_KEY = b"hybridrec.events_cutoff"
COLUMNS = ("user_id", "item_id", "value", "timestamp", "accepted_at", "event_id")


@dataclass(frozen=True)
class Intake:
    """Every event a training run learns from, and where reading stopped."""

    events: pd.DataFrame
    """user_id, item_id (str), value (float32), timestamp (int64), accepted_at (float64), event_id:
    every accepted event with ``accepted_at <= cutoff``, deleted users' earlier events left out."""
    cutoff: float
    """API clock (epoch seconds): events after it are not in ``events``."""
    read_at: float
    """When the stores were read (deletions recorded after it are not applied here)."""
    new: int
    """Events read in this run (after the previous cutoff)."""
    deletions: dict[str, float]
    """User key -> deletion time of every deletion the stores hold (etl.events_log.user_key)."""
    salt: bytes = b""
    """The salt of those user keys."""
    items: pd.DataFrame | None = None
    """Items added while serving (etl.items_log: id, title, genres, tags, year; one row per id,
    its newest metadata); None when no store was read."""

    def deleted_ids(self, user_ids: Iterable[str]) -> set[str]:
        """Which of ``user_ids`` were deleted (at any time)."""
        if not self.deletions:
            return set()
        return {u for u in map(str, user_ids) if user_key(self.salt, u) in self.deletions}


def _empty() -> pd.DataFrame:
    return pd.DataFrame({c: [] for c in COLUMNS}).astype(
        {"user_id": "string", "item_id": "string", "value": "float32", "timestamp": "int64",
         "accepted_at": "float64", "event_id": "string"})


def learned(data_root: str | Path) -> tuple[pd.DataFrame, float | None]:
    """The events learned so far and their cutoff (None before the first run)."""
    path = Path(data_root) / EVENTS_FILE
    if not path.exists():
        return _empty(), None
    table = pq.read_table(path)
    cutoff = float((table.schema.metadata or {})[_META_KEY])
    return table.to_pandas().astype({"user_id": "string", "item_id": "string", "event_id": "string"}), cutoff


def _write(data_root: Path, events: pd.DataFrame, cutoff: float) -> None:
    table = pa.Table.from_pandas(events[list(COLUMNS)].reset_index(drop=True), preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), _META_KEY: repr(cutoff).encode()})
    data_root.mkdir(parents=True, exist_ok=True)
    tmp = data_root / f".{EVENTS_FILE}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        pq.write_table(table, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, data_root / EVENTS_FILE)
    finally:
        tmp.unlink(missing_ok=True)


def without_deleted(events: pd.DataFrame, deletions: dict[str, float], salt: bytes) -> pd.DataFrame:
    """Events minus those of a deleted user accepted before that user's deletion."""
    if not deletions or events.empty:
        return events
    keys = {u: user_key(salt, u) for u in events["user_id"].unique()}
    deleted_at = events["user_id"].map(keys).map(deletions).astype("float64").fillna(float("-inf"))
    return events[events["accepted_at"].to_numpy() > deleted_at.to_numpy()].reset_index(drop=True)


def take_events(
    data_root: str | Path, events_dir: str | Path | None, redis_url: str | None, *,
    prefix: str = "hybridrec", settle: float = SETTLE_SECONDS,
) -> Intake:
    """Read the events accepted since the last cutoff, add them to the learned ones, save.

    ``settle``: how far the cutoff trails the read (SETTLE_SECONDS; 0 only where nothing appends
    while the trainer reads). Deletions apply to everything learned so far (the saved file is rewritten without them), so an
    erased user's events leave the data root at the next run at the latest.
    """
    root = Path(data_root)
    old, previous = learned(root)
    read_at = time.time()
    cutoff = read_at - settle
    if previous is not None:
        cutoff = max(cutoff, previous)  # never moves back (a clock step backwards reads nothing new)
    if events_dir is None and redis_url is None:
        return Intake(old, previous if previous is not None else cutoff, read_at, 0, {})
    fresh = read_accepted_events(events_dir, redis_url=redis_url, prefix=prefix, since=previous, upto=cutoff)
    deletions = deleted_users(events_dir, redis_url=redis_url, prefix=prefix)
    salt = erasure_salt(events_dir, redis_url=redis_url, prefix=prefix)
    events = pd.concat([old, fresh], ignore_index=True) if len(old) else fresh
    events = events.drop_duplicates("event_id", keep="first")
    events = without_deleted(events, deletions, salt).sort_values(["accepted_at", "event_id"], kind="stable")
    events = events.reset_index(drop=True)
    _write(root, events, cutoff)
    items = read_added_items(events_dir, redis_url=redis_url, prefix=prefix)
    return Intake(events, cutoff, read_at, len(fresh), deletions, salt, items)
