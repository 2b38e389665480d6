"""Accepted interactions and deletions: the durable intake that feeds the next training run.

Two places hold them, either or both depending on configuration:

- a local folder (HYBRIDREC_EVENTS_DIR): ``events.jsonl`` and ``deletions.jsonl``, append-only
  JSON lines written under an exclusive ``flock`` and fsync'd before a mutation answers, so an
  accepted event survives a crash or restart; several processes may share the folder;
- Redis (HYBRIDREC_REDIS_URL): the stream ``<prefix>:events`` and the hash ``<prefix>:deletions``
  (see graphql_api.store.RedisStore), shared by every replica.

The trainer calls ``read_accepted_events`` and ``deleted_users``: the first gives every accepted
interaction (deduplicated across both places, deleted users' earlier events left out), the
second the users whose data must be left out of the next training run.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

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
    """A user's data was purged at ``deleted_at``; training must leave the user out."""

    user_id: str
    deleted_at: float
    events_removed: int = 0


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
                _fsync_dir(self.folder)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive across processes: appends and the rewrite of a purge never interleave."""
        fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _append(self, path: Path, lines: list[str]) -> None:
        if not lines:
            return
        data = ("\n".join(lines) + "\n").encode()
        with self._locked():
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)

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
        with self._locked():
            kept: list[bytes] = []
            removed: set[str] = set()
            with open(self.exposures_path, "rb") as fh:
                for line in fh:
                    try:
                        raw = json.loads(line) if line.strip() else None
                    except ValueError:
                        raw = None
                    if isinstance(raw, dict) and str(raw.get("user_id")) == user_id:
                        removed.add(str(raw.get("exposure_id", "")))
                    elif raw is not None:
                        kept.append(line if line.endswith(b"\n") else line + b"\n")
            if removed:
                tmp = self.exposures_path.with_suffix(".jsonl.tmp")
                with open(tmp, "wb") as fh:
                    fh.writelines(kept)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.exposures_path)
                _fsync_dir(self.folder)
        return removed

    def purge_user(self, user_id: str) -> set[str]:
        """Rewrite the log without ``user_id``'s events (atomically); returns their event ids."""
        with self._locked():
            kept: list[bytes] = []
            removed: set[str] = set()
            with open(self.events_path, "rb") as fh:
                for line in fh:
                    if not line.strip():
                        continue
                    try:
                        raw = json.loads(line)
                        mine = str(raw["user_id"]) == user_id
                    except (ValueError, KeyError):
                        mine = False
                    if mine:
                        removed.add(str(raw.get("event_id", "")))
                    else:
                        kept.append(line if line.endswith(b"\n") else line + b"\n")
            if removed:
                tmp = self.events_path.with_suffix(".jsonl.tmp")
                with open(tmp, "wb") as fh:
                    fh.writelines(kept)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.events_path)
                _fsync_dir(self.folder)
        return removed

    def record_deletion(self, deletion: Deletion) -> None:
        self._append(self.deletions_path, [json.dumps(asdict(deletion), separators=(",", ":"))])

    def deletions(self) -> dict[str, Deletion]:
        """The latest deletion per user."""
        out: dict[str, Deletion] = {}
        with open(self.deletions_path, "rb") as fh:
            for line in fh:
                if line.strip():
                    try:
                        raw = json.loads(line)
                        out[str(raw["user_id"])] = Deletion(str(raw["user_id"]), float(raw["deleted_at"]),
                                                            int(raw.get("events_removed", 0)))
                    except (ValueError, KeyError):
                        continue
        return out


# -- for the trainer ---------------------------------------------------------------------------

def _redis_events(redis_url: str, prefix: str) -> tuple[list[Event], dict[str, Deletion]]:
    import redis

    from graphql_api.store import RedisKeys

    keys = RedisKeys(prefix)
    client = redis.Redis.from_url(redis_url)
    try:
        events = [Event.from_json(fields[b"e"]) for _, fields in client.xrange(keys.stream)]
        deletions = {
            k.decode(): Deletion(k.decode(), float(v)) for k, v in client.hgetall(keys.deletions).items()
        }
    finally:
        client.close()
    return events, deletions


