"""Query cost: a document's shape and price, decided after parsing and before graphql-core
validates or executes anything (GitHub's node limit, Shopify's calculated cost, graphql-armor's
limits).

``DocumentCost(document, schema, operation_name)`` analyses one operation of a parsed document
once; ``graphql_api.schema`` keeps one per distinct document and refuses a document over a limit
with a typed error, so nothing else runs for it. The analysis is linear in the document: each
fragment definition is analysed once, in dependency order, and its summary reused at every spread.
A chain of fragments that each spread the next twice stands for 2^n fields, and is priced so, in n
steps; a cycle of fragments is refused.

The price, in points of about 10 µs of server CPU (see ``WEIGHTS``), as if the document were new
to the server (a client that sends a new document each time defeats every cache):

- the request itself, ``OPERATION`` (HTTP, and setting up the validation of a new document);
- every field node of the document as written, ``FIELD_NODE`` (parsing and validating it), and
  every field node of the operation as if fragments were written out, ``EXPANDED_NODE`` (collecting
  it while executing): a field repeated 490 times is counted 490 times;
- every two fields of one selection set that share a response name, ``1 +`` the fields below them
  (graphql-core's OverlappingFieldsCanBeMergedRule compares each such pair: quadratic in repeats),
  and every two fragments spread in one selection set;
- what resolvers do: a field's ``call`` each time it runs, plus, for each object it returns,
  ``OBJECT`` and what is selected below it. A list field is sized by its ``first`` argument (or
  the length of a list argument: ``items(ids:)``; variables resolved, the schema's default when
  absent), else by a known bound (``list_size``); scalars cost nothing beyond their node.

``requested`` prices what the document asks for; ``actual`` prices the answer it got, with each
list sized by an argument counted at the length the answer really has (a user with 3 items of
``first: 100``, an ``ItemNotFound`` instead of a list).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLList,
    GraphQLNonNull,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    ListValueNode,
    OperationDefinitionNode,
    SchemaMetaFieldDef,
    SelectionSetNode,
    TypeMetaFieldDef,
    TypeNameMetaFieldDef,
    VariableNode,
    is_composite_type,
    is_enum_type,
    is_input_object_type,
    is_interface_type,
    is_list_type,
    is_object_type,
    is_union_type,
)

__all__ = ["FieldCost", "WEIGHTS", "OPERATION", "FIELD_NODE", "EXPANDED_NODE", "OBJECT", "DocumentCost", "CAP"]

CAP = 2**53 - 1
"""Counts and prices saturate here (a chain of fragments can stand for 2^200 fields)."""


@dataclass(frozen=True, slots=True)
class FieldCost:
    """What one field costs beyond its node (``Type.field`` in ``WEIGHTS``)."""

    call: int = 0
    """Points each time its resolver runs (per parent object)."""
    size_arg: str | None = None
    """The argument that sizes it: an Int (``first``) or a list whose length counts (``ids``)."""
    size_max: int = 1
    """The most ``size_arg`` may give (the resolver refuses more: priced at this bound)."""
    sized_list: str | None = None
    """The child list the size bounds when the field returns one object (``items`` of
    ``recommendations``); None: the field's own list."""
    list_size: int = 0
    """Objects a list without a size argument holds at most (0: ``LIST``)."""
    element: int | None = None
    """Points per object it returns (None: ``OBJECT`` for objects, 0 for scalars)."""


OPERATION = 200
FIELD_NODE = 10
EXPANDED_NODE = 1
OBJECT = 1
INTROSPECTION_OBJECT = 3
LIST = 10
"""Objects assumed in a list field that ``WEIGHTS`` does not bound."""
MUTATION = 100
"""A mutation that ``WEIGHTS`` does not name."""
SIGNALS = 6
"""Per-signal lists (contributions, shares, weights) hold one entry per Signal at most."""

