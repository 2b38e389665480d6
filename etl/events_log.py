"""Accepted interactions and deletions as stored: the durable intake that feeds the next training run.

Two places hold them, either or both depending on configuration:

- a local folder (HYBRIDREC_EVENTS_DIR): ``events.jsonl`` and ``deletions.jsonl``, append-only
  JSON lines written under an exclusive ``flock`` and fsync'd before a mutation answers, so an
  accepted event survives a crash or restart; several processes may share the folder;
- Redis (HYBRIDREC_REDIS_URL): the stream ``<prefix>:events`` and the hash ``<prefix>:deletions``
  (key layout: ``RedisKeys``; written by graphql_api.store.RedisStore), shared by every replica.

The API writes them (graphql_api.events, graphql_api.store); the trainer (cluster.event_intake)
and the API both read them through this module, so neither imports the other. The trainer calls
``read_accepted_events`` and ``deleted_users``: the first gives every accepted interaction
(deduplicated across both places, deleted users' earlier events left out), the second the users
whose data must be left out of the next training run. Deletions are recorded under a salted hash
of the user id (``user_key``), never the id itself.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np

from etl.file_lock import append_durably, exclusive, fsync_dir

if TYPE_CHECKING:  # pandas is the trainer's: a server records and folds in events without it
    import pandas as pd

EVENTS_FILE = "events.jsonl"
DELETIONS_FILE = "deletions.jsonl"
EXPOSURES_FILE = "exposures.jsonl"
LOCK_FILE = ".lock"


@dataclass(frozen=True)
class Event:
    """One accepted interaction (external ids, as the client sent them)."""

    user_id: str
    item_id: str
    value: float
    timestamp: int
    """When the interaction happened (seconds since the epoch, client's clock)."""
    accepted_at: float = field(default_factory=time.time)
    """When the API accepted it (server clock); orders deletions against events."""
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    exposure_id: str | None = None
    """The exposure (a list shown under an experiment) this interaction answers, if the client said."""

    def to_json(self) -> str:
        raw = asdict(self)
        if raw["exposure_id"] is None:  # lines without an exposure stay as they were
            del raw["exposure_id"]
        return json.dumps(raw, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str | bytes) -> Event:
        raw = json.loads(line)
        return cls(
            user_id=str(raw["user_id"]),
            item_id=str(raw["item_id"]),
            value=float(raw["value"]),
            timestamp=int(raw["timestamp"]),
            accepted_at=float(raw["accepted_at"]),
            event_id=str(raw["event_id"]),
            exposure_id=None if raw.get("exposure_id") is None else str(raw["exposure_id"]),
        )


@dataclass(frozen=True)
class Exposure:
    """A list of items shown to a user under an experiment's arm (hybrid.experiments)."""

    exposure_id: str
    user_id: str
    experiment: str
    variant: str
    bundle_version: str
    items: tuple[str, ...]
    """The item ids shown, best first."""
    shown_at: float = field(default_factory=time.time)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str | bytes) -> Exposure:
        raw = json.loads(line)
        return cls(str(raw["exposure_id"]), str(raw["user_id"]), str(raw["experiment"]), str(raw["variant"]),
                   str(raw["bundle_version"]), tuple(str(i) for i in raw["items"]), float(raw["shown_at"]))


@dataclass(frozen=True)
class Deletion:
    """A user's data was purged at ``deleted_at``; training must leave the user out.

    Recorded under ``user_key`` (``user_key(salt, user_id)``), never the raw id: the record outlives
    the user's data, and must not be a trace of it."""

    user_key: str
    deleted_at: float
    events_removed: int = 0


SALT_FILE = "erasure.salt"
SALT_ENV = "HYBRIDREC_ERASURE_SALT"


def user_key(salt: bytes, user_id: str) -> str:
    """The salted hash a deletion (and a user's Redis generation key) is recorded under:
    HMAC-SHA256 of the id, 32 hex characters. Without the salt it cannot be turned back into ids
    by trying them."""
    return hmac.new(salt, str(user_id).encode(), hashlib.sha256).hexdigest()[:32]


def new_salt() -> bytes:
    return secrets.token_hex(32).encode()


