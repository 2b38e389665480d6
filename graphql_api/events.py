"""The exposures and outcomes of experiments, read from the stored events for the experiment report.

The stores themselves (the events folder's JSON lines, the Redis stream and hashes), the reading
both the API and the trainer need (``read_accepted_events``, ``deleted_users``, ``user_key``,
``erasure_salt``) and the retrainer's maintenance (``trim_learned``, ``compact_redis``) live in
etl.events_log.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from etl.events_log import Event, EventLog, Exposure, RedisKeys, deleted_users, erasure_salt, redis_events, user_key


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
