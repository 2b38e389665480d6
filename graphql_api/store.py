"""Where the API keeps what changes between bundles: accepted events, folded-in user state,
experiment exposures, cached answers, deletions and rate-limit buckets.

Two backends, used together when both are configured:

- local (HYBRIDREC_EVENTS_DIR): the fsync'd JSONL log of graphql_api.events is the source of
  truth; every process on the host tails it (a ``stat`` per request, new lines read when it
  grew), so uvicorn workers sharing a folder see each other's events at once. Cached answers
  and rate-limit buckets are then in-process.
- Redis (HYBRIDREC_REDIS_URL): the event stream, per-user online events, per-user generation
  counters, cached answers and token buckets live in Redis and are shared by every replica;
  the multi-key updates are Lua scripts, so they are atomic.

Cached answers carry the generation of every user they depend on and are served only while
those generations are current: recording an interaction or deleting a user bumps the user's
generation (and drops the user's entries eagerly), so a stale answer is never served, even one
written by a request that raced with the mutation.

When Redis stops answering, the API keeps serving: reads fall back to the local state (if any)
without caching, events go to the local log and are queued, and the queue is replayed into Redis
when it answers again. Without a local log, mutations are refused while Redis is down (an event
must be durable before it is accepted).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread

from etl.events_log import (
    SALT_ENV, Deletion, Event, EventLog, Exposure, RedisKeys, deletion_from_json, new_salt, salt_key, user_key,
)
from etl.items_log import CatalogueItem, ItemLog, Upserted, newest, redis_table
from graphql_api.errors import EventStoreUnavailable
from graphql_api.items import UPSERT_SCRIPT, script_args, script_result
from graphql_api.logs import get_logger
from graphql_api.metrics import Metrics
from graphql_api.settings import Settings

log = get_logger("store")
T = TypeVar("T")

REDIS_RETRY_SECONDS = 1.0
"""After a failed Redis call, calls skip Redis for this long (no connect storm while it is down)."""
MEMORY_CACHE_ENTRIES = 50_000
CACHE_ENTRY_OVERHEAD = 400
"""Bytes counted per cached answer beyond its body and key (the entry's tuple, dict and index sets)."""


# -- Lua scripts (atomic multi-key updates) ------------------------------------------------------

_ADD_EVENTS = """
-- KEYS[1] stream, KEYS[2] deletions hash; ARGV: groups of (events key, generation key, cache-tags
-- key, event json, user key, accepted_at). A user's list holds the stream id of each of the user's
-- entries (a deletion purges the stream by it, so it is never capped); both shrink when retraining
-- trims what every bundle has learned. An event accepted before the user's recorded deletion (one
-- queued while Redis was down and replayed after another process's deletion) is not added.
local touched = {}
local added = 0
for i = 1, #ARGV, 6 do
  local deleted = redis.call('HGET', KEYS[2], ARGV[i + 4])
  if not deleted or tonumber(deleted) < tonumber(ARGV[i + 5]) then
    local sid = redis.call('XADD', KEYS[1], '*', 'e', ARGV[i + 3])
    redis.call('RPUSH', ARGV[i], sid .. '|' .. ARGV[i + 3])
    touched[ARGV[i + 1]] = ARGV[i + 2]
    added = added + 1
  end
end
for gen_key, tags_key in pairs(touched) do
  redis.call('INCR', gen_key)
  for _, k in ipairs(redis.call('SMEMBERS', tags_key)) do redis.call('DEL', k) end
  redis.call('DEL', tags_key)
end
return added
"""

_PURGE_USER = """
-- KEYS[1] stream, KEYS[2] deletions hash; ARGV: events key, generation key, tags key, user key, deleted_at
local out = {0}
for _, item in ipairs(redis.call('LRANGE', ARGV[1], 0, -1)) do
  local sep = string.find(item, '|', 1, true)
  redis.call('XDEL', KEYS[1], string.sub(item, 1, sep - 1))
  table.insert(out, string.sub(item, sep + 1))
end
local cached = 0
for _, k in ipairs(redis.call('SMEMBERS', ARGV[3])) do cached = cached + redis.call('DEL', k) end
out[1] = cached
redis.call('DEL', ARGV[1], ARGV[3])
redis.call('INCR', ARGV[2])
redis.call('HSET', KEYS[2], ARGV[4], ARGV[5])
return out
"""

_ADD_EXPOSURES = """
-- KEYS[1] exposure stream; ARGV: groups of (the user's exposures hash, exposure id, exposure json)
for i = 1, #ARGV, 3 do
  local sid = redis.call('XADD', KEYS[1], '*', 'x', ARGV[i + 2])
  redis.call('HSET', ARGV[i], ARGV[i + 1], sid .. '|' .. ARGV[i + 2])
end
return #ARGV / 3
"""

_PURGE_EXPOSURES = """
-- KEYS[1] exposure stream, KEYS[2] the user's exposures hash: both lose the user's exposures (ids returned)
local flat = redis.call('HGETALL', KEYS[2])
local ids = {}
for i = 1, #flat, 2 do
  local item = flat[i + 1]
  redis.call('XDEL', KEYS[1], string.sub(item, 1, string.find(item, '|', 1, true) - 1))
  table.insert(ids, flat[i])
end
redis.call('DEL', KEYS[2])
return ids
"""

_CACHE_GET = """
-- KEYS[1] response key; the value is a JSON header line {"g": {gen key: gen}, ...} then the body
local v = redis.call('GET', KEYS[1])
if not v then return false end
local nl = string.find(v, '\\n', 1, true)
local header = cjson.decode(string.sub(v, 1, nl - 1))
for gen_key, gen in pairs(header['g']) do
  local cur = redis.call('GET', gen_key)
  if not cur then cur = '0' end
  if cur ~= gen then return false end
end
return v
"""

_TOKEN_BUCKET = """
-- KEYS: the buckets a request draws on (its API key's, its client address's); ARGV[1] rate
-- (points/s), ARGV[2] burst, ARGV[3] cost (points). Taken from every bucket or from none.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local tokens = {}
local least = burst
for i, key in ipairs(KEYS) do
  local b = redis.call('HMGET', key, 'tokens', 'ts')
  local v = tonumber(b[1]) or burst
  local ts = tonumber(b[2]) or now
  v = math.min(burst, v + math.max(0, now - ts) * rate)
  tokens[i] = v
  if v < least then least = v end
end
local allowed = 0
local wait = 0
if least >= cost then
  allowed = 1
  least = least - cost
  for i = 1, #KEYS do tokens[i] = tokens[i] - cost end
else
  wait = (cost - least) / rate
end
for i, key in ipairs(KEYS) do
  redis.call('HSET', key, 'tokens', tostring(tokens[i]), 'ts', tostring(now))
  redis.call('PEXPIRE', key, math.ceil(burst / rate * 1000) + 1000)
end
return {allowed, tostring(wait), tostring(least)}
"""


# -- value objects -------------------------------------------------------------------------------

@dataclass(frozen=True)
class UserState:
    """What the API knows about a user beyond the bundle."""

    user_id: str
    events: tuple[Event, ...] = ()
    """Accepted interactions still online (not purged), oldest first."""
    deleted_at: float | None = None
    """When the user's data was last deleted (trained history older than this must not be used)."""
    tags: dict[str, str] = field(default_factory=dict)
    """Cache tags (generation key -> generation) an answer built from this state depends on."""


@dataclass(frozen=True)
class DeletionReport:
    events: int
    cached_answers: int
    online_state: bool
    exposures: int = 0
    """Experiment exposures purged (log and Redis)."""


@dataclass(frozen=True)
class CachedAnswer:
    operation: str
    body: bytes
    variants: tuple[str, ...] = ()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _dedupe(events: Iterable[Event]) -> tuple[Event, ...]:
    seen: dict[str, Event] = {}
    for e in events:
        seen.setdefault(e.event_id, e)
    return tuple(sorted(seen.values(), key=lambda e: (e.accepted_at, e.event_id)))


def _encode_entry(operation: str, tags: dict[str, str], body: bytes, variants: tuple[str, ...]) -> bytes:
    head = {"g": tags, "op": operation, "v": list(variants)}
    return json.dumps(head, separators=(",", ":")).encode() + b"\n" + body


def _decode_entry(raw: bytes) -> CachedAnswer:
    head, _, body = raw.partition(b"\n")
    meta = json.loads(head)
    return CachedAnswer(meta["op"], body, tuple(meta.get("v", ())))


async def _salt_from_redis(r: Any, prefix: str) -> bytes:
    """graphql_api.events.salt_from_redis on the API's asyncio client."""
    configured = os.environ.get(SALT_ENV)
    if configured:
        return configured.encode()
    await r.set(salt_key(prefix), new_salt(), nx=True)
    return bytes(await r.get(salt_key(prefix)))


# -- local state (tail of the shared JSONL log) --------------------------------------------------

class LocalState:
    """Online events and deletions as the local log says, kept current by tailing it."""

    def __init__(self, log_: EventLog, cap: int = 500) -> None:
        self.log = log_
        self.salt = log_.salt
        self.cap = cap
        """Events kept per user (the newest); the log keeps them all. Every dict here is keyed by
        the user key (etl.events_log.user_key), as deletions are recorded."""
        self.events: dict[str, list[Event]] = {}
        self.deleted: dict[str, float] = {}
        self.generations: dict[str, int] = {}
        self._ev = (-1, 0)  # (inode, offset) consumed in events.jsonl
        self._del = (-1, 0)

    def _read_new(self, path: Path, pos: tuple[int, int]) -> tuple[list[bytes], tuple[int, int], bool]:
        """Complete new lines of ``path`` after ``pos``; the flag says the file was replaced."""
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return [], pos, False
        inode, offset = pos
        rewritten = st.st_ino != inode or st.st_size < offset
        if rewritten:
            offset = 0
        elif st.st_size == offset:
            return [], pos, False
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read(max(0, st.st_size - offset))
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next sync
        return data[:end].splitlines(), (st.st_ino, offset + end), rewritten and inode != -1

    def _bump(self, user_id: str) -> None:
        self.generations[user_id] = self.generations.get(user_id, 0) + 1

    def sync(self) -> set[str]:
        """Read what other writers appended; returns the users whose state changed."""
        changed: set[str] = set()
        lines, self._del, _ = self._read_new(self.log.deletions_path, self._del)
        for line in lines:
            try:
                deletion = deletion_from_json(line, self.log)
            except (ValueError, KeyError):
                continue
            user, at = deletion.user_key, deletion.deleted_at
            self.deleted[user] = max(at, self.deleted.get(user, 0.0))
            if user in self.events:
                kept = [e for e in self.events[user] if e.accepted_at > at]
                self.events[user] = kept
                if not kept:
                    del self.events[user]
            changed.add(user)
        lines, self._ev, rewritten = self._read_new(self.log.events_path, self._ev)
        if rewritten:  # a purge rewrote the file: rebuild from scratch
            changed.update(self.events)
            self.events = {}
        for line in lines:
            try:
                event = Event.from_json(line)
            except (ValueError, KeyError):
                continue
            key = user_key(self.salt, event.user_id)
            if event.accepted_at <= self.deleted.get(key, float("-inf")):
                continue
            kept = self.events.setdefault(key, [])
            kept.append(event)
            if len(kept) >= 2 * self.cap:  # trimmed in halves: amortised O(1) per event
                del kept[: len(kept) - self.cap]
            changed.add(key)
        for user in changed:
            self._bump(user)
        return changed

    def state(self, user_id: str) -> UserState:
        key = user_key(self.salt, user_id)
        return UserState(
            user_id,
            tuple(self.events.get(key, ())[-self.cap:]),
            self.deleted.get(key),
            {key: str(self.generations.get(key, 0))},
        )


class ExposureIndex:
    """The local exposure log by user (the newest ``cap`` per user), kept current by tailing it
    when an exposure id is looked up."""

    _read_new = LocalState._read_new

    def __init__(self, log_: EventLog, cap: int = 500) -> None:
        self.log = log_
        self.cap = cap
        self.by_user: dict[str, OrderedDict[str, Exposure]] = {}
        self._pos = (-1, 0)
        self._lock = threading.Lock()  # lookups run in worker threads

    def sync(self) -> None:
        with self._lock:
            self._sync()

    def _sync(self) -> None:
        lines, self._pos, rewritten = self._read_new(self.log.exposures_path, self._pos)
        if rewritten:  # a purge rewrote the file: read it again from the start
            self.by_user, self._pos = {}, (-1, 0)
            lines, self._pos, _ = self._read_new(self.log.exposures_path, self._pos)
        for line in lines:
            try:
                x = Exposure.from_json(line)
            except (ValueError, KeyError):
                continue
            mine = self.by_user.setdefault(x.user_id, OrderedDict())
            mine.setdefault(x.exposure_id, x)
            while len(mine) > self.cap:
                mine.popitem(last=False)

    def get(self, user_id: str, exposure_id: str) -> Exposure | None:
        with self._lock:
            self._sync()
            return self.by_user.get(user_id, {}).get(exposure_id)

    def drop_user(self, user_id: str) -> None:
        with self._lock:
            self.by_user.pop(user_id, None)


class MemoryCache:
    """In-process answer cache: LRU within a byte budget, TTL, entries valid while their users'
    generations hold. Expired entries are swept as new ones arrive (oldest first: every entry
    lives the same TTL, so insertion order is expiry order); an answer larger than a sixteenth of
    the budget is not cached at all."""

    def __init__(self, max_entries: int = MEMORY_CACHE_ENTRIES, max_bytes: int = 32 << 20) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        """Bytes held: bodies, keys, tags and CACHE_ENTRY_OVERHEAD per entry."""
        self._entries: OrderedDict[str, tuple[float, dict[str, str], CachedAnswer, int]] = OrderedDict()
        self._by_user: dict[str, set[str]] = {}
        self._expiry: deque[tuple[float, str]] = deque()

    def get(self, key: str, generations: dict[str, int]) -> CachedAnswer | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, tags, answer, _ = entry
        if expires < time.monotonic() or any(str(generations.get(u, 0)) != g for u, g in tags.items()):
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return answer

    def put(self, key: str, answer: CachedAnswer, tags: dict[str, str], ttl: float) -> bool:
        """Cache ``answer``; False when it is too large for the budget (not cached)."""
        size = (len(answer.body) + len(key) + sum(len(u) + len(g) for u, g in tags.items())
                + sum(map(len, answer.variants)) + len(answer.operation) + CACHE_ENTRY_OVERHEAD)
        self._drop(key)
        now = time.monotonic()
        self._sweep(now)
        if size > self.max_bytes // 16:
            return False
        expires = now + ttl
        self._entries[key] = (expires, dict(tags), answer, size)
        self._expiry.append((expires, key))
        self.bytes += size
        for user in tags:
            self._by_user.setdefault(user, set()).add(key)
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))
        return True

    def _sweep(self, now: float) -> None:
        """Drop expired entries (and expiry records of entries already gone or replaced)."""
        expiry = self._expiry
        while expiry and (expiry[0][0] < now or len(expiry) > 2 * len(self._entries) + 16):
            expires, key = expiry.popleft()
            entry = self._entries.get(key)
            if entry is not None and entry[0] == expires and expires < now:
                self._drop(key)

    def _drop(self, key: str) -> bool:
        entry = self._entries.pop(key, None)
        if entry is None:
            return False
        self.bytes -= entry[3]
        for user in entry[1]:
            keys = self._by_user.get(user)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_user[user]
        return True

    def drop_user(self, user_id: str) -> int:
        return sum(self._drop(k) for k in list(self._by_user.get(user_id, ())))

    def clear(self) -> None:
        self._entries.clear()
        self._by_user.clear()
        self._expiry.clear()
        self.bytes = 0


