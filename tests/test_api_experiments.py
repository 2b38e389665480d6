"""Experiments through the API: the served arm and exposure id, outcomes joined to exposures, a
change of the experiments file picked up without a restart, and deletion of a user's exposures."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
import redis

from etl.events_log import EventLog
from graphql_api.app import create_app
from graphql_api.events import read_exposures
from hybrid.experiments import ArmSpec, Experiment, create_experiment, read_book, stop_experiment
from tests.api_helpers import running

pytest_plugins = ["tests.api_helpers"]
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


RECS = """query($u: ID!) { recommendations(userId: $u, first: 5) {
  variant experiment exposureId modelVersion items { item { id } } } }"""
RECORD = """mutation($u: ID!, $i: ID!, $v: Float!, $x: ID) {
  recordInteraction(userId: $u, itemId: $i, value: $v, exposureId: $x) {
    __typename ... on InteractionRecorded { eventId exposureId } } }"""
DELETE = """mutation($u: ID!) { deleteUserData(userId: $u) { eventsRemoved exposuresRemoved } }"""
USERS = [str(u) for u in range(40)]


def experiment(name: str = "pop-test") -> Experiment:
    return Experiment(name, {"tuned": 0.5, "pop_only": 0.5}, {"pop_only": ArmSpec(signals=("popularity",))})


async def wait_for(gql, user: str, want_experiment: str | None) -> dict:
    for _ in range(100):
        answer = (await gql.data(RECS, {"u": user}))["recommendations"]
        if answer["experiment"] == want_experiment:
            return answer
        await asyncio.sleep(0.05)
    raise AssertionError(f"the API never served experiment {want_experiment!r}; last answer {answer}")


async def test_experiment_change_is_served_without_restart_and_answers_carry_the_exposure(make_settings, api_root):
    settings = make_settings(reload_interval=0.1)
    async with running(create_app(settings)) as gql:
        before = (await gql.data(RECS, {"u": "3"}))["recommendations"]
        assert before["variant"] == "tuned" and before["experiment"] is None and before["exposureId"] is None

        book = create_experiment(api_root, experiment())
        await wait_for(gql, "3", "pop-test")
        served = {u: (await gql.data(RECS, {"u": u}))["recommendations"] for u in USERS}
        compiled = book.running.compile(("popularity", "als", "content"), {"popularity": 1, "als": 1, "content": 1})
        # sticky: each user gets the arm Variants.assign gives for the experiment's salt
        assert {u: a["variant"] for u, a in served.items()} == {u: compiled.assign(u) for u in USERS}
        assert {a["variant"] for a in served.values()} == {"tuned", "pop_only"}
        assert all(a["exposureId"] and a["experiment"] == "pop-test" for a in served.values())
        # a repeated request is answered from the cache and still carries its list's exposure id
        again = await gql.post(RECS, {"u": "5"})
        assert again.headers.get("x-cache") == "hit"
        assert again.json()["data"]["recommendations"]["exposureId"] == served["5"]["exposureId"]
        # an explanation without a variant is of the arm the user is served (pop_only: popularity alone)
        user = next(u for u, a in served.items() if a["variant"] == "pop_only")
        expl = (await gql.data('query($u: ID!, $i: ID!) { explain(userId: $u, itemId: $i) { ... on Explanation { '
                               'contributions { signal value } } } }',
                               {"u": user, "i": served[user]["items"][0]["item"]["id"]}))["explain"]
        assert {c["signal"] for c in expl["contributions"] if c["value"] != 0} == {"POPULARITY"}
        variants = {v["name"]: v["trafficShare"] for v in (await gql.data("{ variants { name trafficShare } }"))["variants"]}
        assert variants["tuned"] == 0.5 and variants["pop_only"] == 0.5

        stop_experiment(api_root, "pop-test")
        after = await wait_for(gql, "5", None)
        assert after["variant"] == "tuned" and after["exposureId"] is None
        metrics = (await gql.http.get("/metrics")).text

    logged = {x.exposure_id: x for x in read_exposures(settings.events_dir)}
    for user, answer in served.items():
        x = logged[answer["exposureId"]]
        assert (x.user_id, x.variant, x.experiment) == (user, answer["variant"], "pop-test")
        assert list(x.items) == [i["item"]["id"] for i in answer["items"]]
    assert len(logged) == len(USERS)  # the cached repeat was not logged twice
    pop_only = sum(a["variant"] == "pop_only" for a in served.values())
    assert f'hybridrec_experiment_exposures_total{{experiment="pop-test",variant="pop_only"}} {float(pop_only)}' in metrics
    assert [e.status for e in read_book(api_root).experiments] == ["stopped"]


async def test_record_interaction_joins_the_exposure_and_refuses_unknown_ids(make_settings, api_root):
    create_experiment(api_root, experiment())
    settings = make_settings()
    async with running(create_app(settings)) as gql:
        answer = (await gql.data(RECS, {"u": "7"}))["recommendations"]
        shown = [i["item"]["id"] for i in answer["items"]]
        x = answer["exposureId"]
        recorded = (await gql.data(RECORD, {"u": "7", "i": shown[1], "v": 5.0, "x": x}))["recordInteraction"]
        assert recorded["exposureId"] == x
        for bad_user, bad_id in (("7", "f" * 32), ("8", x)):  # made up, and another user's
            body = await gql(RECORD, {"u": bad_user, "i": shown[0], "v": 1.0, "x": bad_id})
            assert body["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT", "field": "exposureId"}, body
            assert "unknown exposure id" in body["errors"][0]["message"]
        # in a batch too, an id holds for its own user only, even after that user's use of it
        batch = [{"userId": "7", "itemId": shown[0], "exposureId": x}, {"userId": "8", "itemId": shown[0], "exposureId": x}]
        body = await gql("mutation($b: [InteractionInput!]!) { recordInteractions(batch: $b) { __typename } }",
                         {"b": batch})
        assert body["errors"][0]["extensions"]["field"] == "exposureId" and "'8'" in body["errors"][0]["message"]
        metrics = (await gql.http.get("/metrics")).text
    labels = f'{{experiment="pop-test",variant="{answer["variant"]}"}}'
    assert f"hybridrec_experiment_clicks_total{labels} 1.0" in metrics
    assert f"hybridrec_experiment_conversions_total{labels} 1.0" in metrics  # 5.0 >= the default 4.0
    assert f"hybridrec_experiment_outcome_ndcg_total{labels} 0.6309" in metrics  # rank 2: 1/log2(3)
    events = list(EventLog(settings.events_dir).read())
    assert [(e.user_id, e.exposure_id) for e in events] == [("7", x)]


@pytest.mark.parametrize("backend", ["local", "local+redis", "redis"])
async def test_delete_user_data_removes_the_users_exposures(make_settings, api_root, tmp_path, backend, request):
    create_experiment(api_root, experiment())
    redis_url = request.getfixturevalue("redis_url") if "redis" in backend else None
    settings = make_settings(redis_url=redis_url, events_dir=None if backend == "redis" else tmp_path / "events")
    async with running(create_app(settings)) as gql:
        mine = [(await gql.data(RECS, {"u": "9"}))["recommendations"]["exposureId"]]
        await gql.data(RECORD, {"u": "9", "i": "1", "v": 1.0, "x": mine[0]})  # changes the list: a second exposure
        mine.append((await gql.data(RECS, {"u": "9"}))["recommendations"]["exposureId"])
        other = (await gql.data(RECS, {"u": "10"}))["recommendations"]["exposureId"]
        assert len(set(mine)) == 2
        deleted = (await gql.data(DELETE, {"u": "9"}))["deleteUserData"]
        assert deleted["exposuresRemoved"] == 2
        body = await gql(RECORD, {"u": "9", "i": "1", "v": 1.0, "x": mine[0]})
        assert body["errors"][0]["extensions"]["field"] == "exposureId"
    left = [x.exposure_id for x in read_exposures(settings.events_dir, redis_url=redis_url)]
    assert left == [other]
    if settings.events_dir is not None:
        lines = Path(settings.events_dir, "exposures.jsonl").read_text().splitlines()
        assert [json.loads(line)["user_id"] for line in lines] == ["10"]
    if redis_url:
        client = redis.Redis.from_url(redis_url)
        stream = [json.loads(f[b"x"])["user_id"] for _, f in client.xrange("hybridrec:exposures")]
        assert stream == ["10"] and not client.exists("hybridrec:u:9:exposures")
        client.close()


def test_two_uvicorn_workers_pick_up_the_experiment_and_join_each_others_exposures(module_api_root, tmp_path):
    """Through `hybridrec serve --workers 2`: the split arrives without a restart in every worker, and
    every exposure id is accepted wherever the interaction lands (each request opens a connection,
    which the kernel gives either worker: a list served by one is often joined by the other, which
    finds it by tailing the shared exposure log)."""
    import httpx

    from bench.processes import start_uvicorn

    env = {"HYBRIDREC_BUNDLE_ROOT": str(module_api_root), "HYBRIDREC_EVENTS_DIR": str(tmp_path / "events"),
           "HYBRIDREC_RELOAD_INTERVAL": "0.2"}
    server = start_uvicorn(env, tmp_path / "uvicorn.log", workers=2)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            def post(query: str, variables: dict) -> dict:
                # a new connection per request, so that the kernel spreads them over both workers
                body = http.post("/graphql", json={"query": query, "variables": variables},
                                 headers={"connection": "close"}).json()
                assert not body.get("errors"), body
                return body["data"]

            create_experiment(module_api_root, experiment("uvicorn-test"))
            deadline = time.monotonic() + 30
            pending = set(USERS[:20])
            answers: dict[str, dict] = {}
            while pending and time.monotonic() < deadline:  # every worker serves the split (within its poll)
                for u in sorted(pending):
                    answer = post(RECS, {"u": u})["recommendations"]
                    if answer["experiment"] == "uvicorn-test":
                        answers[u] = answer
                        pending.discard(u)
                time.sleep(0.1)
            assert not pending, f"users never served the experiment: {sorted(pending)}"
            for u, answer in answers.items():
                item = answer["items"][0]["item"]["id"]
                recorded = post(RECORD, {"u": u, "i": item, "v": 4.0, "x": answer["exposureId"]})["recordInteraction"]
                assert recorded["exposureId"] == answer["exposureId"]
            stop_experiment(module_api_root, "uvicorn-test")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                latest = [post(RECS, {"u": u})["recommendations"] for u in USERS[:6]]
                if all(a["experiment"] is None and a["variant"] == "tuned" for a in latest):
                    break
                time.sleep(0.1)
            else:
                raise AssertionError(f"the stop never reached every worker: {latest}")
    finally:
        server.stop()
    logged = {x.user_id for x in read_exposures(tmp_path / "events") if x.experiment == "uvicorn-test"}
    assert logged == set(answers)


async def test_a_broken_experiments_file_keeps_the_last_good_split(make_settings, api_root):
    create_experiment(api_root, experiment())
    async with running(create_app(make_settings(reload_interval=0.1))) as gql:
        assert (await gql.data(RECS, {"u": "3"}))["recommendations"]["experiment"] == "pop-test"
        (api_root / "experiments.json").write_text('{"format": 1, "experiments": [{"name": "x"}]}')
        for _ in range(100):
            health = (await gql.http.get("/health")).json()
            if health.get("last_experiment_error"):
                break
            await asyncio.sleep(0.05)
        assert "experiments.json" in health["last_experiment_error"] and health["experiment"] == "pop-test@1"
        assert str(api_root) not in health["last_experiment_error"]  # /health is public: no paths
        assert (await gql.data(RECS, {"u": "3"}))["recommendations"]["experiment"] == "pop-test"


def test_experiment_definitions_are_checked() -> None:
    with pytest.raises(ValueError, match="at least two arms"):
        Experiment("one", {"tuned": 1.0})
    with pytest.raises(ValueError, match="control 'tuned' has no traffic share"):
        Experiment("e", {"a": 1, "b": 1}, {"a": ArmSpec(signals=("als",)), "b": ArmSpec(signals=("content",))})
    with pytest.raises(ValueError, match="finite and > 0"):
        Experiment("e", {"tuned": 1, "als": float("nan")})
    with pytest.raises(ValueError, match="not both or neither"):
        ArmSpec(weights={"als": 1}, signals=("als",))
    with pytest.raises(ValueError, match="signals \\['graph'\\] are not in the bundle"):
        Experiment("e", {"tuned": 1, "g": 1}, {"g": ArmSpec(signals=("graph",))}).compile(("als",), {"als": 1.0})
