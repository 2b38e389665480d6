"""With Redis (a real redis-server on a free port): shared state between replicas, durability, and an
API that keeps answering when Redis goes away mid-run and recovers when it is back.
"""

from __future__ import annotations

import asyncio

import pytest

from etl.events_log import deleted_users, erasure_salt, read_accepted_events, user_key
from graphql_api.app import create_app
from tests.api_helpers import RECS, running

pytest_plugins = ["tests.api_helpers"]
pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


RECORD = 'mutation($u: ID!, $i: ID!) { recordInteraction(userId: $u, itemId: $i, value: 4) ' \
         '{ __typename ... on InteractionRecorded { eventId } } }'


def ids(body: dict) -> list[str]:
    data = body.get("data", body)
    return [i["item"]["id"] for i in data["recommendations"]["items"]]


async def test_replicas_share_events_and_cached_answers(make_settings, redis_url) -> None:
    settings = make_settings(redis_url=redis_url, events_dir=None)
    async with running(create_app(settings)) as a, running(create_app(settings)) as b:
        first = await a.post(RECS, {"user": "3"})
        from_b = await b.post(RECS, {"user": "3"})
        assert first.headers["x-cache"] == "miss" and from_b.headers["x-cache"] == "hit"
        await b.data(RECORD, {"u": "3", "i": ids(first.json())[0]})
        after = await a.post(RECS, {"user": "3"})
    assert after.headers["x-cache"] == "miss"
    recs = after.json()["data"]["recommendations"]
    assert recs["onlineInteractions"] == 1 and ids(first.json())[0] not in ids(after.json())


async def test_events_in_redis_survive_an_api_restart_and_feed_training(make_settings, redis_url) -> None:
    settings = make_settings(redis_url=redis_url, events_dir=None)
    async with running(create_app(settings)) as gql:
        base = await gql.data(RECS, {"user": "3"})
        event = (await gql.data(RECORD, {"u": "3", "i": ids(base)[0]}))["recordInteraction"]["eventId"]
        changed = await gql.data(RECS, {"user": "3"})
    async with running(create_app(settings)) as gql:
        restarted = await gql.data(RECS, {"user": "3"})
    assert ids(restarted) == ids(changed) != ids(base)
    frame = read_accepted_events(redis_url=redis_url)
    assert frame["event_id"].tolist() == [event] and frame["item_id"].tolist() == [ids(base)[0]]


async def test_delete_user_data_in_redis(make_settings, redis_url, tmp_path) -> None:
    settings = make_settings(redis_url=redis_url)  # Redis and the local log together
    async with running(create_app(settings)) as gql:
        await gql.data(RECORD, {"u": "3", "i": "2"})
        await gql.data(RECORD, {"u": "8", "i": "2"})
        await gql.post(RECS, {"user": "3"})
        report = (await gql.data('mutation { deleteUserData(userId: "3") { eventsRemoved cachedAnswersRemoved '
                                 'onlineStateRemoved } }'))["deleteUserData"]
        after = await gql.data(RECS, {"user": "3"})
    # one event, held in both the log and the stream, counts once
    assert report == {"eventsRemoved": 1, "cachedAnswersRemoved": 1, "onlineStateRemoved": True}
    assert after["recommendations"]["userSource"] == "NO_HISTORY"
    assert read_accepted_events(redis_url=redis_url)["user_id"].tolist() == ["8"]
    assert read_accepted_events(tmp_path / "events", redis_url=redis_url)["user_id"].tolist() == ["8"]
    # keyed with the salt the API used: the events folder's, as both stores are configured
    assert user_key(erasure_salt(tmp_path / "events", redis_url=redis_url), "3") in deleted_users(redis_url=redis_url)


async def test_redis_stopped_mid_run_then_back(make_settings, redis_server, redis_url) -> None:
    settings = make_settings(redis_url=redis_url)
    async with running(create_app(settings)) as gql:
        warm = await gql.post(RECS, {"user": "3"})
        assert (await gql.post(RECS, {"user": "3"})).headers["x-cache"] == "hit"
        assert (await gql.http.get("/health")).json()["redis"] == "up"

        redis_server.stop()
        down = [await gql.post(RECS, {"user": u}) for u in ("3", "4", "3")]
        for response in down:  # answers keep coming, uncached, without errors
            assert response.status_code == 200 and "errors" not in response.json()
            assert "x-cache" not in response.headers
        assert ids(down[0].json()) == ids(warm.json())
        health = await gql.http.get("/health")
        assert health.status_code == 200 and health.json()["redis"] == "down" and health.json()["status"] == "degraded"
        # an interaction is still accepted (the local log holds it) and reflected at once
        recorded = await gql.data(RECORD, {"u": "3", "i": ids(warm.json())[0]})
        assert recorded["recordInteraction"]["__typename"] == "InteractionRecorded"
        moved = await gql.data(RECS, {"user": "3"})
        assert moved["recommendations"]["onlineInteractions"] == 1

        redis_server.start()
        for _ in range(50):
            if (await gql.http.get("/health")).json()["redis"] == "up":
                break
            await asyncio.sleep(0.1)
        assert (await gql.http.get("/health")).json()["redis"] == "up"
        for _ in range(50):  # the queued event is replayed into Redis
            if len(read_accepted_events(redis_url=redis_url)):
                break
            await asyncio.sleep(0.1)
        assert len(read_accepted_events(redis_url=redis_url)) == 1
        first = await gql.post(RECS, {"user": "3"})
        second = await gql.post(RECS, {"user": "3"})
    assert first.status_code == second.status_code == 200
    assert second.headers["x-cache"] == "hit"  # caching works again
    assert first.json()["data"]["recommendations"]["onlineInteractions"] == 1


