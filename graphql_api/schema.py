"""The GraphQL schema (code first): ``graphql_api.schema:schema``.

``build_schema(limits)`` gives a schema with the document limits of a deployment (tokens, depth,
aliases, introspection), each distinct document parsed and validated once per process and
executed by ``graphql_api.execution.PlainFieldExecutor``; ``schema`` is the one with default limits
(what ``strawberry export-schema graphql_api.schema:schema`` prints; limits do not change the SDL).

Errors: an ``ApiError`` (bad input, forbidden, ...) and GraphQL's own parse/validation errors reach
the client with their message; any other exception is masked as "Unexpected error." (MaskErrors)
and logged with its traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import lru_cache, partial
from typing import Any

import strawberry
from graphql import FieldNode, GraphQLError, OperationDefinitionNode
from graphql import parse as parse_document
from strawberry.extensions import (
    AddValidationRules,
    DisableIntrospection,
    MaskErrors,
    MaxAliasesLimiter,
    QueryDepthLimiter,
    SchemaExtension,
)
from strawberry.types import ExecutionContext

from graphql_api.errors import ApiError
from graphql_api.execution import PlainFieldExecutor
from graphql_api.input_limits import LongStringRule
from graphql_api.logs import get_logger
from graphql_api.resolvers.mutation import Mutation
from graphql_api.resolvers.query import Query
from graphql_api.settings import Limits

log = get_logger("graphql")
MASKED_MESSAGE = "Unexpected error."
MAX_CACHED_QUERY_LENGTH = 8192
"""Longest document kept in the parse and validation caches (apps send a few short documents)."""


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

    One extension for what MaxTokensLimiter, ParserCache, QueryDepthLimiter, MaxAliasesLimiter,
    DisableIntrospection and ValidationCache do one extension each: the same token limit (passed
    to the parser), the same rules (built once: those limiters create their rule classes in
    __init__, and a fresh class per request would never hit the validation cache), the same LRU
    caches, at the cost of one extension per request instead of six.
    """

    def __init__(self, parse: Callable[[str], Any], validate: Callable[..., Any],
                 rules: tuple[type[Any], ...]) -> None:
        self._parse = parse
        self._validate = validate
        self._rules = rules

    def _cached(self) -> bool:
        """Only short documents enter the caches: a distinct long one per request (a hostile client
        pads each with whitespace) would otherwise pin its text and its AST, ~1,000 times over."""
        return len(self.execution_context.query or "") <= MAX_CACHED_QUERY_LENGTH

    def on_operation(self) -> Iterator[None]:
        self.execution_context.validation_rules = self.execution_context.validation_rules + self._rules
        yield

    def on_parse(self) -> Iterator[None]:
        ec = self.execution_context
        parse = self._parse if self._cached() else self._parse.__wrapped__  # type: ignore[attr-defined]
        ec.graphql_document = parse(ec.query)
        yield

    def on_validate(self) -> Iterator[None]:
        ec = self.execution_context
        validate = self._validate if self._cached() else self._validate.__wrapped__  # type: ignore[attr-defined]
        ec.pre_execution_errors = validate(ec.schema._schema, ec.graphql_document, ec.validation_rules)
        yield


def _document_cache(limits: Limits, maxsize: int = 512) -> Callable[[], SchemaExtension]:
    """A factory of per-request CachedDocument extensions sharing one parse and one validation cache."""
    from strawberry.schema.schema import validate_document

    parse = lru_cache(maxsize=maxsize)(partial(parse_document, max_tokens=limits.max_tokens))
    validate = lru_cache(maxsize=maxsize)(validate_document)
    limiters: list[AddValidationRules] = [QueryDepthLimiter(max_depth=limits.max_depth),
                                          MaxAliasesLimiter(max_alias_count=limits.max_aliases)]
    if not limits.introspection:
        limiters.append(DisableIntrospection())
    rules = (*(rule for limiter in limiters for rule in limiter.validation_rules), LongStringRule)
    return lambda: CachedDocument(parse, validate, rules)


def build_schema(limits: Limits | None = None) -> HybridSchema:
    limits = limits or Limits()
    extensions: list[Any] = [
        lambda: MaskErrors(should_mask_error=is_unexpected, error_message=MASKED_MESSAGE),
        _document_cache(limits),
        OperationTracker,
    ]
    return HybridSchema(query=Query, mutation=Mutation, extensions=extensions,
                        execution_context_class=PlainFieldExecutor)


schema = build_schema()