@dataclass(frozen=True)
class RateDecision:
    """What the rate limiter said to one request (graphql_api.schema.QueryCost charges it)."""

    allowed: bool
    cost: int
    """Points taken (asked for, when refused)."""
    limit: int
    """Bucket size (RATE_BURST)."""
    remaining: float
    """Points left in the emptier of the request's buckets."""
    rate: float
    """Points restored per second (RATE_LIMIT)."""
    retry_after: float = 0.0
    """Seconds until the refused cost would be available."""

    @property
    def reset_at(self) -> int:
        """Unix time at which the emptier bucket is full again (as GitHub's X-RateLimit-Reset)."""
        return math.ceil(time.time() + max(0.0, self.limit - self.remaining) / self.rate)

    def headers(self) -> dict[str, str]:
        out = {"x-ratelimit-limit": str(self.limit), "x-ratelimit-remaining": str(int(self.remaining)),
               "x-ratelimit-reset": str(self.reset_at)}
        if not self.allowed:
            out["retry-after"] = str(max(1, math.ceil(self.retry_after)))
        return out

    def as_json(self) -> dict[str, Any]:
        """The rate-limit state for ``extensions.cost.rateLimit``."""
        return {"limit": self.limit, "remaining": int(self.remaining), "restoreRate": self.rate,
                "resetAt": self.reset_at}


