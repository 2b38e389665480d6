"""The served bundle is kept out of the cyclic collector's sight, and a replaced one is still collected."""

from __future__ import annotations

import gc
import weakref

import pytest

from graphql_api.app import create_app
from graphql_api.engine import Engine
from graphql_api.runtime import GC_YOUNG_THRESHOLD, Runtime
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


async def test_loaded_bundle_is_frozen(make_settings, restore_gc) -> None:
    gc.unfreeze()
    app = create_app(make_settings())
    async with running(app) as gql:
        assert (await gql.data('{ recommendations(userId: "1", first: 2) { items { score } } }'))
        engine = app.state.runtime.engine
        assert gc.get_freeze_count() > 0
        assert not walked(engine), "the engine is frozen: full collections do not walk it"
        assert gc.get_threshold()[0] >= GC_YOUNG_THRESHOLD


def test_replaced_bundle_is_collected(make_settings, api_root, restore_gc) -> None:
    gc.unfreeze()
    runtime = Runtime(make_settings(reload_interval=0))
    first = Engine.load(api_root)
    first.cycle = [first]  # cyclic garbage once replaced: only the collector can reclaim it
    runtime.swap(first)
    assert gc.get_freeze_count() > 0
    gone = weakref.ref(first)
    del first
    runtime.swap(Engine.load(api_root))
    runtime.settle()
    assert gone() is None, "the replaced bundle was collected"
    assert gc.get_freeze_count() > 0 and not walked(runtime.engine)