async def test_redis_only_refuses_events_while_down_but_keeps_answering(make_settings, redis_server, redis_url) -> None:
    settings = make_settings(redis_url=redis_url, events_dir=None)
    async with running(create_app(settings)) as gql:
        await gql.data(RECS, {"user": "3"})
        redis_server.stop()
        try:
            answer = await gql.post(RECS, {"user": "3"})
            refused = await gql(RECORD, {"u": "3", "i": "2"})
        finally:
            redis_server.start()
    assert answer.status_code == 200 and "errors" not in answer.json()
    err = refused["errors"][0]
    assert err["extensions"]["code"] == "SERVICE_UNAVAILABLE" and "unavailable" in err["message"]


async def test_rate_limit_is_shared_through_redis(make_settings, redis_url) -> None:
    """Buckets of cost points (graphql_api.cost) in Redis, shared by the replicas: one holds four
    requests of `{ model { version } }` and a half (cached answers are charged the same price)."""
    from graphql import parse

    from graphql_api.cost import DocumentCost
    from graphql_api.schema import schema

    price = DocumentCost(parse('{ model { version } }'), schema._schema).requested()
    settings = make_settings(redis_url=redis_url, rate_limit=0.5, rate_burst=price * 9 // 2, api_keys=frozenset({"k"}))
    headers = {"x-api-key": "k"}
    async with running(create_app(settings)) as a, running(create_app(settings)) as b:
        answers = []
        for replica in (a, b, a, b, a, b):
            answers.append(await replica.post('{ model { version } }', headers=headers))
    assert [r.status_code for r in answers] == [200, 200, 200, 200, 429, 429]
    left = [int(r.headers["x-ratelimit-remaining"]) for r in answers]
    assert left[0] >= price * 9 // 2 - price - 1 and left[3] < price and left[4] == left[3]


async def test_learned_events_leave_the_stream_and_the_user_lists(make_settings, redis_url) -> None:
    """Once every retained bundle learned an event, its online copies go: the stream entry and the
    user's list item; the others stay."""
    import redis as sync_redis

    from etl.events_log import RedisKeys
    from etl.events_log import trim_learned

    settings = make_settings(redis_url=redis_url, events_dir=None)
    async with running(create_app(settings)) as gql:
        for item in ("2", "4", "6"):
            await gql.data(RECORD, {"u": "3", "i": item})
        await gql.data(RECORD, {"u": "8", "i": "2"})
        for item in ("8", "10"):
            await gql.data(RECORD, {"u": "3", "i": item})
    events = read_accepted_events(redis_url=redis_url)
    learned = set(events["event_id"][events["item_id"].isin(["2", "6"])])  # 3's '2' and '6', 8's '2'
    keys = RedisKeys(settings.redis_prefix)
    r = sync_redis.Redis.from_url(redis_url)
    try:
        assert r.xlen(keys.stream) == 6 and r.llen(keys.user("3", "events")) == 5
        assert trim_learned(redis_url=redis_url, event_ids=learned) == 3
        assert r.xlen(keys.stream) == 3
        assert [item.split(b"|", 1)[0] for item in r.lrange(keys.user("3", "events"), 0, -1)] == \
            [sid for sid, _ in r.xrange(keys.stream)]
        assert r.llen(keys.user("8", "events")) == 0
    finally:
        r.close()
    assert read_accepted_events(redis_url=redis_url)["item_id"].tolist() == ["4", "8", "10"]


async def test_deletion_purges_every_stream_entry_of_the_user(make_settings, redis_url) -> None:
    """More events than the fold-in reads (HISTORY_CAP): the deletion still finds every one."""
    settings = make_settings(redis_url=redis_url, events_dir=None, history_cap=3)
    async with running(create_app(settings)) as gql:
        for item in ("2", "4", "6", "8", "10"):
            await gql.data(RECORD, {"u": "3", "i": item})
        await gql.data(RECORD, {"u": "8", "i": "2"})
        report = (await gql.data('mutation { deleteUserData(userId: "3") { eventsRemoved } }'))["deleteUserData"]
    assert report == {"eventsRemoved": 5}
    assert read_accepted_events(redis_url=redis_url)["user_id"].tolist() == ["8"]


async def test_an_event_replayed_after_the_users_deletion_is_not_added(make_settings, redis_url) -> None:
    """Replicas A and B, Redis down: A queues an event of user 3, B records 3's deletion; Redis comes
    back and B's deletion is replayed first. A's replay must not bring the event back."""
    import time

    from etl.events_log import Event
    from graphql_api.metrics import Metrics
    from graphql_api.store import Store

    settings = make_settings(redis_url=redis_url, events_dir=None)
    a, b = Store(settings, Metrics()), Store(settings, Metrics())
    await a.start()
    await b.start()
    try:
        queued = Event("3", "2", 4.0, 1, accepted_at=time.time() - 5)  # accepted while Redis was down
        await b.delete_user("3")
        later = Event("3", "4", 4.0, 2)
        await a._redis_add([queued])  # the replay (Store._flush)
        await a.record([later])  # a new event after the deletion: the same id as a new user
    finally:
        await a.close()
        await b.close()
    assert read_accepted_events(redis_url=redis_url)["item_id"].tolist() == ["4"]
