"""The Starlette app: GraphQL (and GraphiQL) at /graphql, /health, /metrics, and a demo page at /.

Run it with ``hybridrec serve --workers 2`` (graphql_api/server.py: a listening socket per worker),
or with uvicorn itself::

    uvicorn --factory graphql_api.app:create_app
    uvicorn graphql_api.app:app            # the same, settings read when the server starts

The lifespan loads the newest bundle (memory-mapped factors and usearch index), opens the event
log and the Redis client, and starts the background task that hot-reloads new bundles.

Per request: a request id (X-Request-ID in and out, in every log line), API-key checks and the
rate-limit buckets (cost points, per key and per client address: charged once the document is
priced), then the answer cache: a POST whose body (for the same bundle version and added
catalogue) was answered before, and whose users have not changed since, is served from the
cache without running GraphQL at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
from cross_web import HTTPException
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.asgi import GraphQL
from strawberry.types import ExecutionResult

from graphql_api.context import Context
from graphql_api.cost import OPERATION
from graphql_api.engine import serving_threads
from graphql_api.input_limits import MAX_JSON_DEPTH, InputTooLarge, check_json, check_request
from graphql_api.logs import configure_logging, get_logger, request_id_var
from graphql_api.runtime import Runtime
from graphql_api.schema import (
    build_schema,
    cached_cost,
    deadline_error,
    hide_suggestions,
    rate_limited_error,
    typed_parse_error,
    with_rate_state,
)
from graphql_api.settings import Settings
from graphql_api.store import CachedAnswer

log = get_logger("app")
access_log = get_logger("access")
MAX_BODY_BYTES = 1 << 20
JSON_TYPES = ("application/json", "application/graphql-response+json")
"""Content types of a POST that the answer cache may answer (anything else goes to Strawberry,
which accepts or refuses it)."""
STATIC_DIR = Path(__file__).resolve().parent / "static"
"""The demo page (plain HTML and JavaScript that call /graphql with fetch)."""
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def _graphql_error(status: int, message: str, code: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"data": None, "errors": [{"message": message, "extensions": {"code": code}}]},
                        status_code=status, headers=headers)


def _api_key(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-api-key":
            return value.decode("latin-1").strip() or None
        if name == b"authorization":
            text = value.decode("latin-1").strip()
            if text[:7].lower() == "bearer ":
                return text[7:].strip() or None
    return None


async def _read_body(request: Request) -> bytes | None:
    """The body, or None as soon as it is known to exceed MAX_BODY_BYTES (by Content-Length, or
    while it streams in): an oversized body is never held whole. Kept on the request, where
    Starlette's ``body()`` (and so Strawberry) finds it."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # noqa: SLF001 - Starlette's cache of the body, read again by Strawberry
    return body


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise HTTPException(400, f"request body repeats the key {key[:64]!r}")
        out[key] = value
    return out


# -- GraphQL view -------------------------------------------------------------------------------------