# Points of about 10 µs of one core of the 2-core development machine. Measured with
# `python bench/hostile.py --calibrate` (one uvicorn worker, answer cache off, the six-signal
# ml-latest-small bundle: 9,742 items; server CPU per request, every request a new document): a
# new `{ __typename }` took 2.0-2.5 ms (OPERATION), a new document 100 µs more per field node
# (FIELD_NODE; 40 µs in a process with a small heap: the rest is the garbage collector); a call's
# weight is the CPU the field adds to a request without it, per call (recommendations 2.5-4 ms of
# fold-in and search, similarItems 6-8 ms of catalogue scan, an explanation 70 µs, its graph path
# 40-80 µs), OBJECT a returned object with its plain fields (10-20 µs), each rounded up. The
# dearest documents the limits allow then took 4.5-10 µs of CPU per point (`python bench/hostile.py`).
# Catalogue-wide scans (similarItems, searchItems) grow with the catalogue: re-measure for a larger one.
WEIGHTS: dict[str, FieldCost] = {
    "Query.recommendations": FieldCost(call=300, size_arg="first", size_max=100, sized_list="items"),
    "Query.similarItems": FieldCost(call=600, size_arg="first", size_max=100, sized_list="items"),
    "Query.searchItems": FieldCost(call=150, size_arg="first", size_max=100, element=2),
    "Query.items": FieldCost(call=10, size_arg="ids", size_max=500, element=5),
    "Query.explain": FieldCost(call=300),
    "Query.item": FieldCost(call=5),
    "Query.user": FieldCost(call=50),
    "Query.model": FieldCost(call=7),
    "Query.variants": FieldCost(call=10, list_size=8),
    "Recommendations.items": FieldCost(list_size=1),  # sized by recommendations(first:)
    "SimilarItems.items": FieldCost(list_size=1),  # sized by similarItems(first:)
    "User.recentHistory": FieldCost(call=50, size_arg="first", size_max=100),
    "Interaction.item": FieldCost(call=4),
    "RecommendedItem.contributions": FieldCost(list_size=SIGNALS),
    "RecommendedItem.explanation": FieldCost(call=7),
    "Explanation.contributions": FieldCost(list_size=SIGNALS),
    "Explanation.shares": FieldCost(call=1, list_size=SIGNALS),
    "Explanation.drivers": FieldCost(list_size=3),
    "Explanation.graphPath": FieldCost(call=10, list_size=5),
    "Explanation.sharedTags": FieldCost(call=2),
    "Explanation.item": FieldCost(call=3),
    "SimilarItem.contributions": FieldCost(list_size=SIGNALS),
    "Recommendations.weights": FieldCost(list_size=SIGNALS),
    "Variant.weights": FieldCost(list_size=SIGNALS),
    "Model.tunedWeights": FieldCost(list_size=SIGNALS),
    "Model.metrics": FieldCost(list_size=20),
    "Mutation.recordInteraction": FieldCost(call=100),
    "Mutation.recordInteractions": FieldCost(call=100, size_arg="batch", size_max=1000, element=13),  # MAX_BATCH
    "Mutation.deleteUserData": FieldCost(call=1000),
    # a durable write, then this process's catalogue rebuilt before the answer (a worker thread: ~0.1-0.3 s
    # on ml-latest-small, but once per batch, by an admin); per item its validation and JSON (MAX_BATCH 100)
    "Mutation.upsertItems": FieldCost(call=1000, size_arg="items", size_max=100, element=10),
    "__Type.ofType": FieldCost(element=0),  # mostly null: a named type has none
}


# -- the compiled document ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _VarSize:
    """A size given by a variable: its value (an Int, or a list's length), else ``default``."""

    name: str
    default: int
    most: int

    def value(self, variables: Mapping[str, Any]) -> int:
        return _clamp(_size_of(variables.get(self.name)), self.default, self.most)


@dataclass(frozen=True, slots=True)
class _Field:
    key: str
    """Response name (the alias, else the name)."""
    name: str
    call: int
    element: int
    size: int | _VarSize
    children: tuple[_Item, ...]
    sized: FieldCost | None
    """The table entry when an argument sizes the field (its length is observed in the answer)."""
    static: int | None
    """The field's price when no variable changes it."""
    observe: bool
    """It, or a field below it, is sized by an argument."""


@dataclass(frozen=True, slots=True)
class _Spread:
    name: str
    observe: bool


@dataclass(frozen=True, slots=True)
class _Inline:
    children: tuple[_Item, ...]
    static: int | None
    observe: bool


_Item = _Field | _Spread | _Inline


@dataclass(slots=True)
class _Summary:
    """What a selection (or a whole fragment) adds up to, fragments written out."""

    nodes: int = 0
    aliases: int = 0
    directives: int = 0
    depth: int = 0
    static: int | None = 0
    """Its price when no variable changes it, else None."""
    observe: bool = False

    def add(self, other: _Summary) -> None:
        self.nodes = min(CAP, self.nodes + other.nodes)
        self.aliases = min(CAP, self.aliases + other.aliases)
        self.directives = min(CAP, self.directives + other.directives)
        self.depth = max(self.depth, other.depth)
        self.static = None if self.static is None or other.static is None else min(CAP, self.static + other.static)
        self.observe = self.observe or other.observe


