"""graphql_api.execution: plain leaf fields take the short path and answer exactly as graphql-core would."""

from __future__ import annotations

import asyncio
from enum import Enum
from typing import Any, NewType

import pytest
import strawberry
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from graphql_api.execution import PlainFieldExecutor
from graphql_api.schema import schema as api_schema


@strawberry.enum
class Colour(Enum):
    RED = "red"
    BLUE = "blue"


Raw = strawberry.scalar(NewType("Raw", object), serialize=lambda v: None if v == "blank" else f"<{v}>",
                        parse_value=lambda v: v)


async def later() -> str:
    return "awaited"


@strawberry.type
class Leaf:
    name: str
    size: int
    ratio: float | None
    colour: Colour
    tags: list[str]
    maybe: list[str | None] | None
    key: strawberry.ID
    raw: Raw

    @strawberry.field
    def shout(self) -> str:
        return self.name.upper()


def leaf(**odd: Any) -> Leaf:
    fields = {"name": "a", "size": 1, "ratio": None, "colour": Colour.RED, "tags": ["x", "y"],
              "maybe": [None, "z"], "key": strawberry.ID("7"), "raw": "r"}
    return Leaf(**{**fields, **odd})


def leaves() -> list[Leaf]:
    # one good leaf, then one per way a plain value can be wrong (each nulls its leaf with an error)
    return [leaf(), leaf(name=None), leaf(tags=["ok", None]), leaf(size="many"), leaf(colour="green"),
            leaf(tags="xy"), leaf(ratio=float("nan")), leaf(raw="blank"), leaf(raw=later())]


@strawberry.type
class Query:
    @strawberry.field
    def leaves(self) -> list[Leaf | None]:
        return leaves()  # type: ignore[return-value]


class Upper(SchemaExtension):
    """Resolver middleware: the short path must step aside for it."""

    def resolve(self, _next: Any, root: Any, info: Any, *args: Any, **kwargs: Any) -> Any:
        value = _next(root, info, *args, **kwargs)
        return value.upper() if isinstance(value, str) else value


QUERY = "{ leaves { name size ratio colour tags maybe key raw shout } }"


def answer(executor: type | None, extensions: list[Any] = (), query_type: type = Query,
           query: str = QUERY) -> dict[str, Any]:
    schema = strawberry.Schema(query=query_type, extensions=list(extensions),
                               **({"execution_context_class": executor} if executor else {}))
    result = asyncio.run(schema.execute(query))
    errors = sorted((e.message, tuple(e.path or ())) for e in result.errors or [])
    return {"data": result.data, "errors": errors}


class Traced(PlainFieldExecutor):
    """PlainFieldExecutor noting, by response path, the fields executed one by one (graphql-core's
    ``execute_field``) and those that took graphql-core's full path (``build_resolve_info``: every
    field resolved the usual way builds one).

    Which fields skip graphql-core's work shows only from inside an execution; it is observed at
    these two graphql-core hooks, not at this project's private functions, so graphql_api/execution.py
    may be rearranged freely. What the shortcut saves is measured by bench/api_load.py."""

    executed: list[tuple[Any, ...]] = []
    resolved: list[tuple[Any, ...]] = []

    def execute_field(self, parent_type: Any, source: Any, field_details_list: Any, path: Any,
                      position_context: Any) -> Any:
        Traced.executed.append(tuple(path.as_list()))
        return super().execute_field(parent_type, source, field_details_list, path, position_context)

    def build_resolve_info(self, field_def: Any, field_nodes: Any, parent_type: Any, path: Any) -> Any:
        Traced.resolved.append(tuple(path.as_list()))
        return super().build_resolve_info(field_def, field_nodes, parent_type, path)


@pytest.fixture
def traced() -> type[Traced]:
    Traced.executed.clear()
    Traced.resolved.clear()
    return Traced


def test_answers_and_errors_are_graphql_cores(traced: type[Traced]) -> None:
    mine = answer(traced)
    assert mine == answer(StrawberryGraphQLCoreExecutionContext)
    assert mine["data"]["leaves"][0] == {"name": "a", "size": 1, "ratio": None, "colour": "RED", "tags": ["x", "y"],
                                         "maybe": [None, "z"], "key": "7", "raw": "<r>", "shout": "A"}
    assert sorted(path[1] for _, path in mine["errors"]) == [1, 2, 3, 4, 5, 6, 7], mine["errors"]
    assert mine["data"]["leaves"][8]["raw"] == "<awaited>", "an awaitable is awaited, then coerced"
    # the good leaf's plain fields skipped graphql-core's resolution; the resolver field and the bad values did not
    plain = ("name", "size", "ratio", "colour", "tags", "maybe", "key")
    assert not {("leaves", 0, f) for f in plain} & set(traced.resolved)
    assert {("leaves", 0, "shout"), ("leaves", 1, "name"), ("leaves", 2, "tags"), ("leaves", 3, "size"),
            ("leaves", 4, "colour")} <= set(traced.resolved)


def test_resolver_middleware_is_honoured() -> None:
    assert answer(PlainFieldExecutor, [Upper]) == answer(StrawberryGraphQLCoreExecutionContext, [Upper])
    assert answer(PlainFieldExecutor, [Upper])["data"]["leaves"][0]["name"] == "A"


def test_api_schema_uses_it() -> None:
    assert api_schema.execution_context_class is PlainFieldExecutor


# -- plain object fields ---------------------------------------------------------------------------
@strawberry.type
class Part:
    name: str
    leaf: Leaf | None

    @strawberry.field
    def checked(self) -> str:
        if self.name == "boom":
            raise ValueError("checked failed for boom")
        return self.name

    @strawberry.field
    async def later(self) -> str:
        await asyncio.sleep(0)
        if self.name == "late-boom":
            raise ValueError("later failed")
        return f"{self.name} later"


