"""The compose topology as separate processes on loopback: a Dask scheduler, two workers, a
redis-server, the trainer job submitted through `hybridrec submit`, and the API serving the
published bundle to a real GraphQL query. Also: a worker killed in the middle of a submitted job.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest

from bench.processes import RedisServer, free_port, start_uvicorn, wait_for_port
from bench.tiny import make_tiny_source

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
HYBRIDREC = str(Path(sys.executable).parent / "hybridrec")
DASK = str(Path(sys.executable).parent / "dask")
ENV = {**os.environ, "PYTHONPATH": str(REPO), "HYBRIDREC_DASHBOARD": ":0"}


def write_movielens_layout(folder: Path) -> Path:
    """The tiny synthetic data in ml-latest-small's layout (ratings, movies, tags CSVs)."""
    source = make_tiny_source(n_users=80, n_items=60, per_user=15)
    folder.mkdir(parents=True)
    ratings = source.interactions.compute().rename(columns={"user_id": "userId", "item_id": "movieId", "value": "rating"})
    ratings.to_csv(folder / "ratings.csv", index=False)
    items = source.items
    pd.DataFrame({"movieId": items["item_id"], "title": items["title"], "genres": ["|".join(g) for g in items["genres"]]}).to_csv(
        folder / "movies.csv", index=False)
    tags = [(1, item, tag, 1) for item, tags_ in zip(items["item_id"], items["tags"], strict=True) for tag in tags_]
    pd.DataFrame(tags, columns=["userId", "movieId", "tag", "timestamp"]).to_csv(folder / "tags.csv", index=False)
    return folder


class Cluster:
    """`dask scheduler` and `dask worker` processes on loopback."""

    def __init__(self, tmp: Path, workers: int = 2) -> None:
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []
        self.scheduler = self._spawn([DASK, "scheduler", "--host", "127.0.0.1", "--port", str(self.port),
                                      "--dashboard-address", ":0"], "scheduler")
        wait_for_port(self.port, timeout=60)
        self.workers = [self.add_worker(k) for k in range(workers)]

    def _spawn(self, cmd: list[str], name: str) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 - the process owns it
        proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def add_worker(self, k: int) -> subprocess.Popen[bytes]:
        return self._spawn([DASK, "worker", self.address, "--nthreads", "2", "--memory-limit", "3GiB",
                            "--name", f"w{k}", "--local-directory", str(self.tmp / f"w{k}")], f"worker-{k}")

    def wait_workers(self, n: int, timeout: float = 90) -> None:
        from distributed import Client

        with Client(self.address, timeout=30) as client:
            client.wait_for_workers(n, timeout=timeout)

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        c.wait_workers(2)
        yield c
    finally:
        c.close()


def _submit(cluster: Cluster, *job: str, detach: bool = False) -> subprocess.CompletedProcess[str]:
    cmd = [HYBRIDREC, "submit", "--scheduler", cluster.address, *(["--detach"] if detach else []), *job]
    return subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=900)


def _pipeline_args(tmp: Path, source: Path, bundles: Path) -> list[str]:
    return ["pipeline", "--data-root", str(tmp / "work"), "--bundle-root", str(bundles), "--source", str(source),
            "--events-dir", str(tmp / "events")]


def test_submitted_pipeline_serves_a_real_query(cluster: Cluster, tmp_path: Path) -> None:
    source = write_movielens_layout(tmp_path / "raw")
    bundles = tmp_path / "bundles"
    done = _submit(cluster, *_pipeline_args(tmp_path, source, bundles))
    assert done.returncode == 0, done.stderr[-3000:]
    assert (bundles / "latest").exists()
    (tmp_path / "redis").mkdir()
    redis = RedisServer(tmp_path / "redis").start()
    api = start_uvicorn({"HYBRIDREC_BUNDLE_ROOT": str(bundles), "HYBRIDREC_REDIS_URL": redis.url,
                         "HYBRIDREC_EVENTS_DIR": str(tmp_path / "events")}, tmp_path / "api.log")
    try:
        query = '{ recommendations(userId: "3", first: 10) { variant items { score item { id title genres } } } }'
        answer = httpx.post(f"{api.url}/graphql", json={"query": query}, timeout=30).json()
        assert "errors" not in answer, answer
        items = answer["data"]["recommendations"]["items"]
        assert len(items) == 10 and all(i["item"]["title"] for i in items)
    finally:
        api.stop()
        redis.stop()


def test_worker_killed_mid_job_still_completes(cluster: Cluster, tmp_path: Path) -> None:
    from distributed import Client

    source = write_movielens_layout(tmp_path / "raw")
    bundles = tmp_path / "bundles"
    started = _submit(cluster, *_pipeline_args(tmp_path, source, bundles), detach=True)
    assert started.returncode == 0, started.stderr[-3000:]
    key = started.stdout.split()[1].rstrip(";")
    with Client(cluster.address) as client:
        deadline = time.monotonic() + 120
        victim = None
        while victim is None and time.monotonic() < deadline:
            processing = client.processing()
            victim = next((addr for addr, keys in processing.items() if any(str(k) == key for k in keys)), None)
            time.sleep(0.2)
        assert victim is not None, "the job never started on a worker"
        time.sleep(3)  # into the job: ingest/training tasks are running
        name = client.scheduler_info()["workers"][victim]["name"]
        worker = cluster.workers[int(str(name)[1:])]
        os.killpg(worker.pid, signal.SIGKILL)
    cluster.workers.append(cluster.add_worker(9))
    follow = subprocess.run([HYBRIDREC, "submit", "--scheduler", cluster.address, "--follow", key], cwd=REPO, env=ENV,
                            capture_output=True, text=True, timeout=900)
    assert follow.returncode == 0, follow.stderr[-3000:]
    assert (bundles / "latest" / "manifest.json").exists()
