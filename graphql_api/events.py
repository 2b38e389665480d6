"""Maintenance of the stored events (trimming learned events, compacting Redis: the retrainer calls
them) and the exposures and outcomes of experiments.

The stores themselves (the events folder's JSON lines, the Redis stream and hashes) and the reading
both the API and the trainer need (``read_accepted_events``, ``deleted_users``, ``user_key``,
``erasure_salt``) live in etl.events_log.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from etl.events_log import Event, EventLog, Exposure, RedisKeys, deleted_users, erasure_salt, redis_events, user_key


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


def read_exposures(events_dir: str | Path | None = None, *, redis_url: str | None = None,
                   prefix: str = "hybridrec") -> list[Exposure]:
    """Every logged exposure (each id once, its first showing), ordered by time; exposures of a
    user shown before that user's deletion are left out."""
    if events_dir is None and redis_url is None:
        raise ValueError("read_exposures needs events_dir or redis_url")
    found: list[Exposure] = []
    if events_dir is not None:
        found += EventLog(events_dir).read_exposures()
    if redis_url is not None:
        import redis


        keys = RedisKeys(prefix)
        client = redis.Redis.from_url(redis_url)
        try:
            found += [Exposure.from_json(f[b"x"]) for _, f in client.xrange(keys.exposures)]
        finally:
            client.close()
    deleted_at = _deletion_times(events_dir, redis_url, prefix, {x.user_id for x in found})
    first: dict[str, Exposure] = {}
    for x in sorted(found, key=lambda x: (x.shown_at, x.exposure_id)):
        if x.shown_at > deleted_at.get(x.user_id, float("-inf")):
            first.setdefault(x.exposure_id, x)
    return list(first.values())


def _deletion_times(events_dir: str | Path | None, redis_url: str | None, prefix: str,
                    user_ids: Iterable[str]) -> dict[str, float]:
    """User id -> the time of its latest deletion, for those of ``user_ids`` that were deleted."""
    deletions = deleted_users(events_dir, redis_url=redis_url, prefix=prefix)
    if not deletions:
        return {}
    salt = erasure_salt(events_dir, redis_url=redis_url, prefix=prefix)
    keyed = {u: user_key(salt, u) for u in user_ids}
    return {u: deletions[k] for u, k in keyed.items() if k in deletions}


def read_outcomes(events_dir: str | Path | None = None, *, redis_url: str | None = None,
                  prefix: str = "hybridrec") -> list[Event]:
    """The accepted interactions that name an exposure (each once; deleted users' left out), for
    the experiment report."""
    events: dict[str, Event] = {}
    if events_dir is not None:
        events.update((e.event_id, e) for e in EventLog(events_dir).read() if e.exposure_id is not None)
    if redis_url is not None:
        stream, _ = redis_events(redis_url, prefix)
        events.update((e.event_id, e) for e in stream if e.exposure_id is not None)
    deleted_at = _deletion_times(events_dir, redis_url, prefix, {e.user_id for e in events.values()})
    return sorted((e for e in events.values() if e.accepted_at > deleted_at.get(e.user_id, float("-inf"))),
                  key=lambda e: (e.accepted_at, e.event_id))


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