class GraphQLView(GraphQL):
    """Strawberry's ASGI view with our context and the answer cache in front of it."""

    def __init__(self, runtime: Runtime, **kwargs: Any) -> None:
        super().__init__(build_schema(runtime.settings.limits, runtime.settings.plain_executor), **kwargs)
        self.runtime = runtime

    async def get_context(self, request: Any, response: Any) -> Context:
        ctx = Context(
            request=request,
            response=response,
            runtime=self.runtime,
            engine=request.scope["state"]["engine"],
            api_key=request.scope["state"].get("api_key"),
            experiment=request.scope["state"].get("experiment"),
        )
        request.scope["state"]["ctx"] = ctx
        return ctx

    def encode_json(self, data: object) -> bytes:
        """An answer as compact UTF-8 JSON (orjson: a tenth of json.dumps's time on an answer with
        explanations)."""
        return orjson.dumps(data)

    def decode_json(self, data: str | bytes) -> object:
        """A request body as JSON: a 400 naming the problem when it is not UTF-8, not an object,
        repeats a key (which `query` would run?); InputTooLarge when its variables nest deeper than
        MAX_JSON_DEPTH or hold a string longer than MAX_STRING_LENGTH."""
        try:
            value = json.loads(data, object_pairs_hook=_unique_keys)
        except UnicodeDecodeError as err:
            raise HTTPException(400, f"request body is not UTF-8 text (byte {err.start})") from err
        except RecursionError as err:
            raise HTTPException(400, f"request body nests deeper than {MAX_JSON_DEPTH} levels") from err
        if not isinstance(value, dict | list):
            raise HTTPException(400, f"request body must be a JSON object, got {type(value).__name__}")
        if isinstance(value, dict) and "query" not in value:
            check_json(value, "variables")  # a GET's variables (or extensions) parameter
            return value
        for request in value if isinstance(value, list) else [value]:
            if isinstance(request, dict):
                check_request(request)
        return value

    # -- query cost: deadline, suggestions, rate limit of cached answers (graphql_api.schema.QueryCost) --
    async def execute_single(self, *args: Any, **kwargs: Any) -> ExecutionResult:
        """One operation, within the deadline (Limits.deadline): past it, a TIMEOUT error. asyncio
        stops awaiting resolvers; CPU-bound work between awaits runs on (the price limit bounds it).
        A document that did not parse (QueryCost never priced it) is charged OPERATION points."""
        limits = self.runtime.settings.limits
        context = kwargs.get("context")
        state = context.request.scope.setdefault("state", {}) if context is not None else {}
        timeout = asyncio.timeout(limits.deadline)
        try:
            async with timeout:
                result = await super().execute_single(*args, **kwargs)
        except TimeoutError:
            if not timeout.expired():
                raise
            self.runtime.metrics.errors.labels(kind="timeout").inc()
            log.warning("request past its deadline of %gs", limits.deadline, extra={"kind": "timeout"})
            return ExecutionResult(data=None, errors=[deadline_error(limits)],
                                   extensions={"cost": state["cost"]} if "cost" in state else None)
        if result.errors and "cost" not in state and state.get("rate_clients"):
            state["rate"] = decision = await self.runtime.store.take_points(state["rate_clients"], OPERATION)
            if not decision.allowed:
                kwargs["sub_response"].status_code = 429
                self.runtime.metrics.errors.labels(kind="rate_limited").inc()
                return ExecutionResult(data=None, errors=[rate_limited_error(decision)])
        return result

    async def process_result(self, request: Any, result: ExecutionResult) -> Any:
        """The answer as JSON, with ``extensions.cost`` (a document that did not parse was priced
        OPERATION points), "more than N tokens" typed as QUERY_TOO_LARGE, and without graphql-core's
        "Did you mean ...?" unless Limits allow them."""
        data = await super().process_result(request, result)
        limits = self.runtime.settings.limits
        errors = data.get("errors")
        if errors:
            data["errors"] = errors = [typed_parse_error(e, limits) for e in errors]
            if not limits.suggestions:
                for error in errors:
                    error["message"] = hide_suggestions(error["message"])
        extensions = data.get("extensions") or {}
        if "cost" not in extensions:
            decision = request.scope.get("state", {}).get("rate")
            data["extensions"] = {**extensions, "cost": {
                "requested": OPERATION, "actual": 0, "limit": limits.max_cost,
                "rateLimit": decision.as_json() if decision is not None else None}}
        return data

    async def charge_cached(self, state: dict[str, Any], hit: CachedAnswer) -> tuple[Response | None, CachedAnswer]:
        """Charge a cached answer the price its document requested (recorded in its
        ``extensions.cost``: a cached answer carries the cost of the original run, requested and
        actual, with this request's rate-limit state put in); the 429 answer when the caller's
        buckets do not hold it."""
        clients = state.get("rate_clients")
        if not clients:
            return None, hit
        state["rate"] = decision = await self.runtime.store.take_points(clients, cached_cost(hit.body))
        if decision.allowed:
            return None, replace(hit, body=with_rate_state(hit.body, decision))
        self.runtime.metrics.errors.labels(kind="rate_limited").inc()
        error = rate_limited_error(decision)
        return JSONResponse({"data": None, "errors": [error.formatted]}, status_code=429), hit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        runtime = self.runtime
        if not runtime.ready:
            await _graphql_error(503, "no model bundle is loaded yet", "NOT_READY")(scope, receive, send)
            return
        engine = runtime.engine
        state["engine"] = engine  # the whole request is answered from this bundle
        catalogue = runtime.catalogue_token  # with these added items (swapped with the engine: no await between)
        experiment = state["experiment"] = runtime.experiment  # and under this split (compiled for it)
        request = Request(scope, receive)
        key = None
        runtime.store.sync_local()
        if request.method == "POST":
            body = await _read_body(request)
            if body is None:
                await _graphql_error(413, f"request body over {MAX_BODY_BYTES} bytes", "TOO_LARGE")(scope, receive, send)
                return
        json_body = request.headers.get("content-type", "").split(";")[0].strip().lower() in JSON_TYPES
        if request.method == "POST" and json_body and runtime.settings.cache_ttl > 0:
            # keyed by who asks too: an answer one key may see (a user's history) is no answer for another
            principal = state.get("api_key")
            who = principal.id.encode() if principal is not None else b"anonymous"
            # and by the experiment's split: an answer (its variant, its exposure id) holds for one split
            split = experiment.token.encode() if experiment is not None else b""
            # and by the added catalogue: an answer holds for the items it could name
            key = hashlib.sha256(engine.version.encode() + b"\0" + catalogue.encode() + b"\0" + split + b"\0"
                                 + who + b"\0" + body).hexdigest()
            hit = await runtime.store.cache_get(key)
            if hit is not None:
                # -- rate limit (query cost): a cached answer is charged what its document requested --
                refused, hit = await self.charge_cached(state, hit)
                if refused is not None:
                    await refused(scope, receive, send)
                    return
                # -- end rate limit --
                runtime.metrics.cache.labels(result="hit").inc()
                for variant in hit.variants:
                    runtime.metrics.variants.labels(variant=variant).inc()
                state["operation"], state["cached"] = hit.operation, True
                response = Response(hit.body, media_type="application/json", headers={"x-cache": "hit"})
                await response(scope, receive, send)
                return
        try:
            response = await self.run(request)
        except HTTPException as err:
            response = Response(err.reason, status_code=err.status_code, media_type="text/plain")
        except InputTooLarge as err:
            response = _graphql_error(400, str(err), "BAD_USER_INPUT")
        ctx: Context | None = state.get("ctx")
        if ctx is not None:
            state["operation"] = ctx.operation
            if key is not None and ctx.cacheable and not ctx.uncacheable and response.status_code == 200:
                runtime.metrics.cache.labels(result="miss").inc()
                if await runtime.store.cache_put(key, ctx.operation, ctx.tags, bytes(response.body), ctx.variants):
                    response.headers["x-cache"] = "miss"
        await response(scope, receive, send)


