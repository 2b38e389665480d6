"""Interactions change the next answer at once, are durable across restarts, feed training, and can be
deleted. This module runs without Redis (the local log); test_api_redis.py repeats the story on Redis.
"""

from __future__ import annotations

import json

import pytest

from etl.events_log import EventLog, deleted_users, read_accepted_events, user_key
from graphql_api.app import create_app
from tests.api_helpers import RECS, running

pytest_plugins = ["tests.api_helpers"]

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"

RECORD = 'mutation($u: ID!, $i: ID!, $v: Float! = 5) { recordInteraction(userId: $u, itemId: $i, value: $v) ' \
         '{ __typename ... on InteractionRecorded { eventId userId itemId value timestamp } } }'
USER = 'query($u: ID!) { user(id: $u) { known onlineInteractions trainedInteractions ' \
       'recentHistory(first: 50) { source value timestamp item { id } } } }'


def ids(answer: dict) -> list[str]:
    """Item ids of a recommendations answer (its data, or the whole response body)."""
    data = answer.get("data", answer)
    return [i["item"]["id"] for i in data["recommendations"]["items"]]


async def test_interaction_changes_next_answer_and_drops_cache(make_settings) -> None:
    async with running(create_app(make_settings())) as gql:
        first = await gql.post(RECS, {"user": "3", "first": 5})
        again = await gql.post(RECS, {"user": "3", "first": 5})
        assert first.headers["x-cache"] == "miss" and again.headers["x-cache"] == "hit"
        top = ids(first.json())[0]
        recorded = (await gql.data(RECORD, {"u": "3", "i": top}))["recordInteraction"]
        after = await gql.post(RECS, {"user": "3", "first": 5})
    assert recorded["__typename"] == "InteractionRecorded" and recorded["itemId"] == top
    assert after.headers["x-cache"] == "miss"  # the cached answer for user 3 was dropped
    recs = after.json()["data"]["recommendations"]
    assert recs["userSource"] == "FOLDED_IN" and recs["onlineInteractions"] == 1
    assert top not in ids(after.json())  # now seen: excluded, and the rest re-ranked from the new history


async def test_other_users_cached_answers_survive(make_settings) -> None:
    async with running(create_app(make_settings())) as gql:
        await gql.post(RECS, {"user": "4"})
        await gql.data(RECORD, {"u": "3", "i": "2"})
        other = await gql.post(RECS, {"user": "4"})
    assert other.headers["x-cache"] == "hit"


async def test_unknown_user_is_folded_in_from_interactions(make_settings) -> None:
    async with running(create_app(make_settings())) as gql:
        cold = await gql.data(RECS, {"user": "newcomer"})
        batch = 'mutation($b: [InteractionInput!]!) { recordInteractions(batch: $b) { accepted eventIds rejected { index } } }'
        done = (await gql.data(batch, {"b": [{"userId": "newcomer", "itemId": i, "value": 4.5} for i in ("2", "4", "6")]}))
        warm = await gql.data(RECS, {"user": "newcomer"})
        user = (await gql.data(USER, {"u": "newcomer"}))["user"]
    assert cold["recommendations"]["userSource"] == "NO_HISTORY"
    assert done["recordInteractions"]["accepted"] == 3 and len(set(done["recordInteractions"]["eventIds"])) == 3
    r = warm["recommendations"]
    assert r["userSource"] == "FOLDED_IN" and r["userKnown"] is False and r["coldStart"] is True
    assert "folded in from 3 interactions" in r["coldStartReason"]
    assert not {"2", "4", "6"} & set(ids(warm)) and ids(warm) != ids(cold)
    assert user["onlineInteractions"] == 3 and user["known"] is False
    assert [h["item"]["id"] for h in user["recentHistory"]] == ["6", "4", "2"]  # newest first
    assert all(h["source"] == "ONLINE" and h["timestamp"] for h in user["recentHistory"])