def salt_key(prefix: str) -> str:
    return f"{prefix}:salt"


def salt_from_redis(client: Any, prefix: str) -> bytes:
    """The deployment's salt kept in Redis (``<prefix>:salt``), created once (SET NX)."""
    client.set(salt_key(prefix), new_salt(), nx=True)
    return bytes(client.get(salt_key(prefix)))


def erasure_salt(events_dir: str | Path | None = None, *, redis_url: str | None = None,
                 prefix: str = "hybridrec") -> bytes:
    """The salt of deletion records: $HYBRIDREC_ERASURE_SALT, else the events folder's
    ``erasure.salt``, else Redis's (each created once, at random, where it is kept). The API and
    the trainer resolve it the same way, so they agree."""
    configured = os.environ.get(SALT_ENV)
    if configured:
        return configured.encode()
    if events_dir is not None:
        return EventLog(events_dir).salt
    if redis_url is None:
        raise ValueError("erasure_salt needs events_dir or redis_url (or $HYBRIDREC_ERASURE_SALT)")
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        return salt_from_redis(client, prefix)
    finally:
        client.close()


class EventLog:
    """The local append-only log of one events folder (blocking calls: run them in a thread)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.events_path = self.folder / EVENTS_FILE
        self.deletions_path = self.folder / DELETIONS_FILE
        self.exposures_path = self.folder / EXPOSURES_FILE
        for path in (self.events_path, self.deletions_path, self.exposures_path, self.folder / LOCK_FILE):
            if not path.exists():
                path.touch()
                fsync_dir(self.folder)

    def _locked(self) -> AbstractContextManager[None]:
        """Exclusive across processes: appends and the rewrite of a purge never interleave."""
        return exclusive(self.folder / LOCK_FILE)

    @property
    def salt(self) -> bytes:
        """$HYBRIDREC_ERASURE_SALT, else this folder's ``erasure.salt`` (created once, mode 0600)."""
        configured = os.environ.get(SALT_ENV)
        if configured:
            return configured.encode()
        path = self.folder / SALT_FILE
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            for _ in range(100):  # another process may be writing it right now
                value = path.read_bytes().strip()
                if value:
                    return value
                time.sleep(0.01)
            raise RuntimeError(f"{path} is empty: delete it (no deletion can have used it)") from None
        try:
            os.write(fd, new_salt())
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(self.folder)
        return path.read_bytes().strip()

    def _append(self, path: Path, lines: list[str]) -> None:
        if not lines:
            return
        with self._locked():
            append_durably(path, ("\n".join(lines) + "\n").encode())

    def append(self, events: Iterable[Event]) -> None:
        """Append and fsync; when this returns the events are on disk."""
        self._append(self.events_path, [e.to_json() for e in events])

    def read(self) -> Iterator[Event]:
        """Every logged event in order (a torn last line from a crash is skipped)."""
        with open(self.events_path, "rb") as fh:
            for line in fh:
                if line.strip():
                    try:
                        yield Event.from_json(line)
                    except (ValueError, KeyError):
                        continue

    def append_exposures(self, exposures: Iterable[Exposure]) -> None:
        """Append and fsync, as ``append``."""
        self._append(self.exposures_path, [x.to_json() for x in exposures])

    def read_exposures(self) -> Iterator[Exposure]:
        """Every logged exposure in order (a torn last line is skipped)."""
        with open(self.exposures_path, "rb") as fh:
            for line in fh:
                if line.strip():
                    try:
                        yield Exposure.from_json(line)
                    except (ValueError, KeyError):
                        continue

    def purge_exposures(self, user_id: str) -> set[str]:
        """Rewrite the exposure log without ``user_id``'s exposures (atomically); returns their ids."""
        return self._drop(lambda raw: str(raw["user_id"]) == user_id, self.exposures_path, "exposure_id")

    def purge_user(self, user_id: str) -> set[str]:
        """Rewrite the log without ``user_id``'s events (atomically); returns their event ids."""
        return self._drop(lambda raw: str(raw["user_id"]) == user_id)

    def drop_learned(self, event_ids: set[str]) -> int:
        """Rewrite the log without these events (every retained bundle has learned them; the
        trainer keeps its own copy); returns how many were dropped."""
        return len(self._drop(lambda raw: str(raw["event_id"]) in event_ids))

    def _drop(self, drop: Callable[[dict[str, Any]], bool], path: Path | None = None,
              id_field: str = "event_id") -> set[str]:
        """Rewrite a log (the events', by default) atomically, under the lock, without the lines
        ``drop`` picks; returns their ids."""
        path = self.events_path if path is None else path
        with self._locked():
            kept: list[bytes] = []
            removed: set[str] = set()
            with open(path, "rb") as fh:
                for line in fh:
                    if not line.strip():
                        continue
                    try:
                        raw = json.loads(line)
                        mine = drop(raw)
                    except (ValueError, KeyError, TypeError):
                        mine = False
                    if mine:
                        removed.add(str(raw.get(id_field, "")))
                    else:
                        kept.append(line if line.endswith(b"\n") else line + b"\n")
            if removed:
                tmp = path.with_suffix(".jsonl.tmp")
                with open(tmp, "wb") as fh:
                    fh.writelines(kept)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
                fsync_dir(self.folder)
        return removed

    def record_deletion(self, deletion: Deletion) -> None:
        self._append(self.deletions_path, [json.dumps(asdict(deletion), separators=(",", ":"))])

    def deletions(self) -> dict[str, Deletion]:
        """The latest deletion per user key."""
        out: dict[str, Deletion] = {}
        with open(self.deletions_path, "rb") as fh:
            for line in fh:
                if line.strip():
                    try:
                        d = deletion_from_json(line, self)
                    except (ValueError, KeyError):
                        continue
                    out[d.user_key] = d
        return out


