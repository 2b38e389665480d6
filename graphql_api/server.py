"""Running the API: uvicorn worker processes, each listening on its own SO_REUSEPORT socket.

uvicorn's own ``--workers`` share one listening socket, and under a burst of new connections the
worker that wakes first accepts all of them: with two workers and a load generator opening 16
connections, one worker sometimes served all 16 while the other idled (half the throughput of
a balanced run). With one socket per worker bound with SO_REUSEPORT, the kernel hands each new
connection to a worker by a hash of its addresses, so connections spread over the workers.

uvicorn's supervisor (``uvicorn.supervisors.Multiprocess``: spawns the workers, restarts one that
dies, stops them on SIGINT/SIGTERM) runs them; each worker opens its socket when it starts.
Where the platform has no SO_REUSEPORT, or with one worker, this is plain ``uvicorn.run``.

``hybridrec serve`` calls :func:`serve`; so do the tests and benches that start a server.
"""

from __future__ import annotations

import socket

import uvicorn
from uvicorn.supervisors import Multiprocess

from etl.errors import ListenError

__all__ = ["APP", "reuse_port_socket", "serve"]

APP = "graphql_api.app:create_app"
"""The application factory uvicorn imports in each worker."""


def serve(host: str = "127.0.0.1", port: int = 8000, workers: int = 1, log_level: str = "info",
          access_log: bool = False, forwarded_allow_ips: str = "") -> None:
    """Serve the API on ``host:port`` with ``workers`` processes until SIGINT or SIGTERM.

    X-Forwarded-For is believed only from ``forwarded_allow_ips`` (HYBRIDREC_FORWARDED_ALLOW_IPS):
    uvicorn's default believes it from 127.0.0.1, so any local process could pick the address its
    requests are rate-limited under."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    options = {"factory": True, "host": host, "port": port, "workers": workers, "log_level": log_level,
               "access_log": access_log, "proxy_headers": bool(forwarded_allow_ips),
               "forwarded_allow_ips": forwarded_allow_ips or None}
    if workers == 1 or not hasattr(socket, "SO_REUSEPORT"):
        uvicorn.run(APP, **options)
        return
    _check_free(host, port)
    config = uvicorn.Config(APP, **options)
    Multiprocess(config, sockets=[_WorkerSocket(host, port, config.backlog)]).run()  # type: ignore[list-item]


def reuse_port_socket(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket on ``host:port`` that other processes may bind too (SO_REUSEPORT)."""
    sock = _bound(host, port, reuse_port=True)
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def _bound(host: str, port: int, reuse_port: bool) -> socket.socket:
    """A TCP socket bound to ``host:port``; ListenError names the address when it cannot be."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ListenError(exc.errno, f"cannot serve on {host}:{port}: {exc.strerror}") from exc
    return sock


class _WorkerSocket:
    """Stands in for the listening socket uvicorn's supervisor hands each worker it spawns.

    Worker processes receive their sockets pickled; this one unpickles as a fresh
    :func:`reuse_port_socket`, so every worker (a restarted one too) listens on a socket of its own.
    """

    def __init__(self, host: str, port: int, backlog: int) -> None:
        self.host, self.port, self.backlog = host, port, backlog

    def __reduce__(self) -> tuple[object, tuple[str, int, int]]:
        return reuse_port_socket, (self.host, self.port, self.backlog)


def _check_free(host: str, port: int) -> None:
    """Fail at once, with the address, when something already listens there: workers binding
    with SO_REUSEPORT could otherwise share the port with another server started the same way."""
    _bound(host, port, reuse_port=False).close()