class TokenBuckets:
    """In-process token buckets of cost points, one per client key (API key, client address)."""

    def __init__(self, max_clients: int = 100_000) -> None:
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, clients: Iterable[str], rate: float, burst: int, cost: float = 1.0) -> tuple[bool, float, float]:
        """(allowed, seconds to wait, points left in the emptiest bucket): ``cost`` is taken from
        every bucket of ``clients`` when each holds it, else from none."""
        now = time.monotonic()
        held = {}
        for client in clients:
            tokens, ts = self._buckets.pop(client, (float(burst), now))
            held[client] = min(float(burst), tokens + (now - ts) * rate)
        least = min(held.values(), default=float(burst))
        allowed = least >= cost
        wait = 0.0 if allowed else (cost - least) / rate
        for client, tokens in held.items():
            self._buckets[client] = (tokens - cost if allowed else tokens, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return allowed, wait, least - cost if allowed else least


class RedisUnavailable(Exception):
    """Redis did not answer (or is in its back-off window); callers fall back."""


# -- the store -----------------------------------------------------------------------------------

class Store:
    """Events, online state, cached answers, deletions and rate limits for one API process."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.keys = RedisKeys(settings.redis_prefix)
        self.log = EventLog(settings.events_dir) if settings.events_dir is not None else None
        self.local = LocalState(self.log, settings.history_cap) if self.log is not None else None
        self.exposures = ExposureIndex(self.log, settings.history_cap) if self.log is not None else None
        self.items = ItemLog(settings.events_dir) if settings.events_dir is not None else None
        """Items added to the catalogue, as the events folder keeps them (graphql_api.items)."""
        self._items_unsynced = False
        """The item log holds writes made while Redis was down (copied into it when it answers)."""
        self._remote_items: dict[str, tuple[float, CatalogueItem]] | None = None
        """The added items in Redis as last read (used with the log while Redis is down)."""
        self._logged: OrderedDict[str, None] = OrderedDict()
        """Exposures (id and the user's generation) this process logged lately: not logged again."""
        self.cache = MemoryCache(max_bytes=settings.cache_max_bytes)
        self.buckets = TokenBuckets()
        self.redis: Any = None
        self._redis_up: bool | None = None
        self._retry_at = 0.0
        self._pending: list[tuple[str, Any]] = []  # ("events", [Event]) / ("delete", (user id, Deletion))
        self._flush_lock = asyncio.Lock()
        self._flush_task: asyncio.Task[None] | None = None
        self._scripts: dict[str, Any] = {}
        self._salt: bytes | None = self.log.salt if self.log is not None else None
        """The salt of user keys: the events folder's when there is one, else Redis's (read on
        first use; etl.events_log.erasure_salt resolves it the same way for the trainer)."""
        self.redis_durable: bool | None = None
        """Redis-only mode: whether Redis persists every write it acknowledges (AOF on), checked at
        start and whenever Redis comes back; None: not known yet (Redis not reached)."""

    # -- life cycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        if self.local is not None:
            await anyio.to_thread.run_sync(self.local.sync)
        if self.settings.redis_url:
            import redis.asyncio as aioredis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            self.redis = aioredis.Redis.from_url(
                self.settings.redis_url,
                socket_connect_timeout=0.25,
                socket_timeout=0.5,
                retry=Retry(NoBackoff(), 1),  # one immediate retry: a pooled connection may be stale
            )
            self._scripts = {
                "add": self.redis.register_script(_ADD_EVENTS),
                "purge": self.redis.register_script(_PURGE_USER),
                "add_exposures": self.redis.register_script(_ADD_EXPOSURES),
                "purge_exposures": self.redis.register_script(_PURGE_EXPOSURES),
                "get": self.redis.register_script(_CACHE_GET),
                "bucket": self.redis.register_script(_TOKEN_BUCKET),
                "items": self.redis.register_script(UPSERT_SCRIPT),
            }
            await self.ping()

    async def close(self) -> None:
        if self._flush_task is not None:
            self._flush_task.cancel()
        if self.redis is not None:
            await self.redis.aclose()

    @property
    def redis_state(self) -> str:
        """'disabled', 'up' or 'down'."""
        if self.redis is None:
            return "disabled"
        return "up" if self._redis_up else "down"

    async def ping(self) -> str:
        """Probe Redis (used by /health and the background loop); replays the queue on recovery."""
        if self.redis is not None:
            with contextlib.suppress(RedisUnavailable):
                await self._redis(lambda r: r.ping(), force=True)
                if self._items_unsynced:
                    await self._push_items()
        return self.redis_state

    async def _redis(self, call: Callable[[Any], Awaitable[T]], force: bool = False) -> T:
        """Run one Redis call; RedisUnavailable when it fails or Redis is in its back-off window."""
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        if self.redis is None:
            raise RedisUnavailable("redis is not configured")
        if self._redis_up is False and not force and time.monotonic() < self._retry_at:
            raise RedisUnavailable("redis is down")
        try:
            result = await call(self.redis)
        except (RedisConnectionError, RedisTimeoutError, OSError) as err:
            self._retry_at = time.monotonic() + REDIS_RETRY_SECONDS
            if self._redis_up is not False:
                log.warning("redis unavailable, serving without it", extra={"error": str(err)})
                self.metrics.redis_up.set(0)
            self._redis_up = False
            raise RedisUnavailable(str(err)) from err
        if self._redis_up is not True:
            if self._redis_up is False:
                log.info("redis is back")
            self._redis_up = True
            if self.log is None:
                await self._check_persistence()
            self.metrics.redis_up.set(1)
            if self._pending:
                self._schedule_flush()
        return result

    async def _check_persistence(self) -> None:
        """Redis-only mode acknowledges an event once Redis holds it, so Redis must keep it: with
        AOF off (stock RDB snapshots) a crash of Redis loses every write since the last snapshot.
        Writes are refused (SERVICE_UNAVAILABLE) until AOF is on; appendfsync other than always
        survives a kill of Redis but can lose the last second of writes if the host goes down."""
        from redis.exceptions import ResponseError

        try:
            raw = await self.redis.config_get("append*")
        except ResponseError as err:  # CONFIG disabled (managed Redis): cannot be checked
            self.redis_durable = self.settings.redis_assume_durable
            log.warning("redis persistence cannot be checked (%s); writes are %s", err,
                        "accepted (HYBRIDREC_REDIS_ASSUME_DURABLE)" if self.redis_durable else "refused")
            return
        config = {_text(k): _text(v).lower() for k, v in raw.items()}
        appendonly, fsync = config.get("appendonly", "?"), config.get("appendfsync", "?")
        self.redis_durable = appendonly == "yes" or self.settings.redis_assume_durable
        if not self.redis_durable:
            log.error("redis has no append-only file (appendonly %s): interactions and deletions are refused "
                      "until it has one (redis-server --appendonly yes) or HYBRIDREC_EVENTS_DIR is set", appendonly)
        elif fsync != "always":
            log.warning("redis appendfsync is %s: a crash of the host (not of Redis) can lose the last second "
                        "of accepted interactions; appendfsync always closes that window", fsync)

    async def _require_durable(self) -> None:
        """EventStoreUnavailable unless an accepted write would be kept: a local log, or a Redis
        with an append-only file (asked now if it was not reached yet)."""
        if self.log is not None:
            return
        if self.redis is not None and self.redis_durable is None:
            with contextlib.suppress(RedisUnavailable):
                await self._redis(lambda r: r.ping(), force=True)  # learns the persistence on the way
        if not self.redis_durable:
            raise EventStoreUnavailable(
                "redis does not persist writes (no append-only file) and no HYBRIDREC_EVENTS_DIR is set: "
                "an accepted interaction could be lost, so none is accepted")

    def _schedule_flush(self) -> None:
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        """Replay what was accepted while Redis was down, in order."""
        async with self._flush_lock:
            while self._pending:
                kind, payload = self._pending[0]
                try:
                    if kind == "events":
                        await self._redis_add(payload)
                    elif kind == "exposures":
                        await self._redis_add_exposures(payload)
                    else:
                        await self._redis_purge(payload)
                except RedisUnavailable:
                    return  # tried again when Redis answers
                except Exception:  # noqa: BLE001 - keep the queue; the next ping retries
                    log.exception("replaying queued events into redis failed")
                    return
                self._pending.pop(0)
            log.info("replayed events queued while redis was down")

    # -- sync with other local writers ------------------------------------------------------------
    def sync_local(self) -> None:
        """Pick up what other processes appended to the local log (cheap: one stat per file)."""
        if self.local is not None:
            for user in self.local.sync():
                self.cache.drop_user(user)

    async def user_key(self, user_id: str) -> str:
        """The salted hash deletions and generation keys use (raises RedisUnavailable in Redis-only
        mode while Redis cannot be asked for the salt)."""
        if self._salt is None:
            prefix = self.settings.redis_prefix
            self._salt = await self._redis(lambda r: _salt_from_redis(r, prefix))
        return user_key(self._salt, user_id)

    # -- user state --------------------------------------------------------------------------------
    async def user_state(self, user_id: str) -> UserState:
        local = self.local.state(user_id) if self.local is not None else UserState(user_id)
        pending = [e for kind, p in self._pending if kind == "events" for e in p if e.user_id == user_id]
        if self.redis is None:
            return local
        try:
            key = await self.user_key(user_id)
            gen_key = self.keys.keyed(key, "gen")

            def fetch(r: Any) -> Awaitable[list[Any]]:
                pipe = r.pipeline(transaction=False)
                pipe.lrange(self.keys.user(user_id, "events"), -self.settings.history_cap, -1)  # the newest only
                pipe.get(gen_key)
                pipe.hget(self.keys.deletions, key)
                return pipe.execute()

            items, gen, deleted = await self._redis(fetch)
        except RedisUnavailable:
            gen_key = "unavailable"
            # uncacheable: the tags hold a generation no cache entry can have
            kept = [e for e in _dedupe([*local.events, *pending])
                    if local.deleted_at is None or e.accepted_at > local.deleted_at]  # another process deleted
            return UserState(user_id, tuple(kept), local.deleted_at, {gen_key: "unavailable"})
        remote = [Event.from_json(item.split(b"|", 1)[1]) for item in items]
        deleted_at = max(filter(None, [local.deleted_at, float(deleted) if deleted else None]), default=None)
        events = [e for e in _dedupe([*remote, *local.events, *pending])
                  if deleted_at is None or e.accepted_at > deleted_at][-self.settings.history_cap:]
        return UserState(user_id, tuple(events), deleted_at, {gen_key: (gen or b"0").decode()})

    # -- events ------------------------------------------------------------------------------------
    async def record(self, events: list[Event]) -> None:
        """Make events durable and visible; returns once they are (raises EventStoreUnavailable)."""
        if not events:
            return
        await self._require_durable()
        if self.log is not None:
            await anyio.to_thread.run_sync(self.log.append, events)
            self.sync_local()
        if self.redis is None:
            return
        if self._pending:
            self._pending.append(("events", events))
            self._schedule_flush()
            return
        try:
            await self._redis_add(events)
        except RedisUnavailable as err:
            if self.log is None:
                raise EventStoreUnavailable("the event store (redis) is unavailable; retry later") from err
            self._pending.append(("events", events))

    async def _redis_add(self, events: list[Event]) -> None:
        args: list[str] = []
        for e in events:
            key = await self.user_key(e.user_id)
            args += [self.keys.user(e.user_id, "events"), self.keys.keyed(key, "gen"),
                     self.keys.keyed(key, "cache"), e.to_json(), key, repr(e.accepted_at)]
        await self._redis(lambda r: self._scripts["add"](keys=[self.keys.stream, self.keys.deletions], args=args))

    # -- deletion ----------------------------------------------------------------------------------
    async def delete_user(self, user_id: str) -> DeletionReport:
        """Purge a user's events, cached answers and online state; record the deletion (under the
        user key, not the id)."""
        await self._require_durable()  # a deletion undone by a crash would bring the user back
        try:
            key = await self.user_key(user_id)
        except RedisUnavailable as err:  # Redis-only mode: the salt is in Redis
            raise EventStoreUnavailable("the event store (redis) is unavailable; retry later") from err
        deletion = Deletion(key, time.time())
        removed_ids: set[str] = set()
        cached = self.cache.drop_user(key)  # before the purge below resyncs (and drops) them
        had_state = False
        exposures: set[str] = set()
        self._logged.clear()  # an exposure shown again after the deletion is logged again
        if self.log is not None:
            had_state = bool(self.local and self.local.events.get(key))
            exposures |= await anyio.to_thread.run_sync(self.log.purge_exposures, user_id)
            if self.exposures is not None:
                self.exposures.drop_user(user_id)
            removed_ids |= await anyio.to_thread.run_sync(self.log.purge_user, user_id)
            await anyio.to_thread.run_sync(self.log.record_deletion, deletion)
            self.sync_local()
        queued = [e.event_id for k, p in self._pending if k == "events" for e in p if e.user_id == user_id]
        exposures.update(x.exposure_id for k, p in self._pending if k == "exposures" for x in p if x.user_id == user_id)
        if queued or exposures:
            self._pending = [(k, [e for e in p if e.user_id != user_id] if k in ("events", "exposures") else p)
                             for k, p in self._pending]
            removed_ids.update(queued)
            had_state = True
        if self.redis is not None:
            try:
                if self._pending:
                    raise RedisUnavailable("queue not replayed yet")
                ids, n_cached, shown = await self._redis_purge((user_id, deletion))
                exposures |= shown
                removed_ids |= ids
                cached += n_cached
                had_state = had_state or bool(ids)
            except RedisUnavailable as err:
                if self.log is None:
                    raise EventStoreUnavailable("the event store (redis) is unavailable; retry later") from err
                self._pending.append(("delete", (user_id, deletion)))
                self._schedule_flush()
        return DeletionReport(events=len(removed_ids), cached_answers=cached, online_state=had_state,
                              exposures=len(exposures))

    async def _redis_purge(self, what: tuple[str, Deletion]) -> tuple[set[str], int, set[str]]:
        user_id, deletion = what
        k = deletion.user_key
        out = await self._redis(lambda r: self._scripts["purge"](
            keys=[self.keys.stream, self.keys.deletions],
            args=[self.keys.user(user_id, "events"), self.keys.keyed(k, "gen"), self.keys.keyed(k, "cache"), k,
                  repr(deletion.deleted_at)],
        ))
        shown = await self._redis_purge_exposures(user_id)
        return {Event.from_json(raw).event_id for raw in out[1:]}, int(out[0]), shown

    # -- experiment exposures ------------------------------------------------------------------------
    async def record_exposures(self, exposures: list[Exposure], generation: str = "") -> list[Exposure]:
        """Make exposures durable as events are (raises EventStoreUnavailable); an exposure this
        process logged lately at the same user generation is not written again. Returns those written."""
        fresh = [x for x in exposures if f"{x.exposure_id}:{generation}" not in self._logged]
        if not fresh:
            return []
        await self._require_durable()
        if self.log is not None:
            await anyio.to_thread.run_sync(self.log.append_exposures, fresh)
        if self.redis is not None:
            if self._pending:
                self._pending.append(("exposures", fresh))
                self._schedule_flush()
            else:
                try:
                    await self._redis_add_exposures(fresh)
                except RedisUnavailable as err:
                    if self.log is None:
                        raise EventStoreUnavailable("the event store (redis) is unavailable; retry later") from err
                    self._pending.append(("exposures", fresh))
        for x in fresh:
            self._logged[f"{x.exposure_id}:{generation}"] = None
        while len(self._logged) > MEMORY_CACHE_ENTRIES:
            self._logged.popitem(last=False)
        return fresh

    async def exposure(self, user_id: str, exposure_id: str) -> Exposure | None:
        """The user's logged exposure of that id; None when there is none (another user's is none)."""
        if self.exposures is not None:
            found = await anyio.to_thread.run_sync(self.exposures.get, user_id, exposure_id)
            if found is not None:
                return found
        for kind, payload in self._pending:
            if kind == "exposures":
                for x in payload:
                    if x.exposure_id == exposure_id and x.user_id == user_id:
                        return x
        if self.redis is None:
            return None
        try:
            raw = await self._redis(lambda r: r.hget(self.keys.user(user_id, "exposures"), exposure_id))
        except RedisUnavailable as err:
            if self.exposures is None:
                raise EventStoreUnavailable("the event store (redis) is unavailable; retry later") from err
            return None
        return Exposure.from_json(raw.split(b"|", 1)[1]) if raw else None

    async def _redis_add_exposures(self, exposures: list[Exposure]) -> None:
        args: list[str] = []
        for x in exposures:
            args += [self.keys.user(x.user_id, "exposures"), x.exposure_id, x.to_json()]
        await self._redis(lambda r: self._scripts["add_exposures"](keys=[self.keys.exposures], args=args))

    async def _redis_purge_exposures(self, user_id: str) -> set[str]:
        key = self.keys.user(user_id, "exposures")
        ids = await self._redis(lambda r: self._scripts["purge_exposures"](keys=[self.keys.exposures, key]))
        return {_text(i) for i in ids}

    # -- cached answers ----------------------------------------------------------------------------
    def _cache_key(self, key: str) -> str:
        return self.keys.response(key)

    async def cache_get(self, key: str) -> CachedAnswer | None:
        if self.settings.cache_ttl <= 0:
            return None
        if self.redis is None:
            gens = self.local.generations if self.local is not None else {}
            return self.cache.get(key, gens)  # type: ignore[arg-type]
        try:
            raw = await self._redis(lambda r: self._scripts["get"](keys=[self._cache_key(key)]))
        except RedisUnavailable:
            return None
        return _decode_entry(raw) if raw else None

    async def cache_put(self, key: str, operation: str, tags: dict[str, str], body: bytes,
                        variants: Iterable[str] = ()) -> bool:
        """Cache an answer that depends on the users of ``tags`` (at the generations given); True if stored."""
        ttl = self.settings.cache_ttl
        variants = tuple(variants)
        if ttl <= 0 or any(g == "unavailable" for g in tags.values()):
            return False
        if self.redis is None:
            # a copy of exact size: orjson's output keeps the 64 KiB buffer it was written into, so
            # the cache would hold 40 times what it counts
            return self.cache.put(key, CachedAnswer(operation, bytes(memoryview(body)), variants), tags, ttl)
        if len(body) > self.settings.cache_max_bytes // 16:
            return False  # as the in-process cache: one huge answer must not crowd out thousands
        users = [k.rsplit(":", 1)[0] + ":cache" for k in tags]  # '<prefix>:h:<key>:gen' -> ':cache'
        rkey = self._cache_key(key)
        ms = int(ttl * 1000)

        def put(r: Any) -> Awaitable[list[Any]]:
            pipe = r.pipeline(transaction=False)
            pipe.set(rkey, _encode_entry(operation, tags, body, variants), px=ms)
            for tag_key in users:
                pipe.sadd(tag_key, rkey)
                pipe.pexpire(tag_key, ms)
            return pipe.execute()

        try:
            await self._redis(put)
        except RedisUnavailable:
            return False
        return True

    # -- catalogue additions (graphql_api.items) ---------------------------------------------------------
    async def upsert_items(self, items: list[CatalogueItem]) -> list[Upserted]:
        """Make validated items durable (the log, then Redis) and visible to every replica's next
        poll; an item whose metadata is already held is not written again. EventStoreUnavailable
        when no durable place takes them."""
        await self._require_durable()
        at = time.time()
        local: list[Upserted] = []
        if self.items is not None:
            local = await anyio.to_thread.run_sync(self.items.upsert, items, at)
        if self.redis is None:
            return local
        try:
            if self._items_unsynced:
                await self._push_items()
            _, remote = script_result(items, await self._redis(lambda r: self._scripts["items"](
                keys=self._item_keys(), args=script_args((at, i) for i in items))))
        except RedisUnavailable as err:
            if self.items is None:
                raise EventStoreUnavailable("the item store (redis) is unavailable; retry later") from err
            self._items_unsynced = True
            return local
        if not local:
            return remote
        return [Upserted(a.item, a.changed or b.changed, a.known or b.known) for a, b in zip(local, remote, strict=True)]

    def _item_keys(self) -> list[str]:
        return [self.keys.items, self.keys.items_at, self.keys.items_version]

    async def _push_items(self) -> None:
        """Copy the log's items into Redis (after an outage): each with its own acceptance time, so
        a newer write another replica made meanwhile is kept."""
        assert self.items is not None
        table = list((await anyio.to_thread.run_sync(self.items.table)).values())
        for start in range(0, len(table), 500):
            args = script_args(table[start:start + 500])
            await self._redis(lambda r: self._scripts["items"](keys=self._item_keys(), args=args))
        self._items_unsynced = False
        log.info("copied items added while redis was down into it", extra={"items": len(table)})

    async def catalogue_signature(self) -> tuple[Any, ...]:
        """What changes whenever the added catalogue does: the log's (inode, size) and Redis's
        version counter. Cheap (a stat and a GET): polled several times a second."""
        local = self.items.signature() if self.items is not None else None
        remote: Any = None
        if self.redis is not None:
            try:
                remote = await self._redis(lambda r: r.get(self.keys.items_version))
            except RedisUnavailable:
                remote = "unavailable"
        return (local, remote)

    async def catalogue(self) -> dict[str, tuple[float, CatalogueItem]]:
        """Every added item: id -> (accepted_at, item), the newest write across the log and Redis
        (as last read while Redis is down). RedisUnavailable while Redis does not answer and this
        process has not read it yet."""
        sources: list[Iterable[tuple[float, CatalogueItem]]] = []
        if self.items is not None:
            sources.append((await anyio.to_thread.run_sync(self.items.table)).values())
        if self.redis is not None:
            def fetch(r: Any) -> Awaitable[list[Any]]:
                pipe = r.pipeline(transaction=True)  # both hashes as of one moment
                pipe.hgetall(self.keys.items)
                pipe.hgetall(self.keys.items_at)
                return pipe.execute()

            try:
                contents, times = await self._redis(fetch)
                self._remote_items = redis_table(contents, times)
            except RedisUnavailable:
                if self.items is None or self._remote_items is None:
                    raise  # what only Redis holds is not known: the caller keeps what it serves
            sources.append(self._remote_items.values())  # while Redis is down: as last read
        return newest(*sources)

    # -- rate limits -------------------------------------------------------------------------------
    async def take_points(self, clients: tuple[str, ...], cost: int) -> RateDecision:
        """Take ``cost`` points from every bucket of ``clients`` (in Redis when configured, so
        replicas share them; in process otherwise, or while Redis is down), or from none. A cost
        over the bucket size takes a full bucket."""
        rate, burst = self.settings.rate_limit, self.settings.burst
        cost = max(0, min(int(cost), burst))
        if self.redis is not None:
            try:
                allowed, wait, left = await self._redis(
                    lambda r: self._scripts["bucket"](keys=[self.keys.bucket(c) for c in clients],
                                                      args=[rate, burst, cost])
                )
                return RateDecision(bool(int(allowed)), cost, burst, float(left), rate, float(wait))
            except RedisUnavailable:
                pass
        ok, wait, left = self.buckets.take(clients, rate, burst, cost)
        return RateDecision(ok, cost, burst, left, rate, wait)