async def test_interactions_survive_a_restart(make_settings, tmp_path) -> None:
    settings = make_settings()
    async with running(create_app(settings)) as gql:
        before = await gql.data(RECS, {"user": "3"})
        await gql.data(RECORD, {"u": "3", "i": ids(before)[0]})
        changed = await gql.data(RECS, {"user": "3"})
    assert ids(changed) != ids(before)
    async with running(create_app(settings)) as gql:  # a new app instance over the same events folder
        restarted = await gql.data(RECS, {"user": "3"})
        user = (await gql.data(USER, {"u": "3"}))["user"]
    assert ids(restarted) == ids(changed)
    assert restarted["recommendations"]["onlineInteractions"] == 1 and user["onlineInteractions"] == 1
    lines = (tmp_path / "events" / "events.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["item_id"] == ids(before)[0]


async def test_two_processes_sharing_the_log_see_each_other(make_settings) -> None:
    settings = make_settings()
    async with running(create_app(settings)) as a, running(create_app(settings)) as b:
        base = await b.post(RECS, {"user": "3"})
        await b.post(RECS, {"user": "3"})  # cached in b
        await a.data(RECORD, {"u": "3", "i": ids(base.json())[0]})
        seen_by_b = await b.post(RECS, {"user": "3"})
    assert seen_by_b.headers["x-cache"] == "miss"
    assert seen_by_b.json()["data"]["recommendations"]["onlineInteractions"] == 1


async def test_accepted_events_feed_the_trainer(make_settings, tmp_path) -> None:
    async with running(create_app(make_settings())) as gql:
        await gql.data(RECORD, {"u": "3", "i": "4", "v": 3.5})
        await gql.data(RECORD, {"u": "77", "i": "5"})
        await gql.data(RECORD, {"u": "3", "i": "nope"})  # rejected: not accepted, not logged
    frame = read_accepted_events(tmp_path / "events")
    assert list(frame.columns) == ["user_id", "item_id", "value", "timestamp", "accepted_at", "event_id"]
    assert frame[["user_id", "item_id"]].values.tolist() == [["3", "4"], ["77", "5"]]
    assert frame["value"].tolist() == [3.5, 5.0] and (frame["timestamp"] > 1_600_000_000).all()


async def test_delete_user_data(make_settings, tmp_path) -> None:
    events = tmp_path / "events"
    delete = 'mutation($u: ID!) { deleteUserData(userId: $u) { userId eventsRemoved cachedAnswersRemoved ' \
             'onlineStateRemoved trainedDataExcluded } }'
    async with running(create_app(make_settings())) as gql:
        trained = await gql.data(RECS, {"user": "3"})
        await gql.data(RECORD, {"u": "3", "i": "2"})
        await gql.data(RECORD, {"u": "3", "i": "4"})
        await gql.data(RECORD, {"u": "9", "i": "4"})
        await gql.post(RECS, {"user": "3"})  # cache an answer for 3
        report = (await gql.data(delete, {"u": "3"}))["deleteUserData"]
        after = await gql.data(RECS, {"user": "3"})
        user = (await gql.data(USER, {"u": "3"}))["user"]
        again = (await gql.data(delete, {"u": "3"}))["deleteUserData"]
    assert report == {"userId": "3", "eventsRemoved": 2, "cachedAnswersRemoved": 1, "onlineStateRemoved": True,
                      "trainedDataExcluded": True}
    # the bundle's trained data for 3 is no longer used: a cold start until retraining leaves them out
    r = after["recommendations"]
    assert r["userKnown"] is False and r["userSource"] == "NO_HISTORY" and ids(after) != ids(trained)
    assert user["known"] is False and user["onlineInteractions"] == 0 and user["recentHistory"] == []
    assert again["eventsRemoved"] == 0 and again["onlineStateRemoved"] is False
    frame = read_accepted_events(events)
    assert frame["user_id"].tolist() == ["9"]
    assert user_key(EventLog(events).salt, "3") in deleted_users(events)
    assert all(e.user_id != "3" for e in EventLog(events).read())


async def test_deletion_survives_restart_and_new_events_count_again(make_settings) -> None:
    settings = make_settings()
    async with running(create_app(settings)) as gql:
        await gql.data(RECORD, {"u": "3", "i": "2"})
        await gql.data('mutation { deleteUserData(userId: "3") { eventsRemoved } }')
    async with running(create_app(settings)) as gql:
        gone = await gql.data(RECS, {"user": "3"})
        await gql.data(RECORD, {"u": "3", "i": "6"})
        back = await gql.data(RECS, {"user": "3"})
    assert gone["recommendations"]["userSource"] == "NO_HISTORY"
    assert back["recommendations"]["userSource"] == "FOLDED_IN" and back["recommendations"]["onlineInteractions"] == 1
