"""Real server processes on loopback for the fault bench and the tests: redis-server, and the API
under uvicorn (``hybridrec serve``)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


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
