"""The GraphQL schema (code first): ``graphql_api.schema:schema``.

``build_schema(limits)`` gives a schema with the document limits of a deployment (tokens, then
depth, aliases, directives and price: ``QueryCost`` with graphql_api.cost, before validation;
introspection), each distinct document parsed, priced and validated once per process and
executed by ``graphql_api.execution.PlainFieldExecutor``; ``schema`` is the one with default limits
(what ``strawberry export-schema graphql_api.schema:schema`` prints; limits do not change the SDL).

Errors: an ``ApiError`` (bad input, forbidden, ...) and GraphQL's own parse/validation errors reach
the client with their message; any other exception is masked as "Unexpected error." (MaskErrors)
and logged with its traceback.
"""

from __future__ import annotations

import math
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson
import strawberry
from graphql import FieldNode, GraphQLError, OperationDefinitionNode
from graphql import parse as parse_document
from strawberry.extensions import (
    AddValidationRules,
    DisableIntrospection,
    MaskErrors,
    SchemaExtension,
)
from strawberry.types import ExecutionContext

from graphql_api.cost import OPERATION, DocumentCost
from graphql_api.errors import ApiError
from graphql_api.execution import PlainFieldExecutor
from graphql_api.input_limits import LongStringRule
from graphql_api.logs import get_logger
from graphql_api.resolvers.mutation import Mutation
from graphql_api.resolvers.query import Query
from graphql_api.settings import Limits

if TYPE_CHECKING:
    from graphql_api.store import RateDecision

log = get_logger("graphql")
MASKED_MESSAGE = "Unexpected error."
AST_BYTES_PER_CHAR = 100
"""Memory a parsed document takes per character of its text (nodes, locations and the token chain
they keep: a 5 KB document with many tokens parses to ~400 KB), for the document cache's budget."""
DOCUMENT_CACHE_BYTES = 16 << 20
"""What the parsed, validated and priced documents of a process may hold (estimated as above)."""
MAX_CACHED_QUERY_LENGTH = DOCUMENT_CACHE_BYTES // AST_BYTES_PER_CHAR // 32
"""Longest document cached (5,242 characters): apps send a few short documents; a distinct long one
per request, from a hostile client, would otherwise take the cache over."""


class CachedEntry:
    """One distinct document: its parsed tree, its validation errors, its price per operation."""

    __slots__ = ("costs", "document", "errors")

    def __init__(self, document: Any) -> None:
        self.document = document
        self.errors: list[GraphQLError] | None = None
        self.costs: dict[str | None, DocumentCost] = {}


class DocumentCache:
    """Documents by their text, least recently used out first, within DOCUMENT_CACHE_BYTES (one
    cache for parsing, validation and pricing, so what it holds is bounded once)."""

    def __init__(self, budget: int = DOCUMENT_CACHE_BYTES) -> None:
        self.budget = budget
        self.bytes = 0
        self._entries: OrderedDict[str, CachedEntry] = OrderedDict()

    def get(self, query: str) -> CachedEntry | None:
        entry = self._entries.get(query)
        if entry is not None:
            self._entries.move_to_end(query)
        return entry

    def add(self, query: str, document: Any) -> CachedEntry:
        """An entry for a freshly parsed document, kept when it is short enough."""
        entry = CachedEntry(document)
        if len(query) <= MAX_CACHED_QUERY_LENGTH:
            self._entries[query] = entry
            self.bytes += len(query) * AST_BYTES_PER_CHAR
            while self.bytes > self.budget:
                old, _ = self._entries.popitem(last=False)
                self.bytes -= len(old) * AST_BYTES_PER_CHAR
        return entry


def is_unexpected(error: GraphQLError) -> bool:
    """True for errors to mask: exceptions that are neither ApiError nor GraphQL's own."""
    original = error.original_error
    return original is not None and not isinstance(original, (ApiError, GraphQLError))


def _error_kind(error: GraphQLError) -> str:
    original = error.original_error
    if is_unexpected(error):
        return "internal"
    if isinstance(original, ApiError):
        return original.code.lower()
    code = (error.extensions or {}).get("code")
    return str(code).lower() if code else "invalid_query"