@dataclass(slots=True)
class _Fragment:
    type_name: str
    items: tuple[_Item, ...] = ()
    summary: _Summary = field(default_factory=_Summary)


def _size_of(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, list | tuple):
        return len(value)
    return None


def _clamp(value: int | None, default: int, most: int) -> int:
    return default if value is None else max(0, min(most, value))


def _named(t: Any) -> tuple[Any, bool]:
    """(named type, whether any list wraps it)."""
    is_list = False
    while isinstance(t, GraphQLNonNull | GraphQLList):
        is_list = is_list or is_list_type(t)
        t = t.of_type
    return t, is_list


class _SchemaInfo:
    """What the analysis reads from a schema: fields by type, argument defaults, and how many
    entries the introspection lists hold on average (the GraphiQL introspection query is priced by
    what it really returns)."""

    def __init__(self, schema: GraphQLSchema) -> None:
        self.schema = schema
        types = list(schema.type_map.values())
        n = max(1, len(types))
        fields = [f for t in types if is_object_type(t) or is_interface_type(t) for f in t.fields.values()]
        inputs = [f for t in types if is_input_object_type(t) for f in t.fields.values()]

        def mean(count: int, over: int) -> int:  # over every type: exact for a walk of all types
            return max(1, math.ceil(count / max(1, over)))

        self.introspection_sizes = {
            "__Schema.types": n,
            "__Schema.directives": max(1, len(schema.directives)),
            "__Type.fields": mean(len(fields), n),
            "__Type.inputFields": mean(len(inputs), n),
            "__Type.enumValues": mean(sum(len(t.values) for t in types if is_enum_type(t)), n),
            "__Type.interfaces": mean(sum(len(t.interfaces) for t in types if is_object_type(t)), n),
            "__Type.possibleTypes": mean(sum(len(t.types) for t in types if is_union_type(t)), n),
            "__Field.args": mean(sum(len(f.args) for f in fields), len(fields)),
            "__Directive.args": mean(sum(len(d.args) for d in schema.directives), len(schema.directives)),
        }


_META = {"__schema": SchemaMetaFieldDef, "__type": TypeMetaFieldDef, "__typename": TypeNameMetaFieldDef}
_INFO: OrderedDict[int, _SchemaInfo] = OrderedDict()


def _info(schema: GraphQLSchema) -> _SchemaInfo:
    info = _INFO.get(id(schema))
    if info is None or info.schema is not schema:
        info = _INFO[id(schema)] = _SchemaInfo(schema)
        while len(_INFO) > 8:
            _INFO.popitem(last=False)
    return info


# -- the analysis ------------------------------------------------------------------------------------------

