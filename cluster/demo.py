"""`hybridrec demo`: an answer within a minute, then the fully tuned blend swapped in while serving.

1. The data (``jobs.prepare_data``: decided once per data root) and a first bundle from the
   signals that fit in seconds (``FIRST_SIGNALS``), published as ``latest``.
2. The API started as its own process (``hybridrec serve``, the same settings), waited for until
   its /health names that bundle: from here GraphiQL answers.
3. The full pipeline (every signal, tuned) published as ``latest``: the server's reload poll swaps
   it in, and the demo says so once /health names it. A failure here is reported and the first
   bundle keeps serving.
4. The server runs until Ctrl-C or SIGTERM, which stop it too.

On ml-latest-small the first bundle (als, content, popularity: test NDCG@10 0.136) is served about
20 s after the data is ready on a 2-core machine; the six-signal blend (0.164) follows some
minutes later.
"""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from cluster.jobs import log, pipeline_job, prepare_data

#: The first bundle's signals: each fits in a few seconds on ml-latest-small.
FIRST_SIGNALS: tuple[str, ...] = ("als", "content", "popularity")
#: Seconds to wait for the server to answer /health with a given bundle.
SERVER_WAIT_S = 120.0


class DemoError(RuntimeError):
    """The demo's server stopped or never served the bundle it was given."""


def version_of(path: str | Path) -> str:
    """A published bundle's version: the last part of its path or URL."""
    return str(path).rstrip("/").rsplit("/", 1)[-1]


_PR_SET_PDEATHSIG = 1
#: prctl, resolved here rather than in the forked child (a child of a threaded process should only call
#: what is already loaded).
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def _die_with_parent() -> None:
    """In the child before exec (Linux): SIGTERM when the demo dies, even by SIGKILL."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def start_server(serve_args: Sequence[str]) -> subprocess.Popen[bytes]:
    """``hybridrec serve`` with ``serve_args`` as a child process. It inherits this environment,
    where the serving settings were put, and this terminal's process group, so Ctrl-C reaches it;
    on Linux it is also told to stop when the demo dies, so it never outlives it."""
    return subprocess.Popen([sys.executable, "-m", "cluster.cli", "serve", *serve_args],
                            preexec_fn=_die_with_parent if _prctl is not None else None)


def wait_for_bundle(base_url: str, version: str, server: subprocess.Popen[bytes],
                    timeout: float = SERVER_WAIT_S) -> float:
    """Seconds until ``base_url``/health names bundle ``version``; DemoError if the server exits
    or does not within ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if server.poll() is not None:
            raise DemoError(f"the server exited with code {server.returncode} before serving bundle {version}")
        try:
            body = httpx.get(f"{base_url}/health", timeout=2.0).json()
            if (body.get("bundle") or {}).get("version") == version:
                return time.monotonic() - start
        except (httpx.HTTPError, ValueError):
            pass  # not listening yet, or answering something else while it starts
        time.sleep(0.25)
    raise DemoError(f"the server at {base_url} did not serve bundle {version} within {timeout:.0f} s")


def stop_server(server: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """SIGINT (uvicorn's graceful shutdown), then SIGKILL after ``grace`` seconds."""
    if server.poll() is None:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(grace)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_demo(
    data_root: str | Path,
    bundle_root: str,
    *,
    client: Any,
    base_url: str,
    serve_args: Sequence[str],
    first_signals: Sequence[str] = FIRST_SIGNALS,
    signals: Sequence[str] | None = None,
    generations: int | None = None,
    events_dir: str | None = None,
    redis_url: str | None = None,
) -> int:
    """The demo (see the module docstring) until interrupted; returns the server's exit code.

    ``signals``: the full bundle's (default: every signal of the pipeline); ``generations``: the
    GA's, for both bundles (default: its own).
    """
    signal.signal(signal.SIGTERM, _interrupt)  # a `kill` stops the server too, as Ctrl-C does
    log(f"demo: Dask dashboard: {client.dashboard_link}")
    root = Path(data_root)
    source = prepare_data(root / "raw", client=client)
    ready = time.monotonic()
    jobs = {"source": source, "client": client, "events_dir": events_dir, "redis_url": redis_url,
            "generations": generations}
    first = version_of(pipeline_job(root, bundle_root, signals=list(first_signals), **jobs))
    server = start_server(serve_args)
    try:
        wait_for_bundle(base_url, first, server)
        log(f"demo: answering {time.monotonic() - ready:.0f} s after the data was ready, from bundle {first} "
            f"({', '.join(first_signals)}); GraphiQL: {base_url}/graphql  demo page: {base_url}/")
        log("demo: now training and tuning every signal; the server swaps the tuned bundle in when it is published")
        try:
            full = version_of(pipeline_job(root, bundle_root, signals=signals, **jobs))
        except Exception as exc:  # noqa: BLE001 - the first bundle keeps serving
            log(f"demo: the full pipeline failed ({type(exc).__name__}: {exc}); still serving bundle {first}")
        else:
            waited = wait_for_bundle(base_url, full, server)
            log(f"demo: serving the tuned bundle {full} ({time.monotonic() - ready:.0f} s after the data was "
                f"ready; swapped in {waited:.1f} s after publishing). GraphiQL: {base_url}/graphql")
        return server.wait()
    except KeyboardInterrupt:
        log("demo: stopping the server")
        return 0
    finally:
        stop_server(server)