def deletion_from_json(line: str | bytes, log_: EventLog) -> Deletion:
    """A deletions.jsonl line (a line of an older log, with the raw ``user_id``, is keyed now)."""
    raw = json.loads(line)
    key = str(raw["user_key"]) if "user_key" in raw else user_key(log_.salt, str(raw["user_id"]))
    return Deletion(key, float(raw["deleted_at"]), int(raw.get("events_removed", 0)))


# -- reading, for the trainer and the API --------------------------------------------------------

def redis_events(redis_url: str, prefix: str) -> tuple[list[Event], dict[str, float]]:
    """The events of the Redis stream and the deletions of the Redis hash (user key -> time)."""
    import redis

    keys = RedisKeys(prefix)
    client = redis.Redis.from_url(redis_url)
    try:
        events = [Event.from_json(fields[b"e"]) for _, fields in client.xrange(keys.stream)]
        deletions = {k.decode(): float(v) for k, v in client.hgetall(keys.deletions).items()}
    finally:
        client.close()
    return events, deletions


def deleted_users(events_dir: str | Path | None = None, *, redis_url: str | None = None,
                  prefix: str = "hybridrec") -> dict[str, float]:
    """User key (``user_key(erasure_salt(...), id)``) -> deletion time of every user whose data
    was deleted; training leaves their earlier data out."""
    out: dict[str, float] = {}
    if events_dir is not None:
        out.update({k: d.deleted_at for k, d in EventLog(events_dir).deletions().items()})
    if redis_url is not None:
        for k, t in redis_events(redis_url, prefix)[1].items():
            out[k] = max(out.get(k, 0.0), t)
    return out


