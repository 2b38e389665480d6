"""graphql_api.execution: plain leaf fields take the short path and answer exactly as graphql-core would."""

from __future__ import annotations

import asyncio
from enum import Enum
from typing import Any, NewType

import pytest
import strawberry
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from graphql_api import execution
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


def test_answers_and_errors_are_graphql_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    short = []
    real = execution._complete
    monkeypatch.setattr(execution, "_complete", lambda plan, value: short.append(plan.attr) or real(plan, value))
    mine = answer(PlainFieldExecutor)
    assert mine == answer(StrawberryGraphQLCoreExecutionContext)
    assert mine["data"]["leaves"][0] == {"name": "a", "size": 1, "ratio": None, "colour": "RED", "tags": ["x", "y"],
                                         "maybe": [None, "z"], "key": "7", "raw": "<r>", "shout": "A"}
    assert sorted(path[1] for _, path in mine["errors"]) == [1, 2, 3, 4, 5, 6, 7], mine["errors"]
    assert mine["data"]["leaves"][8]["raw"] == "<awaited>", "an awaitable is awaited, then coerced"
    # the good leaf's plain fields went the short way; the resolver field did not
    assert {"name", "size", "ratio", "colour", "tags", "maybe", "key"} <= set(short) and "shout" not in short


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


def test_object_fields_answer_and_fail_as_graphql_core(monkeypatch: pytest.MonkeyPatch) -> None:
    short = []
    real = PlainFieldExecutor._objects

    def spy(self: PlainFieldExecutor, plan: Any, *args: Any) -> Any:
        out = real(self, plan, *args)  # raises _Fallback when the full path must answer
        short.append(plan.attr)
        return out

    monkeypatch.setattr(PlainFieldExecutor, "_objects", spy)
    mine = whole_answer(PlainFieldExecutor)
    assert mine == whole_answer(StrawberryGraphQLCoreExecutionContext)
    data = mine["data"]["wholes"]
    assert data[0]["parts"][1] == {"name": "b", "checked": "b", "later": "b later", "leaf": None}
    assert data[1] is None and data[2] is None, "non-null failures propagate up to the nullable whole"
    assert data[6]["parts"] == [{"name": "awaited", "checked": "awaited", "later": "awaited later", "leaf": None}]
    assert data[7]["parts"][0]["name"] == "t"
    assert {"part", "parts", "spare", "leaf"} <= set(short)
    assert ("checked failed for boom", (("wholes", 1, "spare", "checked"))) in mine["errors"]


# -- plain trees -----------------------------------------------------------------------------------
def walked(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The answers of objects answered by a plain-tree walk (not the ones it handed back)."""
    done: list[dict[str, Any]] = []
    real = execution._walk

    def spy(tree: Any, source: Any, is_awaitable: Any) -> dict[str, Any]:
        out = real(tree, source, is_awaitable)
        done.append(out)
        return out

    monkeypatch.setattr(execution, "_walk", spy)
    return done


def test_plain_trees_answer_and_fail_as_graphql_core(monkeypatch: pytest.MonkeyPatch) -> None:
    """Objects whose selected fields are all plain are answered in one walk; every value the walk
    cannot answer (a null leaf, a bad item, a wrong type, an awaitable) is answered the usual way."""
    done = walked(monkeypatch)
    query = "{ leaves { name size ratio colour tags maybe key raw } }"
    mine = answer(PlainFieldExecutor, query=query)
    assert mine == answer(StrawberryGraphQLCoreExecutionContext, query=query)
    assert sorted(path[1] for _, path in mine["errors"]) == [1, 2, 3, 4, 5, 6, 7], mine["errors"]
    assert mine["data"]["leaves"][8]["raw"] == "<awaited>", "an awaitable is handed back, awaited, then coerced"
    assert done == [mine["data"]["leaves"][0]], "only the good leaf was walked"

    done.clear()
    query = "{ wholes { label part { name leaf { name tags } } spare { name } parts { name leaf { name size colour } } } }"
    mine = whole_answer(PlainFieldExecutor, query)
    assert mine == whole_answer(StrawberryGraphQLCoreExecutionContext, query)
    data = mine["data"]["wholes"]
    assert data[7] in done and data[7]["parts"] == [{"name": "t", "leaf": data[7]["parts"][0]["leaf"]}], \
        "a whole of plain objects and lists (tuples too) is one walk"
    assert data[0] not in done and data[0]["part"] in done and mine["errors"], \
        "a null leaf below the whole: the whole goes the usual way, its other objects are still walked"
    assert data[0]["parts"][1] == {"name": "b", "leaf": None}
    for k in (3, 4, 5, 6):  # a null item, not a list, a null object, an awaitable: the usual way answers
        assert data[k] not in done


def test_fields_with_arguments_or_directives_are_not_walked(monkeypatch: pytest.MonkeyPatch) -> None:
    done = walked(monkeypatch)
    for query in ("{ leaves { name size @include(if: true) } }", "{ leaves { name __typename } }"):
        assert answer(PlainFieldExecutor, query=query) == answer(StrawberryGraphQLCoreExecutionContext, query=query)
    assert done == []
