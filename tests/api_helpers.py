"""Helpers for the API tests: bundles from the tiny dataset, a real Redis server, a uvicorn process,
and a GraphQL client over the ASGI app with its lifespan running.

Test modules load the fixtures with ``pytest_plugins = ["tests.api_helpers"]`` and import the other
helpers directly; the asserts here carry their own messages (PYTEST_DONT_REWRITE).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from etl.dataset import Dataset
from graphql_api.settings import Settings
from hybrid.fusion import Fusion
from models.base import FactorModel, TrainData, TrainingOptions

REPO = Path(__file__).resolve().parents[1]
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REQUEST_TIMEOUT = 60.0
"""Seconds a test request (or an app start) may take before the test fails with where it hung."""

RECS = """
query Recs($user: ID!, $first: Int! = 5) {
  recommendations(userId: $user, first: $first) {
    userId variant modelVersion userKnown coldStart coldStartReason userSource onlineInteractions
    weights { signal weight }
    items { rank score contributions { signal value } item { id title genres year meanRating popularity } }
  }
}
"""


# -- models and bundles -----------------------------------------------------------------------------

def fit_models(dataset: Dataset, client: Any) -> dict[str, FactorModel]:
    """Popularity plus every other signal that exists in this checkout, fit small and fast."""
    from models.popularity import Popularity

    data = TrainData(dataset, split="train")
    options = TrainingOptions(client=client, seed=0)
    models: dict[str, FactorModel] = {"popularity": Popularity().fit(data, options)}
    try:
        from models.als import ALS, ALSConfig

        models["als"] = ALS(ALSConfig(factors=8, iterations=3)).fit(data, options)
    except ImportError:  # pragma: no cover - signals land independently
        pass
    try:
        from models.content import ContentConfig, ContentModel

        models["content"] = ContentModel(ContentConfig(dim=8)).fit(data, options)
    except ImportError:  # pragma: no cover
        pass
    return models


def publish_bundle(root: Path, dataset: Dataset, models: Mapping[str, FactorModel], *, version: str,
                   weights: Mapping[str, float] | None = None, traffic: Mapping[str, float] | None = None,
                   extra_variants: Mapping[str, Any] | None = None) -> Path:
    from hybrid.bundle import publish
    from hybrid.variants import Variants

    fusion = Fusion.fit_scales(dict(models), dataset.matrix("train"))
    if weights is None:
        weights = {s: (0.3 if s == "popularity" else 1.0) for s in fusion.signals}
    weights = {s: float(weights.get(s, 0.0)) for s in fusion.signals}
    variants = Variants(fusion.signals, weights, extra_variants, traffic)
    return publish(root, fusion, dataset, weights=weights, variants=variants,
                   metrics={"hybrid": {"ndcg@10": 0.25, "recall@10": 0.2}, "coverage": 0.5},
                   params={"source": "tests"}, version=version)


# -- ports, processes ---------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


DURABLE_REDIS = ("--appendonly", "yes", "--appendfsync", "always", "--save", "")
"""Every acknowledged write fsync'd to the append-only file before Redis answers."""


class RedisServer:
    """A real redis-server on a free loopback port, its data in a temp folder.

    ``persistence``: its options (default DURABLE_REDIS; ``()`` is a stock redis-server: RDB
    snapshots only, as the issue's probe ran it)."""

    def __init__(self, folder: Path | None = None, persistence: tuple[str, ...] = DURABLE_REDIS,
                 password: str | None = None) -> None:
        if not Path(REDIS_SERVER).exists():
            raise FileNotFoundError(f"{REDIS_SERVER} is missing: apt-get install -y redis-server")
        self.folder = Path(folder or tempfile.mkdtemp(prefix="hybridrec-redis-"))
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.persistence = persistence
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        auth = ("--requirepass", self.password) if self.password else ()
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
             *self.persistence, *auth, "--daemonize", "no", "--protected-mode", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)
        self.proc = None

    def flush(self) -> None:
        import redis

        client = redis.Redis.from_url(self.url)
        client.flushall()
        client.close()


@dataclass
class Uvicorn:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


