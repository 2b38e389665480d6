"""The API issue's yardstick: stock Strawberry on Starlette answering a trivial 10-item query,
``{ items(first: 10) { id title genres } }``.

bench/api_load.py serves this app with one uvicorn worker (phase ``reference``) and loads it the
way it loads the real API, so every run measures how fast this machine is at that moment: the API
issue quotes about 680 req/s with p99 62 ms for it on the machine its targets were set on. Nothing
here is hybridrec's: no executor, cache, batching or bundle, only Strawberry's defaults.

    uvicorn stock_strawberry:app --app-dir bench --workers 1
"""

from __future__ import annotations

import strawberry
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from strawberry.asgi import GraphQL

@strawberry.type
class Item:
    id: strawberry.ID
    title: str
    genres: list[str]


ITEMS = [Item(id=strawberry.ID(str(i)), title=f"Movie {i} (1995)", genres=["Comedy", "Drama"]) for i in range(100)]


@strawberry.type
class Query:
    @strawberry.field
    def items(self, first: int = 10) -> list[Item]:
        return ITEMS[:first]


async def health(request: object) -> PlainTextResponse:
    return PlainTextResponse("ok")


schema = strawberry.Schema(query=Query)
app = Starlette(routes=[Route("/graphql", GraphQL(schema)), Route("/health", health)])