# -- middleware (pure ASGI: cheap per request) ---------------------------------------------------------

class RequestMiddleware:
    """Request id, access log and latency metrics."""

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = None
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                rid = value.decode("latin-1")
                break
        if rid is None or not _REQUEST_ID.match(rid):
            rid = uuid.uuid4().hex
        token = request_id_var.set(rid)
        state = scope.setdefault("state", {})
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            path = scope.get("path", "")
            if path.startswith("/graphql") and scope.get("method") == "POST":
                self.runtime.metrics.latency.labels(
                    operation=state.get("operation", "unknown"), cached=str(bool(state.get("cached", False))).lower()
                ).observe(elapsed)
            if self.runtime.settings.access_log:
                access_log.info(
                    "%s %s %d", scope.get("method"), path, status,
                    extra={"status": status, "ms": round(elapsed * 1000, 3), "operation": state.get("operation"),
                           "cached": bool(state.get("cached", False))},
                )
            request_id_var.reset(token)


class GuardMiddleware:
    """API keys (for every operation when configured so) and per-key rate limits on /graphql."""

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope.get("path", "").startswith("/graphql"):
            await self.app(scope, receive, send)
            return
        settings = self.runtime.settings
        key = _api_key(scope)
        principal = settings.key(key)
        valid = principal is not None
        scope.setdefault("state", {})["api_key"] = principal
        if settings.require_key_for_queries and settings.keys_configured and not valid:
            self.runtime.metrics.errors.labels(kind="unauthorized").inc()
            response = _graphql_error(401, "an API key is required (header X-API-Key or Authorization: Bearer <key>)",
                                      "UNAUTHENTICATED", headers={"www-authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        if settings.rate_limit > 0:
            # the buckets a request draws on: its key's and its address's, both must hold its price;
            # charged once the price is known (graphql_api.schema.QueryCost, or a cached answer's)
            state = scope["state"]
            address = f"ip:{(scope.get('client') or ('?', 0))[0]}"
            state["rate_clients"] = (f"key:{principal.id}", address) if principal is not None else (address,)

            async def send_with_rate(message: Message) -> None:
                decision = state.get("rate")
                if message["type"] == "http.response.start" and decision is not None:
                    message["headers"] = [*message.get("headers", ()),
                                          *((k.encode(), v.encode()) for k, v in decision.headers().items())]
                await send(message)

            await self.app(scope, receive, send_with_rate)
            return
        await self.app(scope, receive, send)


# -- plain endpoints ------------------------------------------------------------------------------------

def _health(runtime: Runtime):  # noqa: ANN202 - a Starlette endpoint
    async def health(request: Request) -> JSONResponse:
        redis = await runtime.store.ping()
        ready = runtime.ready
        body: dict[str, Any] = {
            "status": "ok" if ready and redis != "down" else ("degraded" if ready else "unavailable"),
            "live": True,
            "ready": ready,
            "bundle": None,
            "redis": redis,
            "events": "local log" if runtime.settings.events_dir else "redis",
            "uptime_s": round(time.time() - runtime.started_at, 3),
        }
        if not runtime.settings.keys_configured:
            body["dev_mode"] = True
            body["warning"] = "development mode: no API keys, every operation is open to anyone"
        if ready:  # no paths: /health is public, and a folder layout helps nobody but an attacker
            engine = runtime.engine
            body["bundle"] = {"version": engine.version, "created_at": engine.created_at.isoformat(),
                              "signals": list(engine.signals)}
        if runtime.added:
            body["catalogue"] = {"added_items": len(runtime.added), "token": runtime.catalogue_token}
        if runtime.last_items_error:
            body["last_items_error"] = runtime.last_items_error
        if runtime.experiment is not None:
            body["experiment"] = runtime.experiment.token
        if runtime.last_experiment_error:
            body["last_experiment_error"] = runtime.last_experiment_error.replace(
                str(runtime.settings.bundle_root).rstrip("/"), "<bundle root>")
        if runtime.last_reload_error:
            root = str(runtime.settings.bundle_root).rstrip("/")
            body["last_reload_error"] = runtime.last_reload_error.replace(root, "<bundle root>")
        mode = request.path_params.get("mode")
        if mode == "live":
            return JSONResponse({"live": True})
        return JSONResponse(body, status_code=200 if ready else 503)

    return health


def _metrics(runtime: Runtime):  # noqa: ANN202
    async def metrics(request: Request) -> Response:
        await runtime.store.ping()
        data, content_type = runtime.metrics.render()
        return Response(data, media_type=content_type)

    return metrics


async def _demo_page(request: Request) -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", headers={"cache-control": "no-cache"})


# -- the app --------------------------------------------------------------------------------------------

def create_app(settings: Settings | None = None) -> Starlette:
    """The ASGI app; settings default to the environment (loud when something required is missing)."""
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level)
    # BLAS on one thread from here, the main thread, before any request or bundle load runs BLAS:
    # Engine.load, in a worker thread, then sets what is already set instead of resizing OpenBLAS's
    # process-wide pool under a request's BLAS call.
    serving_threads()
    runtime = Runtime(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    view = GraphQLView(runtime, graphql_ide="graphiql" if settings.graphiql else None)
    middleware = [Middleware(RequestMiddleware, runtime=runtime)]
    if settings.cors_origins:
        middleware.append(Middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["content-type", "authorization", "x-api-key", "x-request-id"],
            expose_headers=["x-request-id", "x-cache", "retry-after"],
            allow_credentials=settings.cors_allow_credentials,
        ))
    middleware.append(Middleware(GuardMiddleware, runtime=runtime))
    health = _health(runtime)
    app = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/health/{mode:str}", health, methods=["GET"]),
            Route("/metrics", _metrics(runtime), methods=["GET"]),
            Route("/graphql", view),
            Route("/", _demo_page, methods=["GET"]),
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        ],
        middleware=middleware,
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    return app


class _LazyApp:
    """``graphql_api.app:app`` for uvicorn: built from the environment when the server starts."""

    def __init__(self) -> None:
        self._app: Starlette | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            self._app = create_app()
        await self._app(scope, receive, send)


app = _LazyApp()