def read_accepted_events(events_dir: str | Path | None = None, *, redis_url: str | None = None,
                         prefix: str = "hybridrec", since: float | None = None,
                         upto: float | None = None) -> pd.DataFrame:
    """Every accepted interaction, for the next training run.

    Columns user_id, item_id (str, external ids), value (float32), timestamp (int64), accepted_at
    (float64), event_id; one row per event (an event in both the log and Redis counts once),
    ordered by accepted_at. Events of a user accepted before that user's deletion are left out;
    ``since`` keeps only events accepted after that time, ``upto`` only those accepted at or before.
    """
    import pandas as pd

    if events_dir is None and redis_url is None:
        raise ValueError("read_accepted_events needs events_dir or redis_url")
    events: dict[str, Event] = {}
    deletions: dict[str, float] = {}
    if events_dir is not None:
        log = EventLog(events_dir)
        events.update((e.event_id, e) for e in log.read())
        deletions.update({k: d.deleted_at for k, d in log.deletions().items()})
    if redis_url is not None:
        stream, dels = redis_events(redis_url, prefix)
        events.update((e.event_id, e) for e in stream)
        for k, t in dels.items():
            deletions[k] = max(deletions.get(k, 0.0), t)
    salt = erasure_salt(events_dir, redis_url=redis_url, prefix=prefix)
    keys = {u: user_key(salt, u) for u in {e.user_id for e in events.values()}} if deletions else {}
    rows = [
        e for e in events.values()
        if e.accepted_at > deletions.get(keys.get(e.user_id, ""), float("-inf"))
        and (since is None or e.accepted_at > since) and (upto is None or e.accepted_at <= upto)
    ]
    rows.sort(key=lambda e: (e.accepted_at, e.event_id))
    frame = pd.DataFrame(
        {
            "user_id": pd.Series([e.user_id for e in rows], dtype="string"),
            "item_id": pd.Series([e.item_id for e in rows], dtype="string"),
            "value": pd.Series([e.value for e in rows], dtype="float32"),
            "timestamp": pd.Series([e.timestamp for e in rows], dtype="int64"),
            "accepted_at": pd.Series([e.accepted_at for e in rows], dtype="float64"),
            "event_id": pd.Series([e.event_id for e in rows], dtype="string"),
        }
    )
    return frame


@dataclass(frozen=True)
class RedisKeys:
    """Key layout in Redis (user ids are percent-encoded so they cannot collide)."""

    prefix: str = "hybridrec"

    @property
    def stream(self) -> str:
        return f"{self.prefix}:events"

    @property
    def deletions(self) -> str:
        return f"{self.prefix}:deletions"

    @property
    def exposures(self) -> str:
        return f"{self.prefix}:exposures"

    @property
    def items(self) -> str:
        """Hash of added catalogue items: id -> canonical JSON (graphql_api.items)."""
        return f"{self.prefix}:items"

    @property
    def items_at(self) -> str:
        """Hash: id -> when its metadata was accepted (the newest write wins)."""
        return f"{self.prefix}:items:at"

    @property
    def items_version(self) -> str:
        """Counter raised by every write that changed the added catalogue (what replicas poll)."""
        return f"{self.prefix}:items:version"

    def user(self, user_id: str, what: str) -> str:
        """A key holding the user's data (deleted with it)."""
        return f"{self.prefix}:u:{quote(user_id, safe='')}:{what}"

    def keyed(self, user_key: str, what: str) -> str:
        """A key that may outlive the user's data (generation, cache tags): named by the salted
        hash (``user_key``), so it is no trace of the id."""
        return f"{self.prefix}:h:{user_key}:{what}"

    def response(self, key: str) -> str:
        return f"{self.prefix}:resp:{key}"

    def bucket(self, client: str) -> str:
        return f"{self.prefix}:rl:{hashlib.sha1(client.encode()).hexdigest()}"


# -- what a bundle has learned (serving folds in the rest; the retrainer trims it) ---------------------

def learned_events(trained_items: np.ndarray, rows: np.ndarray, accepted_at: Sequence[float],
                   cutoff: float) -> np.ndarray:
    """Which online events (item rows, acceptance times) a bundle has learned: those accepted up to
    its ``events_cutoff`` whose item is in the user's trained history. One accepted by then whose
    item is not there fell in the user's test part (the newest 20%, which the served models are
    not refit on) or was replaced by a later interaction with the item: it is still to fold in."""
    before = np.asarray(accepted_at, dtype=np.float64) <= cutoff
    return before & np.isin(np.asarray(rows), trained_items)


# -- maintenance, by the retrainer -----------------------------------------------------------------

