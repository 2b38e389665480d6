"""Typed API settings, read from the environment (then an optional env file, then defaults).

Loud when something required is missing: ``Settings.from_env()`` raises ``SettingsError``
naming the variable, so a misconfigured server fails at start, not on the first request.

Variables (all prefixed ``HYBRIDREC_``):

==========================  ======================================================  =========
name                        meaning                                                 default
==========================  ======================================================  =========
BUNDLE_ROOT                 folder of published bundles (with the ``latest`` one)   required
                            or an fsspec URL (s3://bucket/bundles, memory://...)
BUNDLE_CACHE                local folder that bundles from a URL root are copied    ~/.cache/
                            into, to be memory-mapped ($XDG_CACHE_HOME replaces     hybridrec/
                            ~/.cache when set)                                      bundles
EVENTS_DIR                  folder of the durable event log (JSONL, fsync'd)        required
                            without Redis; optional with it
REDIS_URL                   redis://host:port/db; events, cache, online state and   none
                            rate limits are then shared by replicas
REDIS_PREFIX                key prefix in Redis                                     hybridrec
REDIS_ASSUME_DURABLE        Redis-only mode where CONFIG is disabled: trust that    false
                            Redis persists acknowledged writes (else: checked that
                            appendonly is yes; writes refused until it is)
API_KEYS                    comma-separated keys, each ``key[:scopes][@user]``      none
                            (scopes read, write, admin joined by ``+``; default
                            read+write; ``@user``: the key acts for that user only)
ADMIN_KEYS                  the same, with admin added to each key's scopes         none
DEV                         true: start without keys, everything open (development  false
                            only: logged at start and shown on /health)
REQUIRE_KEY_FOR_QUERIES     true: every operation needs a key                       false
FORWARDED_ALLOW_IPS         proxies whose X-Forwarded-For is believed               none
CORS_ORIGINS                comma-separated allowed origins ("*" for any)           none
CORS_ALLOW_CREDENTIALS      allow credentials in CORS requests                      false
MAX_DEPTH                   fields on the longest path of an operation              6
                            (fragments written out; introspection not counted)
MAX_ALIASES                 aliases per operation (fragments written out)           15
MAX_DIRECTIVES              directives per operation (fragments written out)        50
MAX_TOKENS                  lexer tokens per document                               1000
MAX_COST                    price of an operation, in points of ~10 us of server    5000
                            CPU (graphql_api/cost.py)
DEADLINE                    seconds validation and execution may take before the    5
                            request is answered with a TIMEOUT error
FIELD_SUGGESTIONS           "Did you mean ...?" in error messages (never while      false
                            introspection is off)
INTROSPECTION               allow introspection queries                             true
GRAPHIQL                    serve GraphiQL on GET /graphql                          true
RATE_LIMIT                  cost points per second restored to each API key's and   0
                            each client address's bucket (0: off)
RATE_BURST                  bucket size in cost points (a request takes its price;  2 x rate
                            one dearer than the bucket takes a full bucket)
CACHE_TTL                   seconds a cached answer lives (0: no caching)           300
CACHE_MAX_BYTES             bytes of answers cached in process                      32 MiB
HISTORY_CAP                 online events per user kept for folding in              500
RELOAD_INTERVAL             seconds between polls of the bundle root's ``latest``   2
ITEMS_POLL_INTERVAL         seconds between polls of the added catalogue (items     0.25
                            added on any replica are served within about this)
MAX_BATCH                   interactions per recordInteractions call                1000
EXPLAIN_NEIGHBOURS          history items an explanation's graph path starts from   10
PLAIN_EXECUTOR              false: graphql-core's own execution of every field      true
                            instead of graphql_api/execution.py's shortcut (the
                            fallback should a Strawberry or graphql-core release
                            break it; bench/api_load.py --compare-executor)
LOG_LEVEL                   logging level of the JSON logs                          INFO
ACCESS_LOG                  one JSON log line per request                           true
ENV_FILE                    an env file read after the environment                  none
==========================  ======================================================  =========
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import fsspec
from fsspec.utils import get_protocol
from starlette.config import Config, EnvironError

from etl.errors import HybridrecError

PREFIX = "HYBRIDREC_"


class SettingsError(HybridrecError, ValueError):
    """A required setting is missing or a setting has an invalid value."""


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


SCOPES = ("read", "write", "admin")
"""What a key may do: read (a user's history), write (record interactions), admin (erase a user)."""
WEAK_KEY_LENGTH = 16
"""Keys shorter than this are accepted with a warning at start (guessable)."""
_KEY_CHARS = re.compile(r"^[A-Za-z0-9._~+/=-]+$")


def key_id(key: str) -> str:
    """A key's name in logs: the first 12 hex digits of its SHA-256, never the key itself."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class ApiKey:
    """One accepted key: its scopes and, when bound, the one user it may act for."""

    scopes: frozenset[str]
    user: str | None = None
    """None: any user; otherwise writes and history reads only for this user id."""
    id: str = ""
    """key_id(key): how logs name the key."""

    def allows(self, scope: str, user_id: str | None = None) -> bool:
        """The key has ``scope`` and, when bound, ``user_id`` is its user (None: no user involved)."""
        return scope in self.scopes and (self.user is None or user_id is None or user_id == self.user)

    @classmethod
    def parse(cls, entry: str, extra_scopes: frozenset[str] = frozenset()) -> tuple[str, ApiKey]:
        """``key[:scope+scope][@user]`` -> (key, ApiKey); SettingsError naming what is wrong
        (by the key's id: a key never appears in an error)."""
        head, at, user = entry.partition("@")
        key, sep, scope_text = head.partition(":")
        shown = key_id(key)
        if not key or not _KEY_CHARS.match(key):
            raise SettingsError(f"API key {shown}: a key is letters, digits and ._~+/=- only")
        scopes = frozenset(s.strip() for s in scope_text.split("+") if s.strip()) if sep else frozenset({"read", "write"})
        unknown = sorted(scopes - set(SCOPES))
        if unknown or (sep and not scopes):
            raise SettingsError(f"API key {shown}: unknown scopes {unknown or [scope_text]}; known: {', '.join(SCOPES)}")
        if at and not user.strip():
            raise SettingsError(f"API key {shown}: '@' must be followed by the user id the key is bound to")
        return key, cls(scopes | extra_scopes, user.strip() or None, shown)


def parse_keys(api_keys: tuple[str, ...] | frozenset[str], admin_keys: tuple[str, ...] | frozenset[str]) -> dict[str, ApiKey]:
    """The keys of HYBRIDREC_API_KEYS and HYBRIDREC_ADMIN_KEYS (admin added to the latter's scopes)."""
    out: dict[str, ApiKey] = {}
    for entries, extra in ((api_keys, frozenset()), (admin_keys, frozenset({"admin"}))):
        for entry in sorted(entries):
            key, spec = ApiKey.parse(entry, extra)
            if key in out:
                spec = ApiKey(out[key].scopes | spec.scopes, spec.user, spec.id)
            out[key] = spec
    return out


@dataclass(frozen=True)
class Limits:
    """Limits on a GraphQL request, checked on the parsed document before validation and execution
    (graphql_api/cost.py); defaults as graphql-armor's, the price limit measured (bench/hostile.py)."""

    max_depth: int = 6
    """Fields on the longest path of the operation, fragments written out (graphql-armor's
    counting; introspection left to graphql-core's own limit). The deepest query of this schema,
    recommendations.items.explanation.drivers.item.id, is 6."""
    max_aliases: int = 15
    """Aliases in the operation, fragments written out."""
    max_directives: int = 50
    """Directives in the operation, fragments written out."""
    max_tokens: int = 1000
    """Lexer tokens per document (the parser stops at the first one over)."""
    max_cost: int = 5000
    """Price of the operation in points of about 10 µs of server CPU (graphql_api.cost.WEIGHTS):
    the dearest document within it took under 50 ms of server CPU (bench/hostile.py)."""
    deadline: float = 5.0
    """Seconds validation and execution may take; a request past it is answered with a TIMEOUT
    error. CPU-bound work is not interrupted (asyncio cannot): the price limit is the first defence,
    the deadline the second (it stops awaiting resolvers, and a validation that overran)."""
    introspection: bool = True
    """False adds DisableIntrospection."""
    field_suggestions: bool = False
    """Keep graphql-core's "Did you mean ...?" in error messages (they name fields and types):
    off by default, as graphql-armor's blockFieldSuggestions, and never while introspection is off."""

    def __post_init__(self) -> None:
        for name in ("max_depth", "max_aliases", "max_directives", "max_tokens", "max_cost"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.deadline > 0:
            raise SettingsError(f"deadline must be > 0 seconds, got {self.deadline}")

    @property
    def suggestions(self) -> bool:
        """Whether error messages keep their field suggestions."""
        return self.field_suggestions and self.introspection


@dataclass(frozen=True)
class Settings:
    """Everything the API reads from its environment."""

    bundle_root: str | Path
    """Folder or fsspec URL of published model bundles; the server loads its ``latest``."""
    bundle_cache: Path | None = None
    """Local folder for copies of bundles loaded from a URL root (None: hybrid.bundle's default)."""
    events_dir: Path | None = None
    """Durable append-only event log; required when ``redis_url`` is None."""
    redis_url: str | None = field(default=None, repr=False)  # may hold a password
    """Redis for events, cached answers, online user state and rate limits (shared by replicas)."""
    redis_prefix: str = "hybridrec"
    """Key prefix in Redis, so that several deployments can share a server."""
    redis_assume_durable: bool = False
    """Redis-only mode on a Redis whose CONFIG command is disabled (managed services): believe that
    it persists every acknowledged write. Otherwise it is checked (appendonly yes) at start."""
    api_keys: frozenset[str] = field(default=frozenset(), repr=False)  # secrets: never in a log line
    """Key entries ``key[:scopes][@user]`` (default scopes read+write); see ``ApiKey``."""
    admin_keys: frozenset[str] = field(default=frozenset(), repr=False)
    """The same, each with the admin scope added (deleteUserData)."""
    dev_mode: bool = False
    """Development only: start without keys, every operation open to anyone. Without it a server
    with no keys refuses to start; with it the start log and /health say so."""
    require_key_for_queries: bool = False
    """Every operation, not only mutations and history reads, needs a key."""
    forwarded_allow_ips: str = ""
    """Proxies whose X-Forwarded-For is believed (uvicorn's forwarded_allow_ips); empty: none, the
    client address is the peer's (rate limits then cannot be dodged with a forged header)."""
    cors_origins: tuple[str, ...] = ()
    """Origins allowed by CORS; empty disables the CORS middleware."""
    cors_allow_credentials: bool = False
    limits: Limits = field(default_factory=Limits)
    graphiql: bool = True
    """Serve GraphiQL on GET /graphql."""
    rate_limit: float = 0.0
    """Cost points per second restored to each bucket; 0 = off. A request takes its price
    (graphql_api.cost) from the bucket of its API key and from that of its client address, and is
    refused (429) unless both hold it."""
    rate_burst: int = 0
    """Bucket size in cost points; 0 means twice the rate (at least 1). A request dearer than a
    bucket takes a full one."""
    cache_ttl: float = 300.0
    """Seconds a cached answer lives; 0 disables the answer cache."""
    cache_max_bytes: int = 32 << 20
    """Bytes of answers the in-process cache holds (oldest dropped first; expired ones swept)."""
    history_cap: int = 500
    """Online events kept per user for folding in (the newest; older ones stay in the durable log
    and reach the next training run)."""
    reload_interval: float = 2.0
    """Seconds between polls of the bundle root's latest pointer; 0 disables hot reload."""
    items_poll_interval: float = 0.25
    """Seconds between polls of the added catalogue (graphql_api.items; 0: only at bundle loads)."""
    max_batch: int = 1000
    """Interactions accepted by one recordInteractions call."""
    explain_neighbours: int = 10
    """History items (strongest drivers first) an explanation's graph path may start from; the
    path search grows with it (hybrid.explain.explain_pair's max_neighbours)."""
    plain_executor: bool = True
    """Answer plain fields with graphql_api.execution.PlainFieldExecutor; False: graphql-core's
    own execution path (Strawberry's default), for comparison and as a fallback."""
    log_level: str = "INFO"
    access_log: bool = True
    """One JSON log line per request (method, path, status, ms, operation, cached)."""

    def __post_init__(self) -> None:
        if isinstance(self.bundle_root, str):
            try:
                fsspec.get_filesystem_class(get_protocol(self.bundle_root))
            except (ValueError, ImportError) as err:
                raise SettingsError(f"{PREFIX}BUNDLE_ROOT={self.bundle_root}: {err}") from err
        if self.events_dir is None and self.redis_url is None:
            raise SettingsError(
                f"{PREFIX}EVENTS_DIR is required when {PREFIX}REDIS_URL is not set: accepted "
                "interactions must be written somewhere durable"
            )
        if self.rate_limit < 0:
            raise SettingsError(f"{PREFIX}RATE_LIMIT must be >= 0, got {self.rate_limit}")
        if self.cache_ttl < 0:
            raise SettingsError(f"{PREFIX}CACHE_TTL must be >= 0, got {self.cache_ttl}")
        if self.max_batch < 1:
            raise SettingsError(f"{PREFIX}MAX_BATCH must be >= 1, got {self.max_batch}")
        if self.explain_neighbours < 1:
            raise SettingsError(f"{PREFIX}EXPLAIN_NEIGHBOURS must be >= 1, got {self.explain_neighbours}")
        if self.items_poll_interval < 0:
            raise SettingsError(f"{PREFIX}ITEMS_POLL_INTERVAL must be >= 0, got {self.items_poll_interval}")
        if self.reload_interval < 0:
            raise SettingsError(f"{PREFIX}RELOAD_INTERVAL must be >= 0, got {self.reload_interval}")
        if self.cache_max_bytes < 0:
            raise SettingsError(f"{PREFIX}CACHE_MAX_BYTES must be >= 0, got {self.cache_max_bytes}")
        if self.history_cap < 1:
            raise SettingsError(f"{PREFIX}HISTORY_CAP must be >= 1, got {self.history_cap}")
        object.__setattr__(self, "keys", parse_keys(self.api_keys, self.admin_keys))
        if not self.keys and not self.dev_mode:
            raise SettingsError(
                f"no API keys: set {PREFIX}API_KEYS (and {PREFIX}ADMIN_KEYS for erasure), or run open for "
                f"development only with {PREFIX}DEV=true (hybridrec serve --dev)"
            )

    keys: dict[str, ApiKey] = field(init=False, repr=False, compare=False, default_factory=dict)
    """Accepted keys by their text (parsed from api_keys and admin_keys)."""

    @property
    def keys_configured(self) -> bool:
        return bool(self.keys)

    def key(self, text: str | None) -> ApiKey | None:
        """The accepted key of that text, or None."""
        return None if text is None else self.keys.get(text)

    def weak_keys(self) -> list[str]:
        """Ids of keys shorter than WEAK_KEY_LENGTH (warned about at start)."""
        return sorted(spec.id for key, spec in self.keys.items() if len(key) < WEAK_KEY_LENGTH)

    @property
    def burst(self) -> int:
        return self.rate_burst if self.rate_burst > 0 else max(1, int(2 * self.rate_limit))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``environ`` (default os.environ) and HYBRIDREC_ENV_FILE if set."""
        env = dict(os.environ if environ is None else environ)
        env_file = env.get(f"{PREFIX}ENV_FILE") or None
        if env_file and not Path(env_file).is_file():
            raise SettingsError(f"{PREFIX}ENV_FILE={env_file}: no such file")
        config = Config(env_file=env_file, environ=env)

        def get(name: str, cast: type = str, default: object = None) -> object:
            try:
                if default is ...:
                    return config(PREFIX + name, cast=cast)
                return config(PREFIX + name, cast=cast, default=default)
            except KeyError as err:  # starlette raises KeyError for a missing required key
                raise SettingsError(f"{PREFIX}{name} is required but not set") from err
            except (ValueError, EnvironError) as err:
                raise SettingsError(f"{PREFIX}{name}: {err}") from err

        events = get("EVENTS_DIR", str, None)
        root = str(get("BUNDLE_ROOT", str, ...))
        cache = get("BUNDLE_CACHE", str, None)
        return cls(
            bundle_root=root if "://" in root else Path(root),
            bundle_cache=Path(str(cache)) if cache else None,
            events_dir=Path(str(events)) if events else None,
            redis_url=str(get("REDIS_URL", str, None) or "") or None,
            redis_prefix=str(get("REDIS_PREFIX", str, "hybridrec")),
            redis_assume_durable=bool(get("REDIS_ASSUME_DURABLE", bool, False)),
            api_keys=frozenset(_csv(get("API_KEYS", str, ""))),  # type: ignore[arg-type]
            admin_keys=frozenset(_csv(get("ADMIN_KEYS", str, ""))),  # type: ignore[arg-type]
            dev_mode=bool(get("DEV", bool, False)),
            require_key_for_queries=bool(get("REQUIRE_KEY_FOR_QUERIES", bool, False)),
            forwarded_allow_ips=str(get("FORWARDED_ALLOW_IPS", str, "")),
            cors_origins=_csv(get("CORS_ORIGINS", str, "")),  # type: ignore[arg-type]
            cors_allow_credentials=bool(get("CORS_ALLOW_CREDENTIALS", bool, False)),
            limits=Limits(
                max_depth=int(get("MAX_DEPTH", int, 6)),  # type: ignore[arg-type]
                max_aliases=int(get("MAX_ALIASES", int, 15)),  # type: ignore[arg-type]
                max_directives=int(get("MAX_DIRECTIVES", int, 50)),  # type: ignore[arg-type]
                max_tokens=int(get("MAX_TOKENS", int, 1000)),  # type: ignore[arg-type]
                max_cost=int(get("MAX_COST", int, 5000)),  # type: ignore[arg-type]
                deadline=float(get("DEADLINE", float, 5.0)),  # type: ignore[arg-type]
                introspection=bool(get("INTROSPECTION", bool, True)),
                field_suggestions=bool(get("FIELD_SUGGESTIONS", bool, False)),
            ),
            graphiql=bool(get("GRAPHIQL", bool, True)),
            rate_limit=float(get("RATE_LIMIT", float, 0.0)),  # type: ignore[arg-type]
            rate_burst=int(get("RATE_BURST", int, 0)),  # type: ignore[arg-type]
            cache_ttl=float(get("CACHE_TTL", float, 300.0)),  # type: ignore[arg-type]
            cache_max_bytes=int(get("CACHE_MAX_BYTES", int, 32 << 20)),  # type: ignore[arg-type]
            history_cap=int(get("HISTORY_CAP", int, 500)),  # type: ignore[arg-type]
            reload_interval=float(get("RELOAD_INTERVAL", float, 2.0)),  # type: ignore[arg-type]
            items_poll_interval=float(get("ITEMS_POLL_INTERVAL", float, 0.25)),  # type: ignore[arg-type]
            max_batch=int(get("MAX_BATCH", int, 1000)),  # type: ignore[arg-type]
            explain_neighbours=int(get("EXPLAIN_NEIGHBOURS", int, 10)),  # type: ignore[arg-type]
            plain_executor=bool(get("PLAIN_EXECUTOR", bool, True)),
            log_level=str(get("LOG_LEVEL", str, "INFO")).upper(),
            access_log=bool(get("ACCESS_LOG", bool, True)),
        )