@strawberry.type
class Whole:
    label: str
    part: Part
    spare: Part | None
    parts: list[Part]


def wholes() -> list[Whole]:
    def part(name: str, leaf: Any = leaf()) -> Part:
        return Part(name=name, leaf=leaf)

    return [
        Whole(label="plain", part=part("p"), spare=None, parts=[part("a"), part("b", leaf(name=None))]),
        # a non-null sub-field that fails: the error nulls the nearest nullable parent
        Whole(label="boom item", part=part("p"), spare=part("boom"), parts=[part("a"), part("boom")]),
        Whole(label="late boom", part=part("late-boom"), spare=None, parts=[part("late-boom")]),
        # values the short path must hand over to graphql-core
        Whole(label="null item", part=part("p"), spare=None, parts=[part("a"), None]),  # type: ignore[list-item]
        Whole(label="not a list", part=part("p"), spare=None, parts="ab"),  # type: ignore[arg-type]
        Whole(label="null object", part=None, spare=None, parts=[]),  # type: ignore[arg-type]
        Whole(label="awaitable", part=part("p"), spare=None, parts=[later_part()]),  # type: ignore[list-item]
        Whole(label="tuple", part=part("p"), spare=part("s"), parts=(part("t"),)),  # type: ignore[arg-type]
    ]


async def _part() -> Part:
    return Part(name="awaited", leaf=None)


def later_part() -> Any:
    return _part()


@strawberry.type
class WholeQuery:
    @strawberry.field
    def wholes(self) -> list[Whole | None]:
        return wholes()


WHOLE_QUERY = """{ wholes { label part { name checked later leaf { name tags } }
  spare { name checked } parts { name checked later leaf { name size colour } } } }"""


def whole_answer(executor: type, query: str = WHOLE_QUERY) -> dict[str, Any]:
    return answer(executor, query_type=WholeQuery, query=query)


def test_object_fields_answer_and_fail_as_graphql_core(traced: type[Traced]) -> None:
    mine = whole_answer(traced)
    assert mine == whole_answer(StrawberryGraphQLCoreExecutionContext)
    data = mine["data"]["wholes"]
    assert data[0]["parts"][1] == {"name": "b", "checked": "b", "later": "b later", "leaf": None}
    assert data[1] is None and data[2] is None, "non-null failures propagate up to the nullable whole"
    assert data[6]["parts"] == [{"name": "awaited", "checked": "awaited", "later": "awaited later", "leaf": None}]
    assert data[7]["parts"][0]["name"] == "t"
    # plain object fields skip graphql-core's resolution; values it must answer (a null item, not a
    # list, an awaitable item) take the full path
    resolved = set(traced.resolved)
    assert not {("wholes", 0, "part"), ("wholes", 0, "spare"), ("wholes", 0, "parts"), ("wholes", 0, "part", "leaf"),
                ("wholes", 0, "parts", 0, "leaf")} & resolved
    assert {("wholes", 3, "parts"), ("wholes", 4, "parts"), ("wholes", 6, "parts")} <= resolved
    assert ("checked failed for boom", (("wholes", 1, "spare", "checked"))) in mine["errors"]


# -- plain trees -----------------------------------------------------------------------------------
def walked(traced: type[Traced], path: tuple[Any, ...]) -> bool:
    """Whether the object at ``path`` was answered in one walk: none of its fields, at any depth,
    was executed on its own."""
    return not any(p[:len(path)] == path and len(p) > len(path) for p in traced.executed)


def test_plain_trees_answer_and_fail_as_graphql_core(traced: type[Traced]) -> None:
    """Objects whose selected fields are all plain are answered in one walk; every value the walk
    cannot answer (a null leaf, a bad item, a wrong type, an awaitable) is answered the usual way."""
    query = "{ leaves { name size ratio colour tags maybe key raw } }"
    mine = answer(traced, query=query)
    assert mine == answer(StrawberryGraphQLCoreExecutionContext, query=query)
    assert sorted(path[1] for _, path in mine["errors"]) == [1, 2, 3, 4, 5, 6, 7], mine["errors"]
    assert mine["data"]["leaves"][8]["raw"] == "<awaited>", "an awaitable is handed back, awaited, then coerced"
    assert [k for k in range(len(mine["data"]["leaves"])) if walked(traced, ("leaves", k))] == [0], \
        "only the good leaf was walked"

    traced.executed.clear()
    query = "{ wholes { label part { name leaf { name tags } } spare { name } parts { name leaf { name size colour } } } }"
    mine = whole_answer(traced, query)
    assert mine == whole_answer(StrawberryGraphQLCoreExecutionContext, query)
    data = mine["data"]["wholes"]
    assert walked(traced, ("wholes", 7)) and data[7]["parts"] == [{"name": "t", "leaf": data[7]["parts"][0]["leaf"]}], \
        "a whole of plain objects and lists (tuples too) is one walk"
    # a null leaf below the whole: the whole goes the usual way, its other objects are still walked
    assert not walked(traced, ("wholes", 0)) and walked(traced, ("wholes", 0, "part")) and mine["errors"]
    assert data[0]["parts"][1] == {"name": "b", "leaf": None}
    for k in (3, 4, 5, 6):  # a null item, not a list, a null object, an awaitable: the usual way answers
        assert not walked(traced, ("wholes", k))


def test_fields_with_arguments_or_directives_are_not_walked(traced: type[Traced]) -> None:
    for query in ("{ leaves { name size @include(if: true) } }", "{ leaves { name __typename } }"):
        traced.executed.clear()
        mine = answer(traced, query=query)
        assert mine == answer(StrawberryGraphQLCoreExecutionContext, query=query)
        assert not walked(traced, ("leaves", 0)), query