def deleted_users(events_dir: str | Path | None = None, *, redis_url: str | None = None,
                  prefix: str = "hybridrec") -> dict[str, float]:
    """User id -> deletion time of every user whose data was deleted; training leaves them out."""
    out: dict[str, float] = {}
    if events_dir is not None:
        out.update({u: d.deleted_at for u, d in EventLog(events_dir).deletions().items()})
    if redis_url is not None:
        for u, d in _redis_events(redis_url, prefix)[1].items():
            out[u] = max(out.get(u, 0.0), d.deleted_at)
    return out


def read_accepted_events(events_dir: str | Path | None = None, *, redis_url: str | None = None,
                         prefix: str = "hybridrec", since: float | None = None) -> pd.DataFrame:
    """Every accepted interaction, for the next training run.

    Columns user_id, item_id (str, external ids), value (float32), timestamp (int64), accepted_at
    (float64), event_id; one row per event (an event in both the log and Redis counts once),
    ordered by accepted_at. Events of a user accepted before that user's deletion are left out;
    ``since`` keeps only events accepted after that time.
    """
    if events_dir is None and redis_url is None:
        raise ValueError("read_accepted_events needs events_dir or redis_url")
    events: dict[str, Event] = {}
    deletions: dict[str, float] = {}
    if events_dir is not None:
        log = EventLog(events_dir)
        events.update((e.event_id, e) for e in log.read())
        deletions.update({u: d.deleted_at for u, d in log.deletions().items()})
    if redis_url is not None:
        stream, dels = _redis_events(redis_url, prefix)
        events.update((e.event_id, e) for e in stream)
        for u, d in dels.items():
            deletions[u] = max(deletions.get(u, 0.0), d.deleted_at)
    rows = [
        e for e in events.values()
        if e.accepted_at > deletions.get(e.user_id, float("-inf")) and (since is None or e.accepted_at > since)
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


def read_exposures(events_dir: str | Path | None = None, *, redis_url: str | None = None,
                   prefix: str = "hybridrec") -> list[Exposure]:
    """Every logged exposure (each id once, its first showing), ordered by time; exposures of a
    user shown before that user's deletion are left out."""
    if events_dir is None and redis_url is None:
        raise ValueError("read_exposures needs events_dir or redis_url")
    found: list[Exposure] = []
    deletions: dict[str, float] = {}
    if events_dir is not None:
        log = EventLog(events_dir)
        found += log.read_exposures()
        deletions.update({u: d.deleted_at for u, d in log.deletions().items()})
    if redis_url is not None:
        import redis

        from graphql_api.store import RedisKeys

        keys = RedisKeys(prefix)
        client = redis.Redis.from_url(redis_url)
        try:
            found += [Exposure.from_json(f[b"x"]) for _, f in client.xrange(keys.exposures)]
        finally:
            client.close()
        for u, d in _redis_events(redis_url, prefix)[1].items():
            deletions[u] = max(deletions.get(u, 0.0), d.deleted_at)
    first: dict[str, Exposure] = {}
    for x in sorted(found, key=lambda x: (x.shown_at, x.exposure_id)):
        if x.shown_at > deletions.get(x.user_id, float("-inf")):
            first.setdefault(x.exposure_id, x)
    return list(first.values())


def read_outcomes(events_dir: str | Path | None = None, *, redis_url: str | None = None,
                  prefix: str = "hybridrec") -> list[Event]:
    """The accepted interactions that name an exposure (each once; deleted users' left out), for
    the experiment report."""
    events: dict[str, Event] = {}
    deletions: dict[str, float] = {}
    if events_dir is not None:
        log = EventLog(events_dir)
        events.update((e.event_id, e) for e in log.read() if e.exposure_id is not None)
        deletions.update({u: d.deleted_at for u, d in log.deletions().items()})
    if redis_url is not None:
        stream, dels = _redis_events(redis_url, prefix)
        events.update((e.event_id, e) for e in stream if e.exposure_id is not None)
        for u, d in dels.items():
            deletions[u] = max(deletions.get(u, 0.0), d.deleted_at)
    return sorted((e for e in events.values() if e.accepted_at > deletions.get(e.user_id, float("-inf"))),
                  key=lambda e: (e.accepted_at, e.event_id))
