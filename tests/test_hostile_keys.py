"""Fail closed: a server without keys refuses to start unless in development mode, anonymous
writes and erasure are refused, and a key acts only within its scopes and its user. Every probe is
sent to a real ``hybridrec serve`` (uvicorn) on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.processes import Uvicorn, free_port, start_uvicorn
from tests.api_helpers import REPO

pytest_plugins = ["tests.api_helpers"]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

WRITER = "writer-key-000000000001"
READER = "reader-key-000000000001"
BOUND = "bound-key-0000000000003"
ADMIN = "admin-key-0000000000001"
RECORD = 'mutation($u: ID!) { recordInteraction(userId: $u, itemId: "4") { __typename } }'
BATCH = 'mutation($u: ID!) { recordInteractions(batch: [{userId: $u, itemId: "4"}]) { accepted } }'
DELETE = 'mutation($u: ID!) { deleteUserData(userId: $u) { eventsRemoved } }'
HISTORY = 'query($u: ID!) { user(id: $u) { onlineInteractions recentHistory(first: 5) { item { id } } } }'


@pytest.fixture(scope="module")
def root(module_api_root: Path) -> Path:
    return module_api_root


@pytest.fixture(scope="module")
def server(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Uvicorn]:
    work = tmp_path_factory.mktemp("keys-server")
    env = {"HYBRIDREC_BUNDLE_ROOT": str(root), "HYBRIDREC_EVENTS_DIR": str(work / "events"),
           "HYBRIDREC_API_KEYS": f"{WRITER},{READER}:read,{BOUND}@3", "HYBRIDREC_ADMIN_KEYS": ADMIN}
    server = start_uvicorn(env, work / "uvicorn.log")
    yield server
    server.stop()


def _post(server: Uvicorn, query: str, user: str, key: str | None = None) -> dict:
    headers = {"x-api-key": key} if key else {}
    response = httpx.post(f"{server.url}/graphql", json={"query": query, "variables": {"u": user}},
                          headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def _code(answer: dict) -> str:
    return answer["errors"][0]["extensions"]["code"]


def _serve(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HYBRIDREC_")}
    return subprocess.run([sys.executable, "-m", "cluster.cli", "serve", "--port", str(free_port()), *args],
                          cwd=REPO, env={**clean, **env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                          timeout=timeout)


def test_serve_without_keys_refuses_to_start(root: Path, tmp_path: Path) -> None:
    out = _serve(["--bundle-root", str(root), "--events-dir", str(tmp_path / "events")], {})
    assert out.returncode == 2
    assert "no API keys: set HYBRIDREC_API_KEYS" in out.stderr and "--dev" in out.stderr


def test_development_mode_warns_at_start_and_on_health(root: Path, tmp_path: Path) -> None:
    server = start_uvicorn({"HYBRIDREC_BUNDLE_ROOT": str(root), "HYBRIDREC_EVENTS_DIR": str(tmp_path / "events"),
                            "HYBRIDREC_DEV": "true"}, tmp_path / "dev.log")
    try:
        health = httpx.get(f"{server.url}/health", timeout=10).json()
        recorded = _post(server, RECORD, "3")
    finally:
        server.stop()
    assert health["dev_mode"] is True and "no API keys" in health["warning"]
    assert "DEVELOPMENT MODE" in server.log.read_text()
    assert recorded["data"]["recordInteraction"]["__typename"] == "InteractionRecorded"


def test_anonymous_writes_and_erasure_are_refused(server: Uvicorn) -> None:
    for query in (RECORD, BATCH, DELETE):
        answer = _post(server, query, "3")
        assert answer["data"] is None and _code(answer) == "FORBIDDEN", answer
    health = httpx.get(f"{server.url}/health", timeout=10).json()
    assert "dev_mode" not in health and "warning" not in health


def test_scopes_decide_what_a_key_may_do(server: Uvicorn) -> None:
    assert _code(_post(server, RECORD, "5", READER)) == "FORBIDDEN"  # read only
    assert _code(_post(server, DELETE, "5", WRITER)) == "FORBIDDEN"  # not admin
    assert _post(server, RECORD, "5", WRITER)["data"]["recordInteraction"]["__typename"] == "InteractionRecorded"
    assert _post(server, DELETE, "5", ADMIN)["data"]["deleteUserData"]["eventsRemoved"] == 1


def test_a_bound_key_acts_for_its_user_only(server: Uvicorn) -> None:
    other = _post(server, RECORD, "6", BOUND)
    batch = _post(server, BATCH, "6", BOUND)
    assert _code(other) == _code(batch) == "FORBIDDEN" and "not for user '6'" in other["errors"][0]["message"]
    assert _post(server, RECORD, "3", BOUND)["data"]["recordInteraction"]["__typename"] == "InteractionRecorded"
    assert _code(_post(server, HISTORY, "6", BOUND)) == "FORBIDDEN"
    own = _post(server, HISTORY, "3", BOUND)["data"]["user"]
    assert own["onlineInteractions"] >= 1 and own["recentHistory"][0]["item"]["id"] == "4"
    assert _post(server, HISTORY, "6", READER)["data"]["user"]["onlineInteractions"] == 0  # nothing was written


def test_reading_a_history_needs_a_key(server: Uvicorn) -> None:
    """Also when the same query was just answered (and cached) for a key that may read it."""
    assert _post(server, HISTORY, "3", BOUND)["data"]["user"]["recentHistory"]
    anonymous = _post(server, HISTORY, "3")
    assert _code(anonymous) == "FORBIDDEN" and "read scope" in anonymous["errors"][0]["message"]
    recs = _post(server, 'query($u: ID!) { recommendations(userId: $u, first: 3) { items { rank } } }', "3")
    assert len(recs["data"]["recommendations"]["items"]) == 3  # recommendations stay open to front-ends
