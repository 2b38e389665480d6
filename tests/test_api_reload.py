"""Hot reload: publishing a bundle switches the running API to it, with no failed request."""

from __future__ import annotations

import asyncio
import os

import anyio.to_thread
import pytest

from graphql_api.app import create_app
from tests.api_helpers import publish_bundle, running, tiny_models

pytest_plugins = ["tests.api_helpers"]

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"

Q = 'query($u: ID!) { recommendations(userId: $u, first: 5) { modelVersion variant items { score item { id } } } }'


async def test_publishing_a_bundle_switches_without_failed_requests(make_settings, api_root, tiny_dataset) -> None:
    versions: list[str] = []
    failures: list[str] = []
    stop = asyncio.Event()

    async def hammer(gql, user: str) -> None:
        while not stop.is_set():
            response = await gql.post(Q, {"u": user})
            body = response.json() if response.status_code == 200 else {}
            if response.status_code != 200 or body.get("errors"):
                failures.append(f"{response.status_code} {response.text[:200]}")
            else:
                versions.append(body["data"]["recommendations"]["modelVersion"])
            await asyncio.sleep(0)

    async with running(create_app(make_settings(reload_interval=0.1))) as gql:
        assert (await gql.data('{ model { version } }'))["model"]["version"] == "v1"
        tasks = [asyncio.create_task(hammer(gql, u)) for u in ("3", "4", "stranger")]
        await asyncio.sleep(0.3)
        await anyio.to_thread.run_sync(lambda: publish_bundle(
            api_root, tiny_dataset, tiny_models(tiny_dataset), version="v2", weights={"popularity": 1.0, "als": 0.1}))
        for _ in range(100):
            if versions and versions[-1] == "v2":
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        stop.set()
        await asyncio.gather(*tasks)
        model = (await gql.data('{ model { version tunedWeights { signal weight } } }'))["model"]
        health = (await gql.http.get("/health")).json()
        metrics = (await gql.http.get("/metrics")).text
    assert failures == []
    assert "v1" in versions and versions[-1] == "v2"
    first_v2 = versions.index("v2")
    assert set(versions[first_v2:]) == {"v2"}  # switched once, never back
    assert model["version"] == "v2" and health["bundle"]["version"] == "v2"
    assert {w["signal"]: w["weight"] for w in model["tunedWeights"]}["POPULARITY"] == 1.0
    assert "hybridrec_bundle_reloads_total 1.0" in metrics and 'hybridrec_bundle_info{version="v2"} 1.0' in metrics


async def test_a_broken_bundle_is_not_served(make_settings, api_root) -> None:
    async with running(create_app(make_settings(reload_interval=0.1))) as gql:
        broken = api_root / "v9"
        broken.mkdir()
        (broken / "manifest.json").write_text("{ not json")
        os.symlink("v9", api_root / ".tmp-link")
        os.replace(api_root / ".tmp-link", api_root / "latest")
        for _ in range(50):
            health = (await gql.http.get("/health")).json()
            if health.get("last_reload_error"):
                break
            await asyncio.sleep(0.05)
        answer = await gql.data(Q, {"u": "3"})
    assert "v9" in health["last_reload_error"] and health["bundle"]["version"] == "v1"
    assert answer["recommendations"]["modelVersion"] == "v1"


async def test_answers_are_cached_per_bundle_version(make_settings, api_root, tiny_dataset) -> None:
    async with running(create_app(make_settings(reload_interval=0.1))) as gql:
        assert (await gql.post(Q, {"u": "3"})).headers["x-cache"] == "miss"
        assert (await gql.post(Q, {"u": "3"})).headers["x-cache"] == "hit"
        await anyio.to_thread.run_sync(lambda: publish_bundle(
            api_root, tiny_dataset, tiny_models(tiny_dataset), version="v2", weights={"popularity": 1.0}))
        for _ in range(100):
            fresh = await gql.post(Q, {"u": "3"})
            if fresh.json()["data"]["recommendations"]["modelVersion"] == "v2":
                break
            await asyncio.sleep(0.05)
    assert fresh.headers["x-cache"] == "miss"
