"""Limits on what a request may carry besides its document's shape (graphql_api.cost has that):
the length of every string a client sends and the nesting of its JSON.

Every argument of this API is an id, a name or a title; a long one is only ever memory an attacker
wants held, cached and echoed back. Strings in variables are checked when the body is decoded
(graphql_api.app), string literals in the document by ``LongStringRule`` during validation.
"""

from __future__ import annotations

from typing import Any

from graphql import GraphQLError, StringValueNode
from graphql.validation import ValidationRule

MAX_STRING_LENGTH = 256
"""Longest string argument (ids, variant and signal names, titles, genres), in characters."""
MAX_JSON_DEPTH = 32
"""Deepest nesting of objects and lists in a request's variables and extensions."""
MAX_QUERY_LENGTH = 32_768
"""Longest GraphQL document, in characters (the token limit bounds the parse; this bounds what
the lexer must skip: whitespace and comments cost as much to read as tokens)."""


class InputTooLarge(ValueError):
    """A request's JSON holds a string or a nesting over the limits (answered as BAD_USER_INPUT)."""


def check_json(value: Any, part: str) -> None:
    """InputTooLarge, naming where, when ``value`` nests deeper than MAX_JSON_DEPTH or holds a
    string longer than MAX_STRING_LENGTH. Iterative: no recursion to exhaust."""
    todo: list[tuple[Any, int, tuple[Any, ...]]] = [(value, 0, ())]
    while todo:
        v, depth, path = todo.pop()
        if isinstance(v, str):
            if len(v) > MAX_STRING_LENGTH:
                where = part + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
                raise InputTooLarge(f"{where[:200]} is {len(v)} characters; at most {MAX_STRING_LENGTH}")
        elif isinstance(v, dict | list):
            if depth >= MAX_JSON_DEPTH:
                raise InputTooLarge(f"{part} nest deeper than {MAX_JSON_DEPTH} levels")
            items = v.items() if isinstance(v, dict) else enumerate(v)
            todo.extend((c, depth + 1, (*path, k)) for k, c in items)


def check_request(request: dict[str, Any]) -> None:
    """The limits of one GraphQL request object ({query, variables, operationName, extensions})."""
    query = request.get("query")
    if isinstance(query, str) and len(query) > MAX_QUERY_LENGTH:
        raise InputTooLarge(f"query is {len(query)} characters; at most {MAX_QUERY_LENGTH}")
    for part in ("variables", "extensions", "operationName"):
        check_json(request.get(part), part)


class LongStringRule(ValidationRule):
    """A string literal in the document longer than MAX_STRING_LENGTH is a BAD_USER_INPUT error."""

    def enter_string_value(self, node: StringValueNode, *_args: Any) -> None:
        if len(node.value) > MAX_STRING_LENGTH and not node.block:
            self.report_error(GraphQLError(
                f"a string argument is {len(node.value)} characters; at most {MAX_STRING_LENGTH}",
                node, extensions={"code": "BAD_USER_INPUT"}))
