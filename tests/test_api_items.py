"""``upsertItems`` and the served catalogue: admin only, validated, idempotent, durable, priced; an
added item is searchable, similar-to, recommendable and recordable at once, on every replica
within a second (in-process apps sharing Redis, and uvicorn workers sharing an events folder),
after a restart and across a bundle hot swap; the answer cache never serves the old catalogue."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import pytest

from bench.processes import start_uvicorn
from bench.tiny import publish_bundle
from etl.items_log import ITEMS_FILE, read_table
from graphql_api.app import create_app
from graphql_api.settings import Limits
from tests.api_helpers import GQL, running

pytest_plugins = ["tests.api_helpers"]
pytestmark = [pytest.mark.anyio, pytest.mark.timeout(300)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


UPSERT = """mutation($items: [ItemInput!]!) {
  upsertItems(items: $items) { added updated unchanged served modelVersion items { id title genres tags year change } }
}"""
ITEM = 'query($id: ID!) { item(id: $id) { __typename ... on Item { id title genres tags year popularity } } }'
SEARCH = 'query($t: String!) { searchItems(title: $t, first: 5) { id title } }'
SIMILAR = 'query($id: ID!) { similarItems(itemId: $id, first: 5) { __typename ... on SimilarItems { items { item { id } } } } }'
ALL_RECS = 'query($u: ID!) { recommendations(userId: $u, first: 100) { onlineInteractions items { item { id } } } }'
RECORD = 'mutation($u: ID!, $i: ID!) { recordInteraction(userId: $u, itemId: $i, value: 5) { __typename } }'
NEW = {"id": "new-1", "title": "Zebra Crossing", "genres": ["Comedy", "Action"], "tags": ["funny"], "year": 2026}
ADMIN = {"x-api-key": "admin-key-0123456789"}
WRITER = {"x-api-key": "writer-key-0123456789"}


def keyed(make_settings: Any, **overrides: Any) -> Any:
    return make_settings(api_keys=frozenset({WRITER["x-api-key"]}), admin_keys=frozenset({ADMIN["x-api-key"]}),
                         **overrides)


def rec_ids(data: dict[str, Any]) -> list[str]:
    return [i["item"]["id"] for i in data["recommendations"]["items"]]


async def served(gql: GQL, item_id: str = "new-1") -> bool:
    found = await gql.data(ITEM, {"id": item_id}, headers=ADMIN)
    return found["item"]["__typename"] == "Item"


async def seconds_until_served(gql: GQL, item_id: str = "new-1", limit: float = 5.0) -> float:
    started = time.monotonic()
    while not await served(gql, item_id):
        if time.monotonic() - started > limit:
            raise AssertionError(f"{item_id} not served after {limit}s")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


WARM = {"id": "warm-up", "title": "Warm Up"}
"""Added and awaited (generously) before a timed addition: a process's first catalogue build also
imports and compiles what later builds reuse, and the one-second promise is about the later ones."""


# -- the mutation -------------------------------------------------------------------------------------------

async def test_upsert_items_needs_an_admin_key(make_settings, tmp_path: Path) -> None:
    async with running(create_app(keyed(make_settings))) as gql:
        anon = (await gql(UPSERT, {"items": [NEW]}))["errors"][0]
        writer = (await gql(UPSERT, {"items": [NEW]}, headers=WRITER))["errors"][0]
        admin = await gql.data(UPSERT, {"items": [NEW]}, headers=ADMIN)
    assert anon["extensions"]["code"] == writer["extensions"]["code"] == "FORBIDDEN"
    assert "admin key" in writer["message"]
    assert admin["upsertItems"]["added"] == 1


async def test_a_bad_row_rejects_the_batch_and_keeps_what_was_accepted(make_settings, tmp_path: Path) -> None:
    settings = keyed(make_settings)
    async with running(create_app(settings)) as gql:
        await gql.data(UPSERT, {"items": [NEW]}, headers=ADMIN)
        log = (tmp_path / "events" / ITEMS_FILE).read_bytes()
        body = await gql(UPSERT, {"items": [{"id": "fine", "title": "Fine"}, {**NEW, "title": "Changed", "year": 3000}]},
                         headers=ADMIN)
        many = await gql(UPSERT, {"items": [{"id": f"i{k}", "title": "T"} for k in range(101)]}, headers=ADMIN)
        still = await gql.data(ITEM, {"id": "new-1"})
        fine = await gql.data(ITEM, {"id": "fine"})
    error = body["errors"][0]
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "year", "row": "1"}, error
    assert error["message"] == "row 1: year must be between 1800 and 2100, got 3000"
    assert many["errors"][0]["extensions"]["field"] == "items" and "at most 100" in many["errors"][0]["message"]
    assert (tmp_path / "events" / ITEMS_FILE).read_bytes() == log, "a refused batch writes nothing"
    assert still["item"]["title"] == "Zebra Crossing" and fine["item"]["__typename"] == "ItemNotFound"


async def test_upserts_are_idempotent_and_update_metadata(make_settings, tmp_path: Path) -> None:
    async with running(create_app(keyed(make_settings))) as gql:
        first = (await gql.data(UPSERT, {"items": [NEW]}, headers=ADMIN))["upsertItems"]
        size = (tmp_path / "events" / ITEMS_FILE).stat().st_size
        again = (await gql.data(UPSERT, {"items": [NEW]}, headers=ADMIN))["upsertItems"]
        assert (tmp_path / "events" / ITEMS_FILE).stat().st_size == size
        renamed = (await gql.data(UPSERT, {"items": [{**NEW, "title": "Zebra Crossing II", "tags": []}]},
                                  headers=ADMIN))["upsertItems"]
        trained = (await gql.data(UPSERT, {"items": [{"id": "4", "title": "Movie 4, Director's Cut", "year": 1994}]},
                                  headers=ADMIN))["upsertItems"]
        item = (await gql.data(ITEM, {"id": "new-1"}))["item"]
        four = (await gql.data(ITEM, {"id": "4"}))["item"]
    assert (first["added"], first["updated"], first["unchanged"], first["served"]) == (1, 0, 0, True)
    assert first["items"] == [{**NEW, "change": "ADDED"}] and first["modelVersion"] == "v1"
    assert (again["added"], again["updated"], again["unchanged"]) == (0, 0, 1)
    assert again["items"][0]["change"] == "UNCHANGED"
    assert (renamed["updated"], renamed["items"][0]["change"]) == (1, "UPDATED")
    assert (trained["added"], trained["updated"]) == (0, 1), "an id the bundle holds is an update"
    assert item == {"__typename": "Item", "id": "new-1", "title": "Zebra Crossing II", "genres": ["Comedy", "Action"],
                    "tags": [], "year": 2026, "popularity": 0}
    assert four["title"] == "Movie 4, Director's Cut" and four["year"] == 1994


async def test_upsert_items_is_priced(make_settings) -> None:
    async with running(create_app(make_settings(limits=Limits(max_cost=2000)))) as gql:
        small = await gql(UPSERT, {"items": [NEW]})
        big = await gql(UPSERT, {"items": [{"id": f"i{k}", "title": "T"} for k in range(100)]})
    assert not small.get("errors") and 1000 < small["extensions"]["cost"]["requested"] < 2000
    assert big["errors"][0]["extensions"]["code"] == "QUERY_TOO_COMPLEX", big["errors"]
    assert big["errors"][0]["extensions"]["value"] > 3000, "priced per item of the batch"


# -- serving ------------------------------------------------------------------------------------------------

async def test_an_added_item_is_served_everywhere_at_once(make_settings) -> None:
    async with running(create_app(make_settings())) as gql:
        before = await gql.post(ALL_RECS, {"u": "3"})
        assert before.headers["x-cache"] == "miss" and "new-1" not in rec_ids(before.json()["data"])
        assert (await gql.post(ALL_RECS, {"u": "3"})).headers["x-cache"] == "hit"
        done = (await gql.data(UPSERT, {"items": [NEW]}))["upsertItems"]
        after = await gql.post(ALL_RECS, {"u": "3"})
        search = await gql.data(SEARCH, {"t": "zebra"})
        similar = await gql.data(SIMILAR, {"id": "new-1"})
        recorded = await gql.data(RECORD, {"u": "3", "i": "new-1"})
        folded = await gql.data(ALL_RECS, {"u": "3"})
        health = (await gql.http.get("/health")).json()
    assert done["served"] is True
    assert health["catalogue"]["added_items"] == 1 and "last_items_error" not in health
    assert after.headers["x-cache"] == "miss", "a cached answer of the old catalogue must not be served"
    assert "new-1" in rec_ids(after.json()["data"]), "every unseen item is ranked with first: 100"
    assert [i["id"] for i in search["searchItems"]] == ["new-1"]
    assert similar["similarItems"]["__typename"] == "SimilarItems" and similar["similarItems"]["items"]
    assert recorded["recordInteraction"]["__typename"] == "InteractionRecorded"
    assert folded["recommendations"]["onlineInteractions"] == 1 and "new-1" not in rec_ids(folded)


async def test_added_items_survive_a_restart_and_a_new_bundle(make_settings, api_root, tiny_dataset, tiny_models) -> None:
    settings = make_settings(reload_interval=0.1)
    async with running(create_app(settings)) as gql:
        await gql.data(UPSERT, {"items": [NEW]})
    async with running(create_app(settings)) as gql:
        assert await served(gql), "added items are read again at start"
        await anyio.to_thread.run_sync(lambda: publish_bundle(api_root, tiny_dataset, tiny_models,
                                                              version="v2"))
        deadline = time.monotonic() + 30
        while (await gql.data('{ model { version } }'))["model"]["version"] != "v2":
            assert time.monotonic() < deadline, "v2 was not loaded"
            await asyncio.sleep(0.05)
        assert await served(gql), "a hot-swapped bundle is served with the added items"
        assert [i["id"] for i in (await gql.data(SEARCH, {"t": "zebra"}))["searchItems"]] == ["new-1"]


async def test_a_catalogue_that_cannot_be_built_does_not_fail_requests(make_settings, monkeypatch) -> None:
    from graphql_api.engine import Engine

    def broken(self: Engine, additions: Any) -> Engine:
        raise RuntimeError("cannot map these items")

    async with running(create_app(make_settings())) as gql:
        before = await gql.data(ALL_RECS, {"u": "3"})
        monkeypatch.setattr(Engine, "with_items", broken)
        done = (await gql.data(UPSERT, {"items": [NEW]}))["upsertItems"]
        after = await gql.data(ALL_RECS, {"u": "3"})
        health = (await gql.http.get("/health")).json()
        monkeypatch.undo()
        await gql.data(UPSERT, {"items": [{"id": "new-2", "title": "Second"}]})  # a new catalogue: built again
        healed = (await gql.http.get("/health")).json()
        both = [await served(gql, "new-1"), await served(gql, "new-2")]
    assert (done["added"], done["served"]) == (1, False), "durable, but not served yet"
    assert rec_ids(after) == rec_ids(before)
    assert "cannot map these items" in health["last_items_error"] and health["status"] == "ok"
    assert "last_items_error" not in healed and both == [True, True]


async def test_an_interaction_on_an_item_added_elsewhere_is_accepted_before_the_poll(make_settings,
                                                                                     tmp_path: Path) -> None:
    settings = make_settings(items_poll_interval=0)  # no poll: only the interaction makes it look
    async with running(create_app(settings)) as gql:
        from graphql_api.items import upsert_items, validate_items

        upsert_items(validate_items([NEW]), tmp_path / "events")  # the CLI's way, from another process
        assert not await served(gql)
        recorded = await gql.data(RECORD, {"u": "3", "i": "new-1"})
        assert recorded["recordInteraction"]["__typename"] == "InteractionRecorded"
        assert await served(gql)
        unknown = await gql.data(RECORD, {"u": "3", "i": "never-added"})
    assert unknown["recordInteraction"]["__typename"] == "ItemNotFound"


@pytest.mark.slow
async def test_replicas_sharing_redis_serve_an_item_within_a_second(make_settings, redis_url) -> None:
    settings = make_settings(redis_url=redis_url, events_dir=None)
    async with running(create_app(settings)) as a, running(create_app(settings)) as b:
        assert (await b.post(ALL_RECS, {"u": "3"})).headers["x-cache"] == "miss"
        await a.data(UPSERT, {"items": [WARM]})
        await seconds_until_served(b, WARM["id"], limit=30)
        await a.data(UPSERT, {"items": [NEW]})
        waited = await seconds_until_served(b)
        after = await b.post(ALL_RECS, {"u": "3"})
    assert waited < 1.0, f"replica b served the item after {waited:.2f}s"
    assert "new-1" in rec_ids(after.json()["data"])
    assert set(read_table(redis_url=redis_url)) == {"warm-up", "new-1"}
    async with running(create_app(settings)) as c:  # a new replica (or a restart) reads Redis
        assert await served(c)


@pytest.mark.slow
async def test_uvicorn_workers_sharing_an_events_folder_serve_an_item_within_a_second(
        make_settings, api_root: Path, tmp_path: Path) -> None:
    env = {"HYBRIDREC_BUNDLE_ROOT": str(api_root), "HYBRIDREC_EVENTS_DIR": str(tmp_path / "events"),
           "HYBRIDREC_ACCESS_LOG": "false"}
    server = await anyio.to_thread.run_sync(lambda: start_uvicorn(env, tmp_path / "uvicorn.log", workers=2))
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            gql = GQL(http)
            await gql.data(UPSERT, {"items": [WARM]})
        for _ in range(16):  # every worker has built its first catalogue
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
                await seconds_until_served(GQL(http), WARM["id"], limit=30)
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            gql = GQL(http)
            added = time.monotonic()
            assert (await gql.data(UPSERT, {"items": [NEW]}))["upsertItems"]["served"] is True
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - added)))
        answers = []
        for _ in range(16):  # a new connection each: the kernel spreads them over both workers
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
                answers.append(await served(GQL(http)))
    finally:
        await anyio.to_thread.run_sync(server.stop)
    assert all(answers), f"{answers.count(False)} of 16 answers a second later lacked the item"


@pytest.mark.slow
async def test_items_added_while_redis_is_down_reach_it_when_it_is_back(make_settings, redis_server, redis_url,
                                                                       tmp_path: Path) -> None:
    settings = make_settings(redis_url=redis_url)  # the events folder and Redis together
    elsewhere = make_settings(redis_url=redis_url, events_dir=tmp_path / "other-host")  # its own folder
    async with running(create_app(settings)) as gql, running(create_app(elsewhere)) as other:
        await gql.data(UPSERT, {"items": [{"id": "before", "title": "Before The Outage"}]})
        await seconds_until_served(other, "before")
        redis_server.stop()
        try:
            done = (await gql.data(UPSERT, {"items": [NEW]}))["upsertItems"]
            assert (done["added"], done["served"]) == (1, True)
            await asyncio.sleep(0.5)  # polls that find Redis down
            assert await served(other, "before"), "what Redis held stays served while it is down"
        finally:
            redis_server.start()
        deadline = time.monotonic() + 20
        while "new-1" not in await anyio.to_thread.run_sync(lambda: read_table(redis_url=redis_url)):
            assert time.monotonic() < deadline, "the item was not copied into Redis"
            await gql.http.get("/health")  # a probe that finds Redis back replays what it missed
            await asyncio.sleep(0.1)
        await seconds_until_served(other, "new-1")
    assert set(read_table(tmp_path / "events")) == {"before", "new-1"}
    assert not read_table(tmp_path / "other-host"), "the other host learned it through Redis"


@pytest.mark.slow
async def test_redis_only_refuses_items_while_redis_is_down(make_settings, redis_server, redis_url) -> None:
    settings = make_settings(redis_url=redis_url, events_dir=None)
    async with running(create_app(settings)) as gql:
        redis_server.stop()
        try:
            body = await gql(UPSERT, {"items": [NEW]})
        finally:
            redis_server.start()
    assert body["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE", body


@pytest.mark.slow
async def test_uvicorn_replicas_sharing_redis_serve_an_item_within_a_second(api_root: Path, redis_url: str,
                                                                           tmp_path: Path) -> None:
    env = {"HYBRIDREC_BUNDLE_ROOT": str(api_root), "HYBRIDREC_REDIS_URL": redis_url, "HYBRIDREC_ACCESS_LOG": "false"}
    servers = [await anyio.to_thread.run_sync(lambda k=k: start_uvicorn(env, tmp_path / f"replica-{k}.log", plain=True))
               for k in range(2)]
    try:
        async with httpx.AsyncClient(base_url=servers[0].url, timeout=60) as a, \
                httpx.AsyncClient(base_url=servers[1].url, timeout=60) as b:
            assert not await served(GQL(b))
            await GQL(a).data(UPSERT, {"items": [WARM]})
            await seconds_until_served(GQL(b), WARM["id"], limit=30)
            await GQL(a).data(UPSERT, {"items": [NEW]})
            waited = await seconds_until_served(GQL(b))
    finally:
        for server in servers:
            await anyio.to_thread.run_sync(server.stop)
    assert waited < 1.0, f"the other replica served the item after {waited:.2f}s"
