"""Bounded memory: the answer cache holds at most its byte budget and sweeps expired answers, one
user's online history is capped (the newest kept for folding in, all of it in the durable log),
and a flood of distinct hostile documents leaves the server's memory where it started."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from bench.processes import Uvicorn, start_uvicorn
from bench.tiny import publish_bundle
from etl.events_log import EventLog
from graphql_api.store import CACHE_ENTRY_OVERHEAD, CachedAnswer, MemoryCache

pytest_plugins = ["tests.api_helpers"]

KEY = "memory-key-000000000001"


# -- the answer cache --------------------------------------------------------------------------------

def _answer(size: int) -> CachedAnswer:
    return CachedAnswer("recommendations", b"x" * size)


def test_the_cache_holds_its_byte_budget_oldest_out_first() -> None:
    cache = MemoryCache(max_bytes=100_000)
    for k in range(100):
        assert cache.put(f"k{k}", _answer(5_000), {"u1": "0"}, ttl=60)
    assert cache.bytes <= 100_000
    held = [k for k in range(100) if cache.get(f"k{k}", {"u1": 0}) is not None]
    assert held == list(range(100 - len(held), 100)) and len(held) >= 100_000 // (5_000 + CACHE_ENTRY_OVERHEAD + 64)
    cache.drop_user("u1")
    assert cache.bytes == 0


def test_an_answer_over_a_sixteenth_of_the_budget_is_not_cached() -> None:
    cache = MemoryCache(max_bytes=160_000)
    assert cache.put("small", _answer(1_000), {}, ttl=60)
    assert not cache.put("huge", _answer(10_001), {}, ttl=60)
    assert cache.get("huge", {}) is None and cache.get("small", {}) is not None


def test_expired_answers_are_swept_without_being_asked_for() -> None:
    cache = MemoryCache(max_bytes=10_000_000)
    for k in range(50):
        cache.put(f"old{k}", _answer(10_000), {}, ttl=0.05)
    time.sleep(0.1)
    cache.put("new", _answer(10), {}, ttl=60)  # a put sweeps what expired
    assert len(cache._entries) == 1 and cache.bytes < 1_000  # noqa: SLF001 - what is held


# -- a real server --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_dataset, tiny_models) -> Iterator[Uvicorn]:
    work = tmp_path_factory.mktemp("memory")
    publish_bundle(work / "bundles", tiny_dataset, tiny_models, version="v1")
    server = start_uvicorn({"HYBRIDREC_BUNDLE_ROOT": str(work / "bundles"), "HYBRIDREC_EVENTS_DIR": str(work / "events"),
                            "HYBRIDREC_API_KEYS": KEY, "HYBRIDREC_HISTORY_CAP": "10"}, work / "uvicorn.log")
    server.events = work / "events"  # type: ignore[attr-defined]
    yield server
    server.stop()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_online_history_is_capped_and_the_log_keeps_everything(server: Uvicorn) -> None:
    batch = [{"userId": "77", "itemId": str(1 + k % 20)} for k in range(60)]
    answer = httpx.post(f"{server.url}/graphql", json={
        "query": 'mutation($b: [InteractionInput!]!) { recordInteractions(batch: $b) { accepted } }',
        "variables": {"b": batch}}, headers={"x-api-key": KEY}, timeout=30).json()
    user = httpx.post(f"{server.url}/graphql", json={
        "query": '{ user(id: "77") { onlineInteractions recentHistory(first: 100) { item { id } } } '
                 'recommendations(userId: "77", first: 3) { onlineInteractions items { rank } } }'},
        headers={"x-api-key": KEY}, timeout=30).json()["data"]
    assert answer["data"]["recordInteractions"]["accepted"] == 60
    assert user["user"]["onlineInteractions"] == 10 == user["recommendations"]["onlineInteractions"]
    newest = [b["itemId"] for b in batch[-10:]][::-1]
    assert [h["item"]["id"] for h in user["user"]["recentHistory"][:10]] == newest
    logged = [e for e in EventLog(server.events).read() if e.user_id == "77"]  # type: ignore[attr-defined]
    assert len(logged) == 60  # the next training run sees them all


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_distinct_hostile_documents_leave_memory_where_it_started(server: Uvicorn) -> None:
    """2,000 distinct documents of each kind: padded to the longest allowed (few tokens), with as
    many tokens as allowed, and with long ids: only the bounded caches may keep anything of them.
    Memory after a warm-up is the baseline."""
    process = psutil.Process(server.proc.pid)
    padding = " " * 32_000
    with httpx.Client(base_url=server.url, timeout=30) as http:
        def flood(n: int, start: int) -> None:
            for k in range(start, start + n):
                http.post("/graphql", json={"query": f"#{k}{padding}\n{{ model {{ version }} }}"})
                http.post("/graphql", json={"query": 'query($u: ID!) { user(id: $u) { known } }',
                                            "variables": {"u": f"{k}-" + "9" * 300_000}})
                # as many tokens as allowed, distinct each time: the parsed tree is what costs memory
                ids = ",".join(f'"{k}{j}"' for j in range(300))
                http.post("/graphql", json={"query": f"{{ items(ids: [{ids}]) {{ id }} }}"})

        flood(200, 0)  # warm-up: allocator arenas, caches at their working size
        baseline = process.memory_info().rss
        flood(2_000, 1_000)
        grown = process.memory_info().rss - baseline
        alive = http.post("/graphql", json={"query": "{ model { version } }"}).json()
    assert alive["data"]["model"]["version"] == "v1"
    assert grown < 100 * 2**20, f"RSS grew {grown / 2**20:.0f} MB over 2,000 hostile documents"
