"""The served bundle is kept out of the cyclic collector's sight, requests seldom pay a collection of
the youngest generation, and a replaced bundle is still collected."""

from __future__ import annotations

import gc
import weakref

import pytest

from graphql_api.app import create_app
from graphql_api.engine import Engine
from graphql_api.runtime import Runtime
from tests.api_helpers import running

pytest_plugins = ["tests.api_helpers"]

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def walked(obj: object) -> bool:
    """Whether the collector's generations hold ``obj`` (frozen objects are in none)."""
    return any(o is obj for o in gc.get_objects())


@pytest.fixture
def restore_gc():
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


REQUESTS = 40
"""Answers served while counting youngest-generation collections (4 here at the runtime's threshold,
32 at Python's default of 700)."""


async def test_loaded_bundle_is_frozen(make_settings, restore_gc) -> None:
    gc.unfreeze()
    app = create_app(make_settings(cache_ttl=0))
    query = '{ recommendations(userId: "%d", first: 5) { items { score item { id title } } } }'
    async with running(app) as gql:
        assert (await gql.data(query % 1))
        young = gc.get_stats()[0]["collections"]
        for k in range(REQUESTS):
            await gql.data(query % (k % 20 + 1))
        young = gc.get_stats()[0]["collections"] - young
        engine = app.state.runtime.engine
        assert not walked(engine), "the engine is frozen: full collections do not walk it"
    assert young < REQUESTS / 4, f"{young} youngest-generation collections in {REQUESTS} requests"


def test_replaced_bundle_is_collected(make_settings, api_root, restore_gc) -> None:
    gc.unfreeze()
    runtime = Runtime(make_settings(reload_interval=0))
    first = Engine.load(api_root)
    first.cycle = [first]  # cyclic garbage once replaced: only the collector can reclaim it
    runtime.swap(first)
    assert not walked(first)
    gone = weakref.ref(first)
    del first
    runtime.swap(Engine.load(api_root))
    runtime.settle()
    assert gone() is None, "the replaced bundle was collected"
    assert not walked(runtime.engine), "the new bundle is frozen"
