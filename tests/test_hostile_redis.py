"""No acknowledged write is lost when Redis is killed (SIGKILL), in every mode the server accepts:
Redis-only refuses writes unless Redis keeps an append-only file; with one (appendfsync everysec, as
docker-compose.yml runs it) or with a local event log beside a stock Redis, every interaction it
acknowledged and every deletion survives. Real redis-server and uvicorn processes on loopback."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.processes import RedisServer, Uvicorn, start_uvicorn

pytest_plugins = ["tests.api_helpers"]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

KEY = "redis-test-key-00000001"
ADMIN = "redis-admin-key-0000001"
RECORD = 'mutation($u: ID!, $i: ID!) { recordInteraction(userId: $u, itemId: $i) { __typename } }'
USER = 'query($u: ID!) { user(id: $u) { known onlineInteractions } }'
N_EVENTS = 81  # as many as the probe that lost them all


@pytest.fixture(scope="module")
def root(module_api_root: Path) -> Path:
    return module_api_root


@pytest.fixture
def stock_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", persistence=()).start()  # RDB snapshots only, AOF off
    yield server
    server.stop()


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", persistence=("--appendonly", "yes", "--appendfsync", "everysec")).start()
    yield server
    server.stop()


def _serve(root: Path, redis: RedisServer, tmp_path: Path, events: bool, name: str) -> Uvicorn:
    env = {"HYBRIDREC_BUNDLE_ROOT": str(root), "HYBRIDREC_REDIS_URL": redis.url,
           "HYBRIDREC_API_KEYS": KEY, "HYBRIDREC_ADMIN_KEYS": ADMIN}
    if events:
        env["HYBRIDREC_EVENTS_DIR"] = str(tmp_path / "events")
    return start_uvicorn(env, tmp_path / f"{name}.log", plain=not events)  # serve would default the folder


def _gql(server: Uvicorn, query: str, variables: dict, key: str = KEY) -> dict:
    answer = httpx.post(f"{server.url}/graphql", json={"query": query, "variables": variables},
                        headers={"x-api-key": key}, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _record_all(server: Uvicorn) -> int:
    acknowledged = 0
    for k in range(N_EVENTS):
        answer = _gql(server, RECORD, {"u": "900", "i": str(1 + k % 20)})
        if not answer.get("errors") and answer["data"]["recordInteraction"]["__typename"] == "InteractionRecorded":
            acknowledged += 1
    return acknowledged


def _kill_and_restart(redis: RedisServer) -> None:
    assert redis.proc is not None
    redis.proc.send_signal(signal.SIGKILL)
    redis.proc.wait(timeout=10)
    redis.start()  # same port, same folder: whatever Redis persisted comes back


def test_redis_only_refuses_writes_without_an_append_only_file(root, stock_redis, tmp_path) -> None:
    server = _serve(root, stock_redis, tmp_path, events=False, name="redis-only-stock")
    try:
        record = _gql(server, RECORD, {"u": "900", "i": "2"})
        delete = _gql(server, 'mutation { deleteUserData(userId: "3") { eventsRemoved } }', {}, ADMIN)
        recs = _gql(server, 'query { recommendations(userId: "3", first: 2) { items { rank } } }', {})
    finally:
        server.stop()
    for answer in (record, delete):
        error = answer["errors"][0]
        assert error["extensions"]["code"] == "SERVICE_UNAVAILABLE" and "append-only file" in error["message"]
    assert len(recs["data"]["recommendations"]["items"]) == 2  # reads go on
    assert "redis has no append-only file" in server.log.read_text()


def test_redis_only_with_aof_loses_nothing_acknowledged(root, aof_redis, tmp_path) -> None:
    server = _serve(root, aof_redis, tmp_path, events=False, name="redis-only-aof")
    try:
        acknowledged = _record_all(server)
        deleted = _gql(server, 'mutation { deleteUserData(userId: "3") { eventsRemoved } }', {}, ADMIN)
        _kill_and_restart(aof_redis)
    finally:
        server.stop()
    server = _serve(root, aof_redis, tmp_path, events=False, name="redis-only-aof-after")
    try:
        user = _gql(server, USER, {"u": "900"})["data"]["user"]
        erased = _gql(server, USER, {"u": "3"})["data"]["user"]
    finally:
        server.stop()
    assert acknowledged == N_EVENTS and not deleted.get("errors")
    assert user["onlineInteractions"] == N_EVENTS
    assert erased["known"] is False  # the deletion held: the user did not come back


def test_a_local_log_beside_a_stock_redis_loses_nothing_acknowledged(root, stock_redis, tmp_path) -> None:
    server = _serve(root, stock_redis, tmp_path, events=True, name="log-and-stock")
    try:
        acknowledged = _record_all(server)
        _kill_and_restart(stock_redis)
        stock_redis.flush()  # even if Redis came back empty
        user = _gql(server, USER, {"u": "900"})["data"]["user"]
    finally:
        server.stop()
    assert acknowledged == N_EVENTS and user["onlineInteractions"] == N_EVENTS
