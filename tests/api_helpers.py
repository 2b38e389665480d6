"""Helpers for the API tests: bundle fixtures from the tiny dataset (bench/tiny.py), a real Redis
server (bench/processes.py), and a GraphQL client over the ASGI app with its lifespan running.

Test modules load the fixtures with ``pytest_plugins = ["tests.api_helpers"]`` and import the other
helpers directly; the asserts here carry their own messages (PYTEST_DONT_REWRITE).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from distributed import Client

from bench.processes import RedisServer
from bench.tiny import fit_models, publish_bundle
from etl.dataset import Dataset
from graphql_api.settings import Settings
from models.base import FactorModel

REPO = Path(__file__).resolve().parents[1]
REQUEST_TIMEOUT = 60.0
"""Seconds a test request (or an app start) may take before the test fails with where it hung."""

RECS = """
query Recs($user: ID!, $first: Int! = 5) {
  recommendations(userId: $user, first: $first) {
    userId variant modelVersion userKnown coldStart coldStartReason userSource onlineInteractions
    weights { signal weight }
    items { rank score contributions { signal value } item { id title genres year meanRating popularity } }
  }
}
"""


# -- an ASGI client with the lifespan running -------------------------------------------------------------

class GQL:
    """A GraphQL client over httpx (ASGI transport or a real server)."""

    def __init__(self, http: httpx.AsyncClient, headers: Mapping[str, str] | None = None) -> None:
        self.http = http
        self.headers = dict(headers or {})

    async def post(self, query: str, variables: Mapping[str, Any] | None = None,
                   headers: Mapping[str, str] | None = None) -> httpx.Response:
        # a request that hangs fails the test with the await chain it was stuck in
        async with asyncio.timeout(REQUEST_TIMEOUT):
            return await self.http.post("/graphql", json={"query": query, "variables": dict(variables or {})},
                                        headers={**self.headers, **(headers or {})})

    async def __call__(self, query: str, variables: Mapping[str, Any] | None = None,
                       headers: Mapping[str, str] | None = None) -> dict[str, Any]:
        response = await self.post(query, variables, headers)
        assert response.status_code == 200, response.text
        return response.json()

    async def data(self, query: str, variables: Mapping[str, Any] | None = None,
                   headers: Mapping[str, str] | None = None) -> dict[str, Any]:
        body = await self(query, variables, headers)
        assert not body.get("errors"), body["errors"]
        return body["data"]


@contextlib.asynccontextmanager
async def running(app: Any, headers: Mapping[str, str] | None = None) -> AsyncIterator[GQL]:
    """The app with its lifespan started (startup on enter, shutdown on exit), and a client."""
    async with contextlib.AsyncExitStack() as stack:
        async with asyncio.timeout(REQUEST_TIMEOUT):
            await stack.enter_async_context(app.router.lifespan_context(app))
        transport = httpx.ASGITransport(app=app)
        http = await stack.enter_async_context(httpx.AsyncClient(transport=transport, base_url="http://api.test"))
        yield GQL(http, headers)


# -- fixtures (test modules load this module with ``pytest_plugins = ["tests.api_helpers"]``) ---------

@pytest.fixture(scope="session")
def tiny_models(tiny_dataset: Dataset, client: Client) -> dict[str, FactorModel]:
    """The bundles' models, fit once per test session on the tiny dataset."""
    return fit_models(tiny_dataset, client)


@pytest.fixture
def api_root(tmp_path: Path, tiny_dataset: Dataset, tiny_models: dict[str, FactorModel]) -> Path:
    """A bundle root with one published version, 'v1'."""
    root = tmp_path / "bundles"
    publish_bundle(root, tiny_dataset, tiny_models, version="v1")
    return root


@pytest.fixture(scope="module")
def module_api_root(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Dataset,
                    tiny_models: dict[str, FactorModel]) -> Path:
    """As ``api_root``, shared by a module's tests (for modules that start servers once)."""
    root = tmp_path_factory.mktemp("module-api") / "bundles"
    publish_bundle(root, tiny_dataset, tiny_models, version="v1")
    return root


@pytest.fixture
def make_settings(tmp_path: Path, api_root: Path) -> Callable[..., Settings]:
    """Settings over ``api_root`` and a fresh events folder; keyword arguments override fields."""

    def make(**overrides: Any) -> Settings:
        fields: dict[str, Any] = {"bundle_root": api_root, "events_dir": tmp_path / "events",
                                  "reload_interval": 0.2, "access_log": False}
        fields.update(overrides)
        # a server without keys starts only in development mode: say so where a test gives no keys
        fields.setdefault("dev_mode", not (fields.get("api_keys") or fields.get("admin_keys")))
        return Settings(**fields)

    return make


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.folder, ignore_errors=True)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A running, empty Redis."""
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()
    redis_server.flush()
    return redis_server.url
