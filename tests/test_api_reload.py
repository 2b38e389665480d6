"""Hot reload: publishing a bundle switches the running API to it, with no failed request."""

from __future__ import annotations

import asyncio
import os
import uuid

import anyio.to_thread
import fsspec
import pytest

from bench.tiny import publish_bundle
from graphql_api.app import create_app
from tests.api_helpers import running

pytest_plugins = ["tests.api_helpers"]

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"

Q = 'query($u: ID!) { recommendations(userId: $u, first: 5) { modelVersion variant items { score item { id } } } }'


async def test_publishing_a_bundle_switches_without_failed_requests(make_settings, api_root, tiny_dataset, tiny_models) -> None:
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
            api_root, tiny_dataset, tiny_models, version="v2", weights={"popularity": 1.0, "als": 0.1}))
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


async def test_answers_are_cached_per_bundle_version(make_settings, api_root, tiny_dataset, tiny_models) -> None:
    async with running(create_app(make_settings(reload_interval=0.1))) as gql:
        assert (await gql.post(Q, {"u": "3"})).headers["x-cache"] == "miss"
        assert (await gql.post(Q, {"u": "3"})).headers["x-cache"] == "hit"
        await anyio.to_thread.run_sync(lambda: publish_bundle(
            api_root, tiny_dataset, tiny_models, version="v2", weights={"popularity": 1.0}))
        for _ in range(100):
            fresh = await gql.post(Q, {"u": "3"})
            if fresh.json()["data"]["recommendations"]["modelVersion"] == "v2":
                break
            await asyncio.sleep(0.05)
    assert fresh.headers["x-cache"] == "miss"


@pytest.fixture(params=["memory", "file"])
def url_root(request, tmp_path):
    """A bundle root given as an fsspec URL: the in-process memory filesystem, or a file:// URL."""
    if request.param == "file":
        yield f"file://{tmp_path}/url-bundles"
        return
    url = f"memory://hybridrec-api-{uuid.uuid4().hex[:8]}/bundles"
    yield url
    fs, path = fsspec.core.url_to_fs(url)
    fs.rm(path.rsplit("/", 1)[0], recursive=True)


async def test_a_url_bundle_root_serves_and_hot_reloads(make_settings, url_root, tiny_dataset, tiny_models, tmp_path) -> None:
    models = tiny_models
    await anyio.to_thread.run_sync(lambda: publish_bundle(url_root, tiny_dataset, models, version="u1"))
    cache = tmp_path / "cache"
    app = create_app(make_settings(bundle_root=url_root, bundle_cache=cache, reload_interval=0.1))
    async with running(app) as gql:
        first = await gql.data(Q, {"u": "3"})
        health = (await gql.http.get("/health")).json()
        served_from = str(app.state.runtime.engine.bundle.path)
        await anyio.to_thread.run_sync(lambda: publish_bundle(
            url_root, tiny_dataset, models, version="u2", weights={"popularity": 1.0}))
        for _ in range(100):
            answer = await gql.data(Q, {"u": "3"})
            if answer["recommendations"]["modelVersion"] == "u2":
                break
            await asyncio.sleep(0.05)
        model = (await gql.data('{ model { version } }'))["model"]
        # a damaged pointer is reported and the current bundle goes on serving
        fs, path = fsspec.core.url_to_fs(url_root)
        fs.rm(f"{path}/latest")
        fs.pipe_file(f"{path}/latest", b"../../etc\n")
        for _ in range(50):
            damaged = (await gql.http.get("/health")).json()
            if damaged.get("last_reload_error"):
                break
            await asyncio.sleep(0.05)
        still = await gql.data(Q, {"u": "3"})
    assert "latest holds '../../etc'" in damaged["last_reload_error"] and damaged["bundle"]["version"] == "u2"
    assert still["recommendations"]["modelVersion"] == "u2"
    assert first["recommendations"]["modelVersion"] == "u1" and len(first["recommendations"]["items"]) == 5
    assert answer["recommendations"]["modelVersion"] == "u2" and model["version"] == "u2"
    assert health["bundle"]["version"] == "u1" and "path" not in health["bundle"]  # /health names no folders
    if url_root.startswith("memory://"):  # copied into the cache, memory-mapped from there
        assert served_from.startswith(str(cache)) and served_from.endswith("/u1")
    else:  # a file:// root is a local folder: served in place
        assert served_from == str(tmp_path / "url-bundles" / "u1") and not cache.exists()
