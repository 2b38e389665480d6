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

A *plain object field* (the same kind of field whose type is an object type, or a non-null list of
non-null objects: ``item``, ``items``, ``contributions``, ``drivers``) is read the same way and its
objects' fields executed directly, without the resolve info and the value-completion walk
graphql-core builds for it. Anything it cannot answer as graphql-core would (a null or awaitable
value or item, a value that is not a list, ``@defer`` below it, an ``is_type_of`` check) is
decided before any sub-field runs and takes the full path; errors raised below it are handled at
the list item and at the field, as graphql-core handles them.

An object whose selected fields are all plain, down to its leaves (a *plain tree*: an
explanation's ``contributions { signal value }`` and ``drivers { similarity item { id title } }``),
is answered in one walk that reads and coerces its values, without a path or a field execution
per field. Its fields are attribute reads only, so when anything in it is out of the ordinary the
walk is dropped and the object is executed again the usual way, which gives graphql-core's answer
and errors.

Why it stays (issue 23's rule: a custom executor only where a paired run shows it pays):
``python bench/api_load.py --bundle-root ROOT --compare-executor`` serves one bundle twice, cache
off, with this executor and with graphql-core's own path (HYBRIDREC_PLAIN_EXECUTOR=false), and
interleaves their runs. On ml-latest-small's six-signal bundle, 2-core AMD EPYC, 16 connections,
2 x 5 s per side at load 5.3-7.2 (2026-12-05): explained recommendations 3.68 against 5.71 ms of
server CPU per request (0.645x; 93 against 61 req/s); the canonical query without explanations
1.89 against 2.04 ms (0.92x). HYBRIDREC_PLAIN_EXECUTOR=false is also the fallback should a
Strawberry or graphql-core release break the private names this module reads.
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
from graphql.pyutils import gather_with_cancel
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.schema.schema_converter import GraphQLCoreConverter

__all__ = ["PlainFieldExecutor", "plain_leaf", "plain_objects"]


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


@dataclass(frozen=True, slots=True)
class PlainObjects:
    """How to read one plain object field: an object, or a non-null list of non-null objects."""

    attr: str
    type: GraphQLObjectType
    non_null: bool
    is_list: bool
    field_type: Any
    """The field's GraphQL type (its errors are handled by it)."""
    item_type: Any
    """A list's item type; None for a single object."""


Plan = PlainLeaf | PlainObjects
Tree = tuple[tuple[str, Plan, "Tree | None"], ...]
"""A plain tree: per response name, the field's plan and, for an object field, its objects' tree."""
_PLANS: weakref.WeakKeyDictionary[GraphQLSchema, dict[tuple[str, str], Plan | None]] = weakref.WeakKeyDictionary()


def _basic_attr(field_def: GraphQLField) -> str | None:
    """The attribute a field reads when it is a plain (Strawberry "basic", getattr) field."""
    if not getattr(field_def.resolve, "_is_default", False) or field_def.args:
        return None
    definition = (field_def.extensions or {}).get(GraphQLCoreConverter.DEFINITION_BACKREF)
    if definition is None or not definition.is_basic_field or definition.default_resolver is not getattr:
        return None
    return definition.python_name


def _unwrap(t: Any) -> tuple[Any, bool, Any, bool]:
    """A field type as (named type, non-null, list item type or None, item non-null)."""
    non_null = isinstance(t, GraphQLNonNull)
    if non_null:
        t = t.of_type
    if not isinstance(t, GraphQLList):
        return t, non_null, None, False
    item_type = t.of_type
    item_non_null = isinstance(item_type, GraphQLNonNull)
    return (item_type.of_type if item_non_null else item_type), non_null, item_type, item_non_null


def plain_objects(field_def: GraphQLField) -> PlainObjects | None:
    """The plan for a plain object field; None for any other field."""
    attr = _basic_attr(field_def)
    if attr is None:
        return None
    t, non_null, item_type, item_non_null = _unwrap(field_def.type)
    is_list = item_type is not None
    if is_list and not (non_null and item_non_null):
        return None
    if not isinstance(t, GraphQLObjectType) or t.is_type_of is not None:
        return None
    return PlainObjects(attr, t, non_null, is_list, field_def.type, item_type)


def plain_leaf(field_def: GraphQLField) -> PlainLeaf | None:
    """The plan for a plain leaf field; None for any other field."""
    attr = _basic_attr(field_def)
    if attr is None:
        return None
    t, non_null, item_type, item_non_null = _unwrap(field_def.type)
    if not is_leaf_type(t):
        return None
    return PlainLeaf(attr, t.coerce_output_value, non_null, item_type is not None, item_non_null)


class _Fallback(Exception):
    """The value needs graphql-core's full path."""


class PlainFieldExecutor(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's executor, with plain leaf and object fields read directly (see the module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        plans = _PLANS.get(self.schema)
        self._plain = plans if plans is not None else _PLANS.setdefault(self.schema, {})
        self._trees: dict[int, tuple[Any, Tree | None]] = {}
        """This operation's plain trees by grouped field set (the set is kept alive with its tree,
        so its id is not reused)."""

    def execute_fields(self, parent_type: GraphQLObjectType, source_value: Any, path: Any, grouped_field_set: Any,
                       position_context: Any) -> Any:
        tree = self._tree(parent_type, grouped_field_set)
        if tree is not None:
            try:
                return _walk(tree, source_value, self.is_awaitable)
            except Exception:  # noqa: BLE001 - out of the ordinary: the usual way answers, errors included
                pass
        return super().execute_fields(parent_type, source_value, path, grouped_field_set, position_context)

    def _plan(self, parent_type: GraphQLObjectType, node: Any) -> Plan | None:
        key = (parent_type.name, node.name.value)
        plan = self._plain.get(key, Undefined)
        if plan is Undefined:
            field_def = self.schema.get_field(parent_type, node.name.value)
            plan = self._plain[key] = (plain_leaf(field_def) or plain_objects(field_def)) if field_def else None
        return plan  # type: ignore[return-value]

    def _tree(self, parent_type: GraphQLObjectType, grouped_field_set: Any) -> Tree | None:
        """The plain tree of an object's selected fields; None unless all of them are plain fields
        without arguments or directives, down to the leaves."""
        cached = self._trees.get(id(grouped_field_set))
        if cached is not None:
            return cached[1]
        tree: Tree | None = None
        manager = self.middleware_manager
        if manager is None or not manager.middlewares:
            entries = []
            for response_name, field_details_list in grouped_field_set.items():
                node = field_details_list[0].node
                plan = None if node.arguments or node.directives else self._plan(parent_type, node)
                sub = None
                if type(plan) is PlainObjects:
                    grouped, defers, _ = self.collect_subfields(plan.type, field_details_list)
                    sub = None if defers else self._tree(plan.type, grouped)
                    if sub is None:
                        plan = None
                if plan is None:
                    break
                entries.append((response_name, plan, sub))
            else:
                tree = tuple(entries)
        self._trees[id(grouped_field_set)] = (grouped_field_set, tree)
        return tree

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
            plan = self._plan(parent_type, node)
            if plan is not None:
                try:
                    value = getattr(source, plan.attr)
                    plain = not self.is_awaitable(value)
                except Exception:  # noqa: BLE001 - the full path raises it again, as a located error
                    plain = False
                if plain and type(plan) is PlainLeaf:
                    try:
                        return _complete(plan, value)
                    except Exception:  # noqa: BLE001 - as above
                        pass
                elif plain:
                    try:
                        return self._objects(plan, value, field_details_list, path)
                    except _Fallback:
                        pass
        return super().execute_field(parent_type, source, field_details_list, path, position_context)

    def _objects(self, plan: PlainObjects, value: Any, field_details_list: Any, path: Any) -> Any:
        """Execute the sub-fields of a plain object field's object(s); raises _Fallback (before any
        sub-field runs) when the value needs graphql-core's full path."""
        if value is None:
            if plan.non_null:
                raise _Fallback
            return None
        is_awaitable = self.is_awaitable
        if plan.is_list:
            if not isinstance(value, list | tuple) or any(v is None or is_awaitable(v) for v in value):
                raise _Fallback
        grouped, defers, _ = self.collect_subfields(plan.type, field_details_list)
        if defers:
            raise _Fallback
        try:
            if not plan.is_list:
                done = self.execute_fields(plan.type, value, path, grouped, None)
                return self._awaited(done, plan.field_type, field_details_list, path) if is_awaitable(done) else done
            return self._list(plan, value, grouped, field_details_list, path)
        except Exception as raw_error:  # noqa: BLE001 - graphql-core's handling: null, or raise when non-null
            self.handle_field_error(raw_error, plan.field_type, field_details_list, path)
            return None

    def _list(self, plan: PlainObjects, value: list[Any] | tuple[Any, ...], grouped: Any, field_details_list: Any,
              path: Any) -> Any:
        """The list's objects, each executed as graphql-core's list completion would (an error in
        one is handled at that item, then at the field)."""
        out: list[Any] = []
        pending: list[int] = []
        try:
            for index, obj in enumerate(value):
                item_path = path.add_key(index, None)
                try:
                    done = self.execute_fields(plan.type, obj, item_path, grouped, None)
                except Exception as raw_error:  # noqa: BLE001
                    self.handle_field_error(raw_error, plan.item_type, field_details_list, item_path)
                    done = None
                else:
                    if self.is_awaitable(done):
                        done = self._awaited(done, plan.item_type, field_details_list, item_path)
                        pending.append(index)
                out.append(done)
        except Exception:
            if pending:  # as graphql-core does: the items still running settle in the background
                self.settle_in_background([out[i] for i in pending])
            raise
        if not pending:
            return out

        async def gather() -> list[Any]:
            awaited = await gather_with_cancel(*(out[i] for i in pending))
            for i, item in zip(pending, awaited, strict=True):
                out[i] = item
            return out

        return self._awaited(gather(), plan.field_type, field_details_list, path)

    async def _awaited(self, done: Any, return_type: Any, field_details_list: Any, path: Any) -> Any:
        """``done`` awaited; an error is handled at ``path`` as a value of ``return_type``."""
        try:
            return await done
        except Exception as raw_error:  # noqa: BLE001 - graphql-core's handling: null, or raise when non-null
            self.handle_field_error(raw_error, return_type, field_details_list, path)
            return None


def _walk(tree: Tree, source: Any, is_awaitable: Callable[[Any], bool]) -> dict[str, Any]:
    """A plain tree's answer for one object; raises on anything out of the ordinary (a null where
    the type forbids one, a value that is not a list or does not coerce, an awaitable)."""
    out = {}
    for response_name, plan, sub in tree:
        value = getattr(source, plan.attr)
        if is_awaitable(value):
            raise _Fallback
        if sub is None:
            out[response_name] = _complete(plan, value)  # type: ignore[arg-type]
        elif value is None:
            if plan.non_null:
                raise _Fallback
            out[response_name] = None
        elif not plan.is_list:  # type: ignore[union-attr]
            out[response_name] = _walk(sub, value, is_awaitable)
        elif isinstance(value, list | tuple):  # plain lists of objects are non-null lists of non-null objects
            out[response_name] = [_walk(sub, item, is_awaitable) for item in value]
        else:
            raise _Fallback
    return out


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
