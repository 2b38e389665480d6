"""The API under a real uvicorn on loopback (a subprocess), as it is deployed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from bench.processes import Uvicorn, free_port, start_uvicorn
from bench.tiny import publish_bundle
from tests.api_helpers import REPO

pytest_plugins = ["tests.api_helpers"]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

Q = 'query($u: ID!) { recommendations(userId: $u, first: 10) { variant modelVersion items { score item { id title genres } } } }'


def _env(root: Path, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"HYBRIDREC_BUNDLE_ROOT": str(root), "HYBRIDREC_EVENTS_DIR": str(tmp_path / "events"),
            "HYBRIDREC_RELOAD_INTERVAL": "0.2", **extra}


def test_uvicorn_serves_graphql_health_metrics(api_root, tmp_path) -> None:
    server = start_uvicorn(_env(api_root, tmp_path, HYBRIDREC_API_KEYS="k1"), tmp_path / "uvicorn.log")
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            health = http.get("/health").json()
            answer = http.post("/graphql", json={"query": Q, "variables": {"u": "3"}},
                               headers={"x-request-id": "req-123"})
            again = http.post("/graphql", json={"query": Q, "variables": {"u": "3"}})
            mutation = http.post("/graphql", json={"query": 'mutation { recordInteraction(userId: "3", itemId: "2") '
                                                             '{ __typename } }'}, headers={"x-api-key": "k1"})
            after = http.post("/graphql", json={"query": Q, "variables": {"u": "3"}})
            metrics = http.get("/metrics").text
            ide = http.get("/graphql", headers={"accept": "text/html"})
    finally:
        server.stop()
    assert health["ready"] is True and health["bundle"]["version"] == "v1" and health["redis"] == "disabled"
    assert answer.status_code == 200 and answer.headers["x-request-id"] == "req-123"
    recs = answer.json()["data"]["recommendations"]
    assert recs["variant"] == "tuned" and recs["modelVersion"] == "v1" and len(recs["items"]) == 10
    assert again.headers["x-cache"] == "hit" and again.json() == answer.json()
    assert mutation.json()["data"]["recordInteraction"]["__typename"] == "InteractionRecorded"
    assert after.headers["x-cache"] == "miss" and after.json() != answer.json()
    assert 'hybridrec_request_seconds_count{cached="true",operation="recommendations"} 1.0' in metrics
    assert ide.status_code == 200 and "graphiql" in ide.text.lower()
    logs = [json.loads(line) for line in server.log.read_text().splitlines() if line.startswith("{")]
    access = [r for r in logs if r["logger"] == "hybridrec.access" and r.get("request_id") == "req-123"]
    assert access and access[0]["status"] == 200 and access[0]["operation"] == "recommendations"


def test_uvicorn_two_workers_hot_reload_without_failed_requests(api_root, tmp_path, tiny_dataset, tiny_models) -> None:
    models = tiny_models
    server = start_uvicorn(_env(api_root, tmp_path), tmp_path / "uvicorn.log", workers=2)
    seen: list[str] = []
    by_user: dict[str, list[str]] = {u: [] for u in ("3", "4", "5", "nobody")}
    failures: list[str] = []
    stop = threading.Event()

    def client(user: str) -> None:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            while not stop.is_set():
                try:
                    r = http.post("/graphql", json={"query": Q, "variables": {"u": user}})
                    body = r.json()
                    if r.status_code != 200 or body.get("errors"):
                        failures.append(r.text[:200])
                    else:
                        seen.append(body["data"]["recommendations"]["modelVersion"])
                        by_user[user].append(seen[-1])
                except httpx.HTTPError as err:
                    failures.append(repr(err))

    threads = [threading.Thread(target=client, args=(u,)) for u in ("3", "4", "5", "nobody")]
    try:
        for t in threads:
            t.start()
        while len(seen) < 20 and not failures:
            stop.wait(0.05)
        publish_bundle(api_root, tiny_dataset, models, version="v2", weights={"popularity": 1.0, "als": 0.2})
        # both workers poll the latest pointer; each client keeps its connection (one worker), so
        # every client's own last answers must be v2 (on a loaded machine one worker can lag)
        for _ in range(600):
            if all(v[-10:] == ["v2"] * 10 for v in by_user.values()):
                break
            stop.wait(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join()
        server.stop()
    assert failures == []
    assert "v1" in seen and all(v[-10:] == ["v2"] * 10 for v in by_user.values()), {u: v[-12:] for u, v in by_user.items()}


def test_module_level_app_for_plain_uvicorn(api_root, tmp_path) -> None:
    port = free_port()
    log = tmp_path / "plain.log"
    env = {**os.environ, **_env(api_root, tmp_path), "PYTHONPATH": str(REPO), "HYBRIDREC_DEV": "true"}
    with open(log, "wb") as handle:
        proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "graphql_api.app:app", "--host", "127.0.0.1",
                                 "--port", str(port)], cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT)
    server = Uvicorn(proc, port, log)
    try:
        deadline = time.monotonic() + 60
        status = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status = httpx.get(f"{server.url}/health", timeout=1).status_code
                if status == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
    finally:
        server.stop()
    assert status == 200, log.read_text()[-2000:]


def test_missing_required_setting_fails_loudly_at_start(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYBRIDREC_")}
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run([sys.executable, "-m", "uvicorn", "--factory", "graphql_api.app:create_app", "--port", "0"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "HYBRIDREC_BUNDLE_ROOT is required but not set" in out.stderr


def _listeners(server: Uvicorn) -> dict[int, tuple[str, int]]:
    """Each listening worker: pid -> (its listening socket's inode, its connections on the port)."""
    import psutil

    out = {}
    for child in psutil.Process(server.proc.pid).children():
        try:
            conns = [c for c in child.net_connections("tcp") if c.laddr and c.laddr.port == server.port]
            listening = [c for c in conns if c.status == psutil.CONN_LISTEN]
            if listening:
                inode = os.readlink(f"/proc/{child.pid}/fd/{listening[0].fd}")  # socket:[N]
                out[child.pid] = (inode, sum(c.status == psutil.CONN_ESTABLISHED for c in conns))
        except (FileNotFoundError, psutil.NoSuchProcess):
            continue  # a worker that is exiting (killed, or being replaced) between the listing and the read
    return out


def test_serve_gives_each_worker_its_own_socket_and_spreads_connections(api_root, tmp_path) -> None:
    """uvicorn's shared socket let one worker accept all of a client's connections; with a
    SO_REUSEPORT socket per worker the kernel spreads them (all 16 on one of two: p = 2^-15)."""
    import signal

    server = start_uvicorn(_env(api_root, tmp_path), tmp_path / "uvicorn.log", workers=2)
    clients = [httpx.Client(base_url=server.url, timeout=10) for _ in range(16)]
    try:
        for http in clients:  # one kept-alive connection each
            assert http.get("/health").status_code == 200
        workers = _listeners(server)
        assert len(workers) == 2 and len({inode for inode, _ in workers.values()}) == 2, workers
        assert all(n >= 1 for _, n in workers.values()), f"connections per worker: {workers}"
        assert sum(n for _, n in workers.values()) == 16

        # a worker that dies is replaced by one that listens on a socket of its own
        dead = next(iter(workers))
        os.kill(dead, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now = _listeners(server)
            if len(now) == 2 and dead not in now:
                break
            time.sleep(0.2)
        assert len(now) == 2 and dead not in now, now
        with httpx.Client(base_url=server.url, timeout=10) as http:
            assert all(http.get("/health", headers={"connection": "close"}).status_code == 200 for _ in range(20))
    finally:
        for http in clients:
            http.close()
        server.stop()
    assert server.proc.returncode == 0


def test_serve_refuses_an_address_in_use(api_root, tmp_path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {**os.environ, **_env(api_root, tmp_path), "PYTHONPATH": str(REPO), "HYBRIDREC_DEV": "true"}
        out = subprocess.run([sys.executable, "-m", "cluster.cli", "serve", "--port", str(port), "--workers", "2"],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert f"cannot serve on 127.0.0.1:{port}" in out.stderr and "Address already in use" in out.stderr
