"""`hybridrec demo` as a user runs it: a first bundle of the fast signals answers while every
signal trains, then the tuned bundle is swapped in under the running server; a SIGTERM stops both."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from bench.processes import free_port
from etl.sources.synthetic import SyntheticConfig, write_parquet

REPO = Path(__file__).resolve().parents[1]
QUERY = "query($u: ID!) { recommendations(userId: $u, first: 5) { items { item { id } } } }"


def _read_until(proc: subprocess.Popen[str], text: str, timeout: float, seen: list[str]) -> str:
    """stderr lines of ``proc`` (kept in ``seen``) until one holds ``text``."""
    deadline = time.monotonic() + timeout
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            raise AssertionError(f"the demo exited ({proc.wait()}) before printing {text!r}:\n{''.join(seen[-40:])}")
        seen.append(line)
        if text in line:
            return line
    raise AssertionError(f"the demo did not print {text!r} in {timeout:.0f} s:\n{''.join(seen[-40:])}")


def _health(base: str) -> dict:
    return httpx.get(f"{base}/health", timeout=5).json()


def _start_demo(tmp_path: Path, client, *, interactions: int, seed: int, signals: str) -> tuple[subprocess.Popen, int]:
    """`hybridrec demo` on synthetic data (a first bundle of popularity, then ``signals`` tuned for
    2 generations), in a session of its own; its stderr piped for _read_until. The process and port."""
    data = write_parquet(SyntheticConfig(n_interactions=interactions, seed=seed), tmp_path / "synthetic",
                         client=client)
    port = free_port()
    env = {**os.environ, "HYBRIDREC_DATA": str(data)}
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cluster.cli", "demo", "--dev", "--data-root", str(tmp_path / "data"),
         "--bundle-root", str(tmp_path / "bundles"), "--port", str(port), "--first-signals", "popularity",
         "--signals", signals, "--generations", "2"],
        cwd=REPO, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, start_new_session=True)
    return proc, port


def test_demo_answers_from_a_first_bundle_then_swaps_in_the_tuned_one(tmp_path: Path, client) -> None:
    proc, port = _start_demo(tmp_path, client, interactions=4_000, seed=0, signals="popularity,content")
    base = f"http://127.0.0.1:{port}"
    seen: list[str] = []
    try:
        line = _read_until(proc, "demo: answering", 180, seen)
        assert f"GraphiQL: {base}/graphql" in line
        first = _health(base)["bundle"]
        assert first["signals"] == ["popularity"]
        answer = httpx.post(f"{base}/graphql", json={"query": QUERY, "variables": {"u": "1"}}, timeout=10).json()
        assert "errors" not in answer and len(answer["data"]["recommendations"]["items"]) == 5

        line = _read_until(proc, "demo: serving the tuned bundle", 300, seen)
        tuned = _health(base)["bundle"]
        assert tuned["version"] in line and tuned["version"] != first["version"]
        assert sorted(tuned["signals"]) == ["content", "popularity"]
        assert sorted(p.name for p in (tmp_path / "bundles").iterdir() if p.name != "latest") == \
            sorted([first["version"], tuned["version"]])
        assert any("fitting content on 'fit'" in s for s in seen)  # a line as each stage starts

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        with pytest.raises(httpx.ConnectError):  # the server went with it
            httpx.get(f"{base}/health", timeout=2)
    finally:
        if proc.poll() is None:  # a failed step: the demo and its server (one session) go together
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.skipif(sys.platform != "linux", reason="the server's parent-death signal is Linux's prctl")
def test_a_demo_killed_outright_takes_its_server_with_it(tmp_path: Path, client) -> None:
    proc, port = _start_demo(tmp_path, client, interactions=2_000, seed=1, signals="popularity")
    try:
        _read_until(proc, "demo: answering", 180, [])
        proc.kill()  # SIGKILL: no handler of the demo runs
        proc.wait()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            except httpx.ConnectError:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the demo's server still answers 30 s after the demo was killed")
    finally:
        with contextlib.suppress(ProcessLookupError):  # whatever of the session is left
            os.killpg(proc.pid, signal.SIGKILL)