def trim_learned(events_dir: str | Path | None = None, *, redis_url: str | None = None,
                 prefix: str = "hybridrec", event_ids: set[str]) -> int:
    """Drop the online copies of these events (every bundle version a server may load has learned
    them: cluster.retrain.retire picks them): from the log, the Redis stream and the per-user lists. Returns how many were dropped from the
    log and the stream (an event in both counts twice)."""
    dropped = EventLog(events_dir).drop_learned(event_ids) if events_dir is not None else 0
    if redis_url is None:
        return dropped
    import redis

    keys = RedisKeys(prefix)
    client = redis.Redis.from_url(redis_url)
    try:
        start = "-"
        while True:
            chunk = client.xrange(keys.stream, min=start, count=1000)
            if not chunk:
                break
            pipe = client.pipeline(transaction=False)
            for sid, fields in chunk:
                event = Event.from_json(fields[b"e"])
                if event.event_id in event_ids:
                    pipe.xdel(keys.stream, sid)
                    pipe.lrem(keys.user(event.user_id, "events"), 1, sid + b"|" + fields[b"e"])
                    dropped += 1
            pipe.execute()
            start = "(" + chunk[-1][0].decode()
    finally:
        client.close()
    return dropped


def compact_redis(redis_url: str, *, prefix: str = "hybridrec", timeout: float = 120.0) -> list[str]:
    """Rewrite what Redis keeps on disk so that purged data leaves it; returns what was done.

    XDEL only flags a stream entry: the entry's bytes stay in the stream's node, and snapshots
    (RDB, and the RDB preamble of a rewritten AOF) copy nodes as they are. So the streams (events,
    exposures) are rebuilt from their live entries first (atomically: WATCH, then one MULTI that
    copies and renames), then the
    append-only file is rewritten (BGREWRITEAOF) and, where snapshots are configured, one is taken
    (BGSAVE); both waited for. Where CONFIG is disabled (managed Redis) the persistence steps that
    need it are skipped and said so.
    """
    import redis
    from redis.exceptions import ResponseError, WatchError

    keys = RedisKeys(prefix)
    done: list[str] = []
    client = redis.Redis.from_url(redis_url)
    try:
        for stream in (keys.stream, keys.exposures):
            done.append(_rebuild_stream(client, stream, WatchError))

        def wait(flag: str, *more: str) -> None:
            deadline = time.monotonic() + timeout
            while any(int(client.info("persistence").get(f, 0)) for f in (flag, *more)):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"redis still busy ({flag}) after {timeout:.0f} s")
                time.sleep(0.05)

        info = client.info("persistence")
        if int(info.get("aof_enabled", 0)):
            wait("aof_rewrite_in_progress", "aof_rewrite_scheduled", "rdb_bgsave_in_progress")
            client.bgrewriteaof()
            wait("aof_rewrite_in_progress", "aof_rewrite_scheduled")
            if client.info("persistence").get("aof_last_bgrewrite_status") != "ok":
                raise RuntimeError("redis could not rewrite its append-only file (see its log)")
            done.append("append-only file rewritten")
        try:
            save = client.config_get("save").get("save", "")
        except ResponseError:
            done.append("snapshots not checked (CONFIG is disabled): take one by hand if the server keeps any")
            return done
        if save:
            wait("rdb_bgsave_in_progress", "aof_rewrite_in_progress")
            client.bgsave()  # forks before it answers: in progress from here until written
            wait("rdb_bgsave_in_progress")
            if client.info("persistence").get("rdb_last_bgsave_status") != "ok":
                raise RuntimeError("redis could not write its snapshot (see its log)")
            done.append("snapshot rewritten")
    finally:
        client.close()
    return done


def _rebuild_stream(client: Any, stream: str, watch_error: type[Exception]) -> str:
    """Copy a stream's live entries into a new key and rename it over the old one, in one MULTI
    after a WATCH (retried while writers change it); an empty stream is deleted."""
    rebuilt = f"{stream}:rebuild"
    for _ in range(20):
        with client.pipeline() as pipe:
            try:
                pipe.watch(stream)
                entries = pipe.xrange(stream)
                pipe.multi()
                pipe.delete(rebuilt)
                for sid, fields in entries:
                    pipe.xadd(rebuilt, fields, id=sid)
                if entries:
                    pipe.rename(rebuilt, stream)
                else:
                    pipe.delete(stream)
                pipe.execute()
                return f"{stream} rebuilt from its {len(entries):,} live entries"
            except watch_error:
                continue  # written to meanwhile: copy again
    raise RuntimeError(f"{stream} changed during 20 rebuild attempts; try again when it is quieter")