class HybridSchema(strawberry.Schema):
    """A Strawberry schema that logs errors as JSON and counts them by kind."""

    def process_errors(self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None) -> None:
        for error in errors:
            kind = _error_kind(error)
            context = getattr(execution_context, "context", None)
            metrics = getattr(getattr(context, "runtime", None), "metrics", None)
            if metrics is not None:
                metrics.errors.labels(kind=kind).inc()
            if kind == "internal":
                original = error.original_error
                log.error(
                    "unexpected error while resolving %s",
                    ".".join(str(p) for p in error.path or ()) or "(operation)",
                    exc_info=(type(original), original, original.__traceback__) if original else None,
                    extra={"kind": kind},
                )
            else:
                log.info("request error: %s", error.message, extra={"kind": kind})


class OperationTracker(SchemaExtension):
    """Names the operation (its root fields) for metrics and says whether its answer may be cached."""

    def on_execute(self) -> Iterator[None]:
        ctx = self.execution_context.context
        doc = self.execution_context.graphql_document
        if ctx is not None and doc is not None and hasattr(ctx, "operation"):
            ctx.operation_type = self.execution_context.operation_type.value
            ctx.operation = _root_fields(doc, self.execution_context.operation_name)
        yield

    def on_operation(self) -> Iterator[None]:
        yield
        ctx = self.execution_context.context
        result = self.execution_context.result
        if ctx is not None and hasattr(ctx, "cacheable"):
            ctx.cacheable = (
                ctx.operation_type == "query"
                and result is not None
                and not getattr(result, "errors", None)
                and getattr(result, "data", None) is not None
            )


def _root_fields(doc: Any, operation_name: str | None) -> str:
    ops = [d for d in doc.definitions if isinstance(d, OperationDefinitionNode)]
    op = next((o for o in ops if o.name and o.name.value == operation_name), ops[0] if ops else None)
    if op is None:
        return "unknown"
    names = sorted({s.name.value for s in op.selection_set.selections if isinstance(s, FieldNode)})
    return ",".join(names) or "fragment"


class CachedDocument(SchemaExtension):
    """Parse and validate each distinct document once per process, under the deployment's limits.

    One extension for what MaxTokensLimiter, ParserCache, DisableIntrospection and ValidationCache
    do one extension each: the same token limit (passed to the parser), the same rules (built once),
    one cache of documents within a byte budget (DocumentCache, shared with QueryCost's prices), at
    the cost of one extension per request instead of four.
    """

    def __init__(self, cache: DocumentCache, parse: Callable[[str], Any], rules: tuple[type[Any], ...]) -> None:
        self._cache = cache
        self._parse = parse
        self._rules = rules
        self._entry: CachedEntry | None = None

    def on_operation(self) -> Iterator[None]:
        self.execution_context.validation_rules = self.execution_context.validation_rules + self._rules
        yield

    def on_parse(self) -> Iterator[None]:
        ec = self.execution_context
        entry = self._cache.get(ec.query)
        if entry is None:
            entry = self._cache.add(ec.query, self._parse(ec.query))
        self._entry = entry
        ec.graphql_document = entry.document
        yield

    def on_validate(self) -> Iterator[None]:
        from strawberry.schema.schema import validate_document

        ec = self.execution_context
        entry = self._entry
        if entry is None or entry.document is not ec.graphql_document:
            ec.pre_execution_errors = validate_document(ec.schema._schema, ec.graphql_document, ec.validation_rules)
        else:
            if entry.errors is None:
                entry.errors = validate_document(ec.schema._schema, ec.graphql_document, ec.validation_rules)
            ec.pre_execution_errors = entry.errors
        yield


# -- query cost: priced before validation, charged to the rate limit, reported ---------------------------

_SUGGESTION = re.compile(r"\s*Did you mean [^?]*\?")
_TOKENS = re.compile(r"^Syntax Error: Document contains more than (\d+) tokens")


def hide_suggestions(message: str) -> str:
    """``message`` without graphql-core's "Did you mean ...?" (they name fields and types)."""
    return _SUGGESTION.sub("", message)


def typed_parse_error(error: dict[str, Any], limits: Limits) -> dict[str, Any]:
    """graphql-core's "more than N tokens" syntax error (a formatted error) as QUERY_TOO_LARGE."""
    if not _TOKENS.match(error.get("message", "")):
        return error
    return {**error, "message": f"the document has more than {limits.max_tokens} tokens; the limit is "
                                f"{limits.max_tokens} (max_tokens)",
            "extensions": {"code": "QUERY_TOO_LARGE", "limit": "max_tokens", "max": limits.max_tokens}}