_RECORD_MODULES = """
import atexit, runpy, sys
out, module = sys.argv[1:3]
sys.argv = [module, *sys.argv[3:]]
atexit.register(lambda: open(out, "w").write("\\n".join(sorted(sys.modules))))
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""
"""``python -c`` this, then a file and ``-m``'s module and arguments: runs the module as ``-m`` does
and writes the sorted names of the modules in ``sys.modules`` to the file at exit."""


def start_uvicorn(env: Mapping[str, str], log: Path, workers: int = 1, timeout: float = 180.0,
                  plain: bool = False, modules_file: Path | None = None) -> Uvicorn:
    """``hybridrec serve`` (uvicorn workers, as deployed) on a free loopback port, once /health is ready.

    ``env`` holds the server's settings (HYBRIDREC_BUNDLE_ROOT and the rest). The timeout allows
    for a shared 2-core machine under load, where a start took over 60 s. ``plain``: uvicorn's own
    command on the app factory instead, which takes the settings as they are (``hybridrec serve``
    gives the events folder a default; Redis-only mode needs this). ``modules_file``: the server
    process writes the names of every module it holds (``sys.modules``) there when it exits; with
    one worker that process is the one that served."""
    port = free_port()
    cmd = [sys.executable, "-m", "cluster.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--workers", str(workers), "--log-level", "warning"]
    if plain:
        cmd = [sys.executable, "-m", "uvicorn", "--factory", "graphql_api.app:create_app", "--host", "127.0.0.1",
               "--port", str(port), "--workers", str(workers), "--log-level", "warning"]
    if modules_file is not None:
        cmd = [sys.executable, "-c", _RECORD_MODULES, str(modules_file), *cmd[2:]]
    full_env = {**os.environ, **env, "PYTHONPATH": str(REPO)}
    if not (full_env.get("HYBRIDREC_API_KEYS") or full_env.get("HYBRIDREC_ADMIN_KEYS")):
        full_env.setdefault("HYBRIDREC_DEV", "true")  # a keyless server starts only in development mode
    handle = open(log, "wb")  # noqa: SIM115 - the process owns it
    proc = subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=handle, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"uvicorn exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0).status_code == 200:
                return Uvicorn(proc, port, log)
        time.sleep(0.1)
    proc.kill()
    raise TimeoutError(f"uvicorn not ready after {timeout}s:\n{log.read_text()[-4000:]}")


# -- an ASGI client with the lifespan running -------------------------------------------------------------

class GQL:
    """A GraphQL client over httpx (ASGI transport or a real server)."""

    def __init__(self, http: httpx.AsyncClient, headers: Mapping[str, str] | None = None) -> None:
        self.http = http
        self.headers = dict(headers or {})

    async def post(self, query: str, variables: Mapping[str, Any] | None = None,
                   headers: Mapping[str, str] | None = None) -> httpx.Response:
        # a request that hangs fails the test with the await chain it was stuck in
        async with asyncio.timeout(REQUEST_TIMEOUT):
            return await self.http.post("/graphql", json={"query": query, "variables": dict(variables or {})},
                                        headers={**self.headers, **(headers or {})})

    async def __call__(self, query: str, variables: Mapping[str, Any] | None = None,
                       headers: Mapping[str, str] | None = None) -> dict[str, Any]:
        response = await self.post(query, variables, headers)
        assert response.status_code == 200, response.text
        return response.json()

    async def data(self, query: str, variables: Mapping[str, Any] | None = None,
                   headers: Mapping[str, str] | None = None) -> dict[str, Any]:
        body = await self(query, variables, headers)
        assert not body.get("errors"), body["errors"]
        return body["data"]


@contextlib.asynccontextmanager
async def running(app: Any, headers: Mapping[str, str] | None = None) -> AsyncIterator[GQL]:
    """The app with its lifespan started (startup on enter, shutdown on exit), and a client."""
    async with contextlib.AsyncExitStack() as stack:
        async with asyncio.timeout(REQUEST_TIMEOUT):
            await stack.enter_async_context(app.router.lifespan_context(app))
        transport = httpx.ASGITransport(app=app)
        http = await stack.enter_async_context(httpx.AsyncClient(transport=transport, base_url="http://api.test"))
        yield GQL(http, headers)


# -- fixtures (test modules load this module with ``pytest_plugins = ["tests.api_helpers"]``) ---------

_MODELS: dict[str, dict[str, FactorModel]] = {}


def tiny_models(dataset: Dataset) -> dict[str, FactorModel]:
    """Models fit once per test session on the tiny dataset (an in-process Dask cluster for ALS)."""
    if dataset.path not in _MODELS:
        from distributed import Client, LocalCluster

        with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0") as cluster, \
                Client(cluster) as client:
            _MODELS[dataset.path] = fit_models(dataset, client)
    return _MODELS[dataset.path]


@pytest.fixture
def api_root(tmp_path: Path, tiny_dataset: Dataset) -> Path:
    """A bundle root with one published version, 'v1'."""
    root = tmp_path / "bundles"
    publish_bundle(root, tiny_dataset, tiny_models(tiny_dataset), version="v1")
    return root


@pytest.fixture(scope="module")
def module_api_root(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Dataset) -> Path:
    """As ``api_root``, shared by a module's tests (for modules that start servers once)."""
    root = tmp_path_factory.mktemp("module-api") / "bundles"
    publish_bundle(root, tiny_dataset, tiny_models(tiny_dataset), version="v1")
    return root


@pytest.fixture
def make_settings(tmp_path: Path, api_root: Path) -> Callable[..., Settings]:
    """Settings over ``api_root`` and a fresh events folder; keyword arguments override fields."""

    def make(**overrides: Any) -> Settings:
        fields: dict[str, Any] = {"bundle_root": api_root, "events_dir": tmp_path / "events",
                                  "reload_interval": 0.2, "access_log": False}
        fields.update(overrides)
        # a server without keys starts only in development mode: say so where a test gives no keys
        fields.setdefault("dev_mode", not (fields.get("api_keys") or fields.get("admin_keys")))
        return Settings(**fields)

    return make


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.folder, ignore_errors=True)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A running, empty Redis."""
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()
    redis_server.flush()
    return redis_server.url