class DocumentCost:
    """One operation of a parsed document: its shape (fragments written out) and its price.

    ``operation_name`` picks the operation (else the first: graphql-core refuses to run one of
    several unnamed). ``cycle`` names a fragment that spreads itself: the document is to be refused.
    Every definition counts for validation (its field nodes, and its pairs of fields that share a
    response name), whether the operation uses it or not: graphql-core validates them all."""

    def __init__(self, document: DocumentNode, schema: GraphQLSchema, operation_name: str | None = None) -> None:
        self._info = _info(schema)
        self._schema = schema
        self.cycle: str | None = None
        fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
        ops = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
        op = next((o for o in ops if o.name is not None and o.name.value == operation_name), None) \
            if operation_name else (ops[0] if ops else None)
        self._fragments: dict[str, _Fragment] = {}
        self._order = self._sort(fragments, [op] if op is not None else [])
        self._variable_defaults = {v.variable.name.value: _literal_size(v.default_value)
                                   for v in (op.variable_definitions or () if op is not None else ())}
        for name in self._order:
            definition = fragments[name]
            frag = self._fragments[name]
            frag.items, frag.summary = self._selection(definition.selection_set, frag.type_name)
            frag.summary.directives = min(CAP, frag.summary.directives + len(definition.directives or ()))
        summary = _Summary()
        self._items: tuple[_Item, ...] = ()
        if op is not None:
            root = self._schema.get_root_type(op.operation)
            self._items, summary = self._selection(op.selection_set, root.name if root else "")
            summary.directives = min(CAP, summary.directives + len(op.directives or ()))
        self.depth = summary.depth
        self.aliases = summary.aliases
        self.directives = summary.directives
        self.field_nodes = summary.nodes
        """Field nodes of the operation with its fragments written out."""
        self.pairs, self.written_nodes = _validation_work(document.definitions)
        self.parsed = min(CAP, OPERATION + FIELD_NODE * self.written_nodes)
        """What parsing and analysing the document cost: the price of a refusal."""
        self._base = min(CAP, self.parsed + EXPANDED_NODE * summary.nodes + self.pairs)
        """What parsing, validation and collecting the fields cost, whatever the variables and the answer."""
        self._static = None if summary.static is None else min(CAP, self._base + summary.static)
        self._observe = summary.observe
        self._var_names = self._variables_used()
        self._memo: OrderedDict[tuple[int | None, ...], int] = OrderedDict()

    # -- fragments in dependency order ----------------------------------------------------------------
    def _sort(self, fragments: dict[str, FragmentDefinitionNode], ops: list[OperationDefinitionNode]) -> list[str]:
        """The fragments the operation reaches, each after those it spreads (iterative: a chain of
        hundreds of fragments exhausts no stack); a cycle is recorded in ``cycle``."""
        spreads = {name: list(_spread_names(d.selection_set)) for name, d in fragments.items()}
        order: list[str] = []
        state: dict[str, int] = {}  # 1: on the path, 2: done
        for root in (n for op in ops for n in _spread_names(op.selection_set)):
            if root not in fragments or root in state:
                continue
            stack: list[tuple[str, Iterator[str]]] = [(root, iter(spreads[root]))]
            state[root] = 1
            while stack:
                name, children = stack[-1]
                child = next(children, None)
                if child is None:
                    stack.pop()
                    state[name] = 2
                    order.append(name)
                elif child in fragments:
                    if state.get(child) == 1:
                        self.cycle = self.cycle or child
                    elif child not in state:
                        state[child] = 1
                        stack.append((child, iter(spreads[child])))
        for name in order:
            condition = fragments[name].type_condition
            self._fragments[name] = _Fragment(condition.name.value if condition else "")
        return order

    # -- one selection set ----------------------------------------------------------------------------
    def _selection(self, selection_set: SelectionSetNode | None, type_name: str) -> tuple[tuple[_Item, ...], _Summary]:
        out: list[_Item] = []
        total = _Summary()
        if selection_set is None:
            return (), total
        parent = self._schema.get_type(type_name) if type_name else None
        fields = getattr(parent, "fields", None) or {}
        for sel in selection_set.selections:
            if isinstance(sel, FieldNode):
                item, summary = self._field(sel, type_name, fields)
                out.append(item)
                total.add(summary)
            elif isinstance(sel, FragmentSpreadNode):
                total.directives = min(CAP, total.directives + len(sel.directives or ()))
                frag = self._fragments.get(sel.name.value)
                if frag is not None and sel.name.value != self.cycle:
                    out.append(_Spread(sel.name.value, frag.summary.observe))
                    total.add(frag.summary)
            elif isinstance(sel, InlineFragmentNode):
                inner_type = sel.type_condition.name.value if sel.type_condition else type_name
                items, summary = self._selection(sel.selection_set, inner_type)
                summary.directives = min(CAP, summary.directives + len(sel.directives or ()))
                out.append(_Inline(items, summary.static, summary.observe))
                total.add(summary)
        return tuple(out), total

    def _field(self, node: FieldNode, type_name: str, fields: Mapping[str, Any]) -> tuple[_Field, _Summary]:
        name = node.name.value
        key = node.alias.value if node.alias else name
        definition = fields.get(name) or _META.get(name)
        named, is_list = _named(definition.type) if definition is not None else (None, False)
        items, below = self._selection(node.selection_set, getattr(named, "name", ""))
        entry = WEIGHTS.get(f"{type_name}.{name}")
        composite = is_composite_type(named) if named is not None else node.selection_set is not None
        if entry is not None and entry.element is not None:
            element = entry.element
        elif not composite:
            element = 0
        else:
            element = INTROSPECTION_OBJECT if name.startswith("__") or type_name.startswith("__") else OBJECT
        call = entry.call if entry is not None else (MUTATION if type_name == "Mutation" else 0)
        size: int | _VarSize = 1
        sized = None
        if entry is not None and entry.size_arg is not None:
            sized = entry
            size = self._argument_size(node, definition, entry)
        elif is_list and composite:
            size = entry.list_size if entry is not None and entry.list_size else \
                self._info.introspection_sizes.get(f"{type_name}.{name}", LIST)
        static = None
        if below.static is not None and isinstance(size, int):
            static = min(CAP, call + size * (element + below.static))
        summary = _Summary(
            nodes=min(CAP, 1 + below.nodes),
            aliases=min(CAP, below.aliases + (1 if node.alias else 0)),
            directives=min(CAP, below.directives + len(node.directives or ())),
            # introspection is priced, and its nesting limited by graphql-core (MaxIntrospectionDepthRule)
            depth=0 if name in ("__schema", "__type") else 1 + below.depth,
            static=static,
            observe=sized is not None or below.observe,
        )
        return _Field(key, name, call, element, size, items, sized, static, summary.observe), summary

    def _argument_size(self, node: FieldNode, definition: Any, entry: FieldCost) -> int | _VarSize:
        arg = definition.args.get(entry.size_arg) if definition is not None else None
        fallback = _clamp(_size_of(getattr(arg, "default_value", None)), entry.size_max, entry.size_max)
        for argument in node.arguments or ():
            if argument.name.value == entry.size_arg:
                value = argument.value
                if isinstance(value, VariableNode):
                    declared = self._variable_defaults.get(value.name.value)
                    return _VarSize(value.name.value, _clamp(declared, fallback, entry.size_max), entry.size_max)
                return _clamp(_literal_size(value), fallback, entry.size_max)
        return fallback

    def _variables_used(self) -> tuple[str, ...]:
        names: set[str] = set()
        todo: list[tuple[_Item, ...]] = [self._items, *(f.items for f in self._fragments.values())]
        while todo:
            for item in todo.pop():
                if isinstance(item, _Field):
                    if isinstance(item.size, _VarSize):
                        names.add(item.size.name)
                    todo.append(item.children)
                elif isinstance(item, _Inline):
                    todo.append(item.children)
        return tuple(sorted(names))

    # -- prices ---------------------------------------------------------------------------------------
    def requested(self, variables: Mapping[str, Any] | None = None) -> int:
        """The price of what the document asks for, with these variables."""
        if self._static is not None:
            return self._static
        variables = variables or {}
        key = tuple(_size_of(variables.get(name)) for name in self._var_names)
        cost = self._memo.get(key)
        if cost is None:
            memo = self._fragment_costs(variables)
            cost = self._memo[key] = min(CAP, self._base + _eval(self._items, variables, memo))
            while len(self._memo) > 64:
                self._memo.popitem(last=False)
        return cost

    def actual(self, data: Any, variables: Mapping[str, Any] | None = None) -> int:
        """The price of the answer ``data``: lists sized by an argument counted at their length."""
        if not isinstance(data, dict):
            return 0
        variables = variables or {}
        if not self._observe:
            return self.requested(variables)
        memo = self._fragment_costs(variables)
        return min(CAP, self._base + self._actual(self._items, data, variables, memo))

    def forget_plan(self, requested: int) -> None:
        """Keep the counts and this price, drop the compiled document (a refused document is kept
        in the cache of analyses for its verdict only: a few hundred bytes, not tens of KB)."""
        self._items, self._fragments, self._order, self._var_names = (), {}, [], ()
        self._static = requested
        self._observe = False

    def _fragment_costs(self, variables: Mapping[str, Any]) -> dict[str, int]:
        memo: dict[str, int] = {}
        for name in self._order:  # dependencies first: a spread finds its fragment's price here
            frag = self._fragments[name]
            memo[name] = frag.summary.static if frag.summary.static is not None else min(
                CAP, _eval(frag.items, variables, memo))
        return memo

    def _actual(self, items: Iterable[_Item], data: dict[str, Any], variables: Mapping[str, Any],
                memo: dict[str, int]) -> int:
        total = 0
        seen: set[str] = set()
        for item in self._flat(items):
            if item.key in seen or item.key not in data:
                continue  # a field asked twice runs once; a member of a union not returned is absent
            seen.add(item.key)
            value = data[item.key]
            if value is None:
                total += item.call
            elif not item.observe:
                total += item.static if item.static is not None else _eval((item,), variables, memo)
            elif isinstance(value, list):
                if any(c.observe for c in item.children):
                    total += item.call + len(value) * item.element + sum(
                        self._actual(item.children, v, variables, memo) for v in value if isinstance(v, dict))
                else:
                    total += item.call + len(value) * (item.element + _eval(item.children, variables, memo))
            elif isinstance(value, dict):
                if item.sized is not None:
                    n = self._observed(item, value, variables)
                    total += item.call + n * (item.element + _eval(item.children, variables, memo))
                else:
                    total += item.call + item.element + self._actual(item.children, value, variables, memo)
            if total >= CAP:
                return CAP
        return total

    def _observed(self, item: _Field, value: dict[str, Any], variables: Mapping[str, Any]) -> int:
        """How many entries the sized list of one returned object holds (the requested size when
        the list is not selected; 0 when it is selected but absent: another member of a union)."""
        want = item.sized.sized_list if item.sized is not None else None
        selected = False
        for child in self._flat(item.children):
            if want is not None and child.name == want:
                selected = True
                entries = value.get(child.key)
                if isinstance(entries, list):
                    return len(entries)
        if selected:
            return 0
        return item.size if isinstance(item.size, int) else item.size.value(variables)

    def _flat(self, items: Iterable[_Item]) -> Iterator[_Field]:
        """The fields of a selection, fragments written out (bounded: only a document within the
        limits is executed, and so priced by its answer)."""
        for item in items:
            if isinstance(item, _Field):
                yield item
            elif isinstance(item, _Inline):
                yield from self._flat(item.children)
            else:
                frag = self._fragments.get(item.name)
                if frag is not None:
                    yield from self._flat(frag.items)


