"""Strawberry's executor with a shortcut for plain leaf fields.

graphql-core executes every field the same way: it builds a resolve info, calls the resolver
(Strawberry's for a plain field is ``getattr``), then walks the type to complete the value. For a
leaf of an answer (``score``, ``id``, ``title``, ``genres``, ...) that is most of the work of
building a response: an answer with explanations has some 280 fields, 200 of them such leaves.

``PlainFieldExecutor`` reads a *plain leaf field* off its source and coerces it directly. A plain
leaf field has no resolver, no arguments and no field extensions (Strawberry's "basic field",
resolved with ``getattr``), and its type is a scalar or an enum, or a list of them, nullable or
not. Anything out of the ordinary takes graphql-core's full path, which then gives the answer or
the error it always gave: a null where the type forbids one, an item that does not coerce, a
value that is not a list, an exception while reading, resolver middleware (a schema extension
with a ``resolve`` hook), arguments on the field node.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from graphql import (
    GraphQLField,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    Undefined,
    is_leaf_type,
)
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.schema.schema_converter import GraphQLCoreConverter

__all__ = ["PlainFieldExecutor", "plain_leaf"]


@dataclass(frozen=True, slots=True)
class PlainLeaf:
    """How to read and coerce one plain leaf field."""

    attr: str
    """The Python attribute the field reads."""
    coerce: Callable[[Any], Any]
    """The leaf type's ``coerce_output_value``."""
    non_null: bool
    is_list: bool
    item_non_null: bool


_PLANS: weakref.WeakKeyDictionary[GraphQLSchema, dict[tuple[str, str], PlainLeaf | None]] = (
    weakref.WeakKeyDictionary()
)


def plain_leaf(field_def: GraphQLField) -> PlainLeaf | None:
    """The plan for a plain leaf field; None for any other field."""
    if not getattr(field_def.resolve, "_is_default", False) or field_def.args:
        return None
    definition = (field_def.extensions or {}).get(GraphQLCoreConverter.DEFINITION_BACKREF)
    if definition is None or not definition.is_basic_field or definition.default_resolver is not getattr:
        return None
    t = field_def.type
    non_null = isinstance(t, GraphQLNonNull)
    if non_null:
        t = t.of_type
    is_list = isinstance(t, GraphQLList)
    item_non_null = False
    if is_list:
        t = t.of_type
        item_non_null = isinstance(t, GraphQLNonNull)
        if item_non_null:
            t = t.of_type
    if not is_leaf_type(t):
        return None
    return PlainLeaf(definition.python_name, t.coerce_output_value, non_null, is_list, item_non_null)


class _Fallback(Exception):
    """The value needs graphql-core's full path."""


class PlainFieldExecutor(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's executor, with plain leaf fields read and coerced directly (see the module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        plans = _PLANS.get(self.schema)
        self._plain = plans if plans is not None else _PLANS.setdefault(self.schema, {})

    def execute_field(
        self,
        parent_type: GraphQLObjectType,
        source: Any,
        field_details_list: Any,
        path: Any,
        position_context: Any,
    ) -> Any:
        node = field_details_list[0].node
        manager = self.middleware_manager
        if not node.arguments and (manager is None or not manager.middlewares):
            plans = self._plain
            key = (parent_type.name, node.name.value)
            plan = plans.get(key, Undefined)
            if plan is Undefined:
                field_def = self.schema.get_field(parent_type, node.name.value)
                plan = plans[key] = plain_leaf(field_def) if field_def is not None else None
            if plan is not None:
                try:
                    value = getattr(source, plan.attr)
                    if not self.is_awaitable(value):
                        return _complete(plan, value)
                except Exception:  # noqa: BLE001 - the full path raises it again, as a located error
                    pass
        return super().execute_field(parent_type, source, field_details_list, path, position_context)


def _complete(plan: PlainLeaf, value: Any) -> Any:
    if value is None:
        if plan.non_null:
            raise _Fallback
        return None
    if not plan.is_list:
        return _coerce(plan, value)
    if not isinstance(value, list | tuple):
        raise _Fallback
    out = []
    for item in value:
        if item is None:
            if plan.item_non_null:
                raise _Fallback
            out.append(None)
        else:
            out.append(_coerce(plan, item))
    return out


def _coerce(plan: PlainLeaf, value: Any) -> Any:
    if isinstance(value, Exception):
        raise _Fallback
    coerced = plan.coerce(value)
    if coerced is None or coerced is Undefined:
        raise _Fallback
    return coerced