def limit_error(code: str, message: str, limit: str, maximum: float, value: float | None = None) -> GraphQLError:
    """A refusal naming the limit (a ``Limits`` field), its value and the document's."""
    extensions: dict[str, Any] = {"code": code, "limit": limit, "max": maximum}
    if value is not None:
        extensions["value"] = value
    return GraphQLError(message, extensions=extensions)


def deadline_error(limits: Limits) -> GraphQLError:
    return limit_error("TIMEOUT", f"the request ran past its deadline of {limits.deadline:g} s", "deadline",
                       limits.deadline)


def cached_cost(body: bytes) -> int:
    """The requested price recorded in a cached answer (``extensions.cost`` is its last member);
    OPERATION when it holds none."""
    at = body.rfind(b'"cost":{"requested":')
    if at < 0:
        return OPERATION
    digits = body[at + 20: at + 40].split(b",", 1)[0].split(b"}", 1)[0]
    return int(digits) if digits.isdigit() else OPERATION


def with_rate_state(body: bytes, decision: RateDecision) -> bytes:
    """A cached answer with this request's rate-limit state in ``extensions.cost.rateLimit`` (its
    last member; requested and actual stay the original run's): no stale, and no other client's,
    budget in it."""
    at = body.rfind(b'"rateLimit":')
    if at < 0:
        return body
    start = at + len(b'"rateLimit":')
    if body.startswith(b"null", start):
        end = start + 4
    elif body.startswith(b"{", start):
        end = body.find(b"}", start) + 1
    else:
        return body
    return body[:start] + orjson.dumps(decision.as_json()) + body[end:]


class QueryCost(SchemaExtension):
    """Price a document (graphql_api.cost) after parsing and before validation; refuse it over a
    limit of ``Limits`` (nothing else runs), charge its price to the caller's rate-limit buckets
    (429 when they do not hold it), stop a request whose validation overran its deadline before
    execution, and report ``extensions.cost`` (requested, actual, limit, rate-limit state).

    Each distinct document is analysed once (``analyse`` is cached); its price is re-evaluated only
    when variables size a list. It runs before CachedDocument, so a refused document is never
    validated. One hook (extension hooks cost some 5 µs each); a document that does not parse is
    charged by the view (graphql_api.app), which never reaches this hook."""

    def __init__(self, limits: Limits, analyse: Callable[[str, str | None, Any, Any], DocumentCost]) -> None:
        self.limits = limits
        self._analyse = analyse
        self.cost: DocumentCost | None = None
        self.requested = 0
        self.rate: RateDecision | None = None

    def _state(self) -> dict[str, Any] | None:
        request = getattr(self.execution_context.context, "request", None)
        return request.scope.setdefault("state", {}) if request is not None else None

    async def on_validate(self) -> AsyncIterator[None]:
        ec = self.execution_context
        started = time.monotonic()
        if ec.graphql_document is not None and ec.query is not None:
            self.cost = cost = self._analyse(ec.query, ec.operation_name, ec.graphql_document, ec.schema._schema)
            self.requested = cost.requested(ec.variables)
            refusal = self._refusal(cost)
            # a refused document cost its parsing and analysis: its own field nodes, written once
            await self._charge(cost.parsed if refusal is not None else self.requested)
            self.report()  # for an answer that never reaches get_results (past the deadline)
            if refusal is not None:
                cost.forget_plan(self.requested)  # refused again if sent again: only the verdict is kept
                raise refusal
        yield
        # validation (CachedDocument, inside this hook) is CPU-bound and cannot be interrupted;
        # past the deadline, at least nothing is executed
        if not ec.pre_execution_errors and time.monotonic() - started > self.limits.deadline:
            raise deadline_error(self.limits)

    def _refusal(self, cost: DocumentCost) -> GraphQLError | None:
        limits = self.limits
        if cost.cycle is not None:
            return GraphQLError(f"fragment {cost.cycle!r} spreads itself", extensions={"code": "FRAGMENT_CYCLE"})
        if cost.depth > limits.max_depth:
            return limit_error("QUERY_TOO_DEEP", f"the query is {cost.depth} fields deep; the limit is "
                               f"{limits.max_depth} (max_depth)", "max_depth", limits.max_depth, cost.depth)
        if cost.aliases > limits.max_aliases:
            return limit_error("TOO_MANY_ALIASES", f"the query has {cost.aliases} aliases; the limit is "
                               f"{limits.max_aliases} (max_aliases)", "max_aliases", limits.max_aliases, cost.aliases)
        if cost.directives > limits.max_directives:
            return limit_error("TOO_MANY_DIRECTIVES", f"the query has {cost.directives} directives; the limit is "
                               f"{limits.max_directives} (max_directives)", "max_directives", limits.max_directives,
                               cost.directives)
        if self.requested > limits.max_cost:
            return limit_error("QUERY_TOO_COMPLEX", f"the query costs {self.requested} points; the limit is "
                               f"{limits.max_cost} (max_cost)", "max_cost", limits.max_cost, self.requested)
        return None

    async def _charge(self, points: int) -> None:
        """Take ``points`` from the buckets GuardMiddleware named (none: rate limits are off);
        raises RATE_LIMITED, answered with 429 and Retry-After, when they do not hold them."""
        state = self._state()
        clients = state.get("rate_clients") if state is not None else None
        if not clients:
            return
        ctx = self.execution_context.context
        runtime = ctx.runtime
        self.rate = decision = await runtime.store.take_points(clients, points)
        state["rate"] = decision  # type: ignore[index]  # GuardMiddleware adds its X-RateLimit-* headers
        if not decision.allowed:
            ctx.response.status_code = 429
            raise rate_limited_error(decision)

    def report(self) -> dict[str, Any]:
        result = self.execution_context.result
        actual = 0
        if self.cost is not None and result is not None and getattr(result, "data", None) is not None:
            actual = self.cost.actual(result.data, self.execution_context.variables)
        out = {"requested": self.requested, "actual": actual, "limit": self.limits.max_cost,
               "rateLimit": self.rate.as_json() if self.rate is not None else None}
        state = self._state()
        if state is not None:
            state["cost"] = out
        return out

    def get_results(self) -> dict[str, Any]:
        # a document that did not parse was never priced: the view charges and reports it
        return {"cost": self.report()} if self.cost is not None else {}