def _validation_work(definitions: Iterable[Any]) -> tuple[int, int]:
    """(price of the pairs graphql-core's validation compares, field nodes of the document as
    written: graphql-core parses and validates every definition, used or not).

    In each selection set of the document, every two fields of one response name are compared
    (OverlappingFieldsCanBeMergedRule), each comparison going through what is selected below them;
    every two fragments spread there are compared too (once per pair of names: graphql-core caches)."""
    pairs = 0

    def walk(selection_set: SelectionSetNode | None) -> int:
        nonlocal pairs
        if selection_set is None:
            return 0
        nodes = 0
        by_key: dict[str, int] = {}
        counts: dict[str, int] = {}
        spreads: set[str] = set()
        for sel in selection_set.selections:
            if isinstance(sel, FieldNode):
                below = walk(sel.selection_set)
                key = sel.alias.value if sel.alias else sel.name.value
                by_key[key] = max(by_key.get(key, 0), below)
                counts[key] = counts.get(key, 0) + 1
                nodes += 1 + below
            elif isinstance(sel, FragmentSpreadNode):
                spreads.add(sel.name.value)
            else:
                nodes += walk(sel.selection_set)
        for key, k in counts.items():
            if k > 1:
                pairs = min(CAP, pairs + k * (k - 1) // 2 * (1 + by_key[key]))
        groups = len(spreads) + (1 if counts else 0)
        pairs = min(CAP, pairs + groups * (groups - 1) // 2)
        return nodes

    written = sum(walk(getattr(definition, "selection_set", None)) for definition in definitions)
    return pairs, min(CAP, written)


def _eval(items: Iterable[_Item], variables: Mapping[str, Any], memo: dict[str, int]) -> int:
    total = 0
    for item in items:
        if isinstance(item, _Spread):
            total += memo.get(item.name, 0)
        elif item.static is not None:
            total += item.static
        elif isinstance(item, _Inline):
            total += _eval(item.children, variables, memo)
        else:
            size = item.size if isinstance(item.size, int) else item.size.value(variables)
            total += item.call + size * (item.element + _eval(item.children, variables, memo))
        if total >= CAP:
            return CAP
    return total


def _literal_size(value: Any) -> int | None:
    if isinstance(value, IntValueNode):
        return int(value.value)
    if isinstance(value, ListValueNode):
        return len(value.values)
    return None


def _spread_names(selection_set: SelectionSetNode | None) -> Iterator[str]:
    """Names of the fragments spread anywhere in a selection set (iterative)."""
    todo = [selection_set] if selection_set is not None else []
    while todo:
        for sel in todo.pop().selections:
            if isinstance(sel, FragmentSpreadNode):
                yield sel.name.value
            elif sel.selection_set is not None:
                todo.append(sel.selection_set)