def rate_limited_error(decision: RateDecision) -> GraphQLError:
    retry = max(1, math.ceil(decision.retry_after))
    return GraphQLError(
        f"rate limit exceeded: this request costs {decision.cost} points and {int(decision.remaining)} are left "
        f"(a bucket holds {decision.limit}, {decision.rate:g} come back per second); retry in {retry} s",
        extensions={"code": "RATE_LIMITED", "cost": decision.cost, "remaining": int(decision.remaining),
                    "retryAfter": retry})


def _query_cost(limits: Limits, cache: DocumentCache) -> Callable[[], SchemaExtension]:
    """A factory of per-request QueryCost extensions; prices live with their documents in ``cache``."""

    def analyse(query: str, operation_name: str | None, document: Any, graphql_schema: Any) -> DocumentCost:
        entry = cache.get(query)
        found = entry.costs.get(operation_name) if entry is not None and entry.document is document else None
        if found is None:
            found = DocumentCost(document, graphql_schema, operation_name)
            if entry is not None and entry.document is document:
                entry.costs[operation_name] = found
        return found

    return lambda: QueryCost(limits, analyse)


def _document_cache(limits: Limits, cache: DocumentCache) -> Callable[[], SchemaExtension]:
    """A factory of per-request CachedDocument extensions sharing ``cache``."""
    parse = partial(parse_document, max_tokens=limits.max_tokens)
    limiters: list[AddValidationRules] = []  # depth, aliases, directives and price: QueryCost, before validation
    if not limits.introspection:
        limiters.append(DisableIntrospection())
    rules = (*(rule for limiter in limiters for rule in limiter.validation_rules), LongStringRule)
    return lambda: CachedDocument(cache, parse, rules)


def build_schema(limits: Limits | None = None, plain_executor: bool = True) -> HybridSchema:
    """The schema with a deployment's limits; ``plain_executor`` False executes every field through
    graphql-core's own path (Strawberry's default) instead of ``PlainFieldExecutor``."""
    limits = limits or Limits()
    documents = DocumentCache()
    extensions: list[Any] = [
        lambda: MaskErrors(should_mask_error=is_unexpected, error_message=MASKED_MESSAGE),
        _query_cost(limits, documents),  # before CachedDocument's validation: a refused document is never validated
        _document_cache(limits, documents),
        OperationTracker,
    ]
    return HybridSchema(query=Query, mutation=Mutation, extensions=extensions,
                        execution_context_class=PlainFieldExecutor if plain_executor else None)


schema = build_schema()
