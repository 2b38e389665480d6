"""docker-compose.yml's services as processes on loopback, started the way compose starts them.

There is no Docker engine here, so each of this project's services runs its own command with its
own environment: compose's ``${VAR}`` / ``${VAR:?message}`` / ``${VAR:-default}`` taken from an
``.env``, service hostnames rewritten to 127.0.0.1 with a free port per (service, port), volumes
and the image's own folders as temporary folders (container paths rewritten), in dependency order
with compose's conditions (service_started; service_healthy: the service's healthcheck command is
run until it passes; service_completed_successfully: the one-shot exits 0). The redis image runs
as the local redis-server with the service's arguments; other images than this project's
(Prometheus, Grafana) are skipped. The asserts here carry their own messages (PYTHONDONTREWRITE).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.processes import REDIS_SERVER, free_port

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PROJECT_IMAGE = "hybridrec"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:\?|:-)([^}]*))?\}")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
REDIS_PORT = 6379
"""The port the redis image listens on (its default)."""
REDIS_WORKDIR = "/data"
"""The redis image's working directory, where it keeps its append-only file."""


class ComposeError(AssertionError):
    """A service did not start, did not become healthy or did not complete as compose requires."""


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's ``${VAR}``, ``${VAR:?message}`` (required) and ``${VAR:-default}`` (unset or empty)."""
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        name, form, arg = match.groups()
        found = env.get(name)
        if form == ":-":
            return found if found else arg
        if form == ":?" and not found:
            raise KeyError(f"{name}: {arg}")
        if found is None:
            raise KeyError(f"{name}: not set")
        return found

    return _VAR.sub(one, value)


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of an ``.env`` file (comments and blank lines skipped)."""
    lines = [line.strip() for line in path.read_text().splitlines()]
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def seconds(text: str | None, default: float) -> float:
    """A compose duration ('10s', '1m30s') in seconds."""
    if not text:
        return default
    parts = _DURATION.findall(str(text))
    if not parts:
        raise ValueError(f"bad compose duration {text!r}")
    return sum(float(n) * _UNIT[u] for n, u in parts)


def is_project_service(service: Mapping[str, Any]) -> bool:
    return "build" in service or str(service.get("image", "")).split(":")[0] == PROJECT_IMAGE


def dependencies(service: Mapping[str, Any]) -> dict[str, str]:
    """depends_on as {service: condition} (the short list form means service_started)."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def start_order(services: Mapping[str, Any]) -> list[str]:
    """Services so that each comes after everything it depends on."""
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in order:
            return
        if name in path:
            raise ComposeError(f"depends_on cycle: {' -> '.join((*path, name))}")
        if name not in services:
            raise ComposeError(f"{path[-1]} depends on {name}, which is not a service")
        for dep in dependencies(services[name]):
            visit(dep, (*path, name))
        order.append(name)

    for name in services:
        visit(name, ())
    return order


@dataclass
class Running:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str]
    command: list[str]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class ComposeRun:
    """The services of one compose file with one ``.env``, run under ``root``."""

    compose: Mapping[str, Any]
    env_file: Mapping[str, str]
    root: Path
    image_dirs: tuple[str, ...] = ()
    """Folders the project's image creates (the Dockerfile's ``mkdir -p``), made per service."""
    running: dict[str, Running] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    _ports: dict[tuple[str, int], int] = field(default_factory=dict)
    _done: set[tuple[str, str]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.services: dict[str, Any] = interpolate(dict(self.compose["services"]), self.env_file)
        self.root.mkdir(parents=True, exist_ok=True)
        names = "|".join(re.escape(n) for n in sorted(self.services, key=len, reverse=True))
        self._host_port = re.compile(rf"(?<=[/@])({names}):(\d+)\b")
        for name, service in self.services.items():
            for text in _strings(service):
                for host, port in self._host_port.findall(text):
                    self.port(host, int(port))
            for spec in service.get("ports", []):
                self.port(name, int(str(spec).rsplit(":", 1)[-1].split("/")[0]))

    # -- rewriting ---------------------------------------------------------------------------------
    def port(self, service: str, container_port: int) -> int:
        """The loopback port standing for ``service:container_port``."""
        if (service, container_port) not in self._ports:
            self._ports[service, container_port] = free_port()
        return self._ports[service, container_port]

    def own_ports(self, service: str) -> dict[int, int]:
        return {c: h for (s, c), h in self._ports.items() if s == service}

    def volume(self, name: str) -> Path:
        return self.root / "volumes" / name

    def _mounts(self, service: str) -> dict[str, Path]:
        mounts: dict[str, Path] = {}
        for spec in self.services[service].get("volumes", []):
            source, target = str(spec).split(":")[:2]
            mounts[target] = (REPO / source).resolve() if source.startswith(".") else self.volume(source)
        mounts["/tmp"] = self.root / "image" / service / "tmp"  # the container's own /tmp
        return mounts

    def rewrite(self, service: str, text: str) -> str:
        """``text`` as seen from this machine: hosts, the service's own ports, container paths."""
        text = self._host_port.sub(lambda m: f"127.0.0.1:{self.port(m.group(1), int(m.group(2)))}", text)
        own = self.own_ports(service)
        text = re.sub(r"\blocalhost:(\d+)\b", lambda m: f"127.0.0.1:{own.get(int(m.group(1)), m.group(1))}", text)
        mounts = self._mounts(service)
        targets = "|".join(re.escape(t) for t in sorted(mounts, key=len, reverse=True))
        return re.sub(rf"(?<![\w./-])({targets})(?=/|$)", lambda m: str(mounts[m.group(1)]), text)

    def command(self, service: str) -> list[str]:
        """The service's command: its listening ports mapped, all interfaces narrowed to loopback."""
        own = self.own_ports(service)
        out = []
        for token in map(str, self.services[service]["command"]):
            listen = re.fullmatch(r"((?:0\.0\.0\.0)?:)?(\d+)", token)  # 8000, :8787, 0.0.0.0:8787
            if listen and int(listen.group(2)) in own:
                token = f"{'127.0.0.1:' if listen.group(1) else ''}{own[int(listen.group(2))]}"
            token = self.rewrite(service, token)
            out.append("127.0.0.1" if token == "0.0.0.0" else token)
        if out[:2] == ["dask", "scheduler"] and "--host" not in out:
            out += ["--host", "127.0.0.1"]  # in its container every interface is its own; here they are this machine's
        return out

    def environment(self, service: str) -> dict[str, str]:
        env = self.services[service].get("environment") or {}
        if isinstance(env, list):
            env = dict(item.split("=", 1) for item in env)
        return {k: self.rewrite(service, "" if v is None else str(v)) for k, v in env.items()}

    # -- running -------------------------------------------------------------------------------------
    def _process_env(self, service: str) -> dict[str, str]:
        keep = ("HOME", "LANG", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS")
        base = {k: os.environ[k] for k in keep if k in os.environ}
        tmp = self.root / "image" / service / "tmp"
        base.update(PATH=f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}", PYTHONPATH=str(REPO), TMPDIR=str(tmp))
        return {**base, **self.environment(service)}

    def start(self, name: str) -> Running:
        service = self.services[name]
        for target, folder in self._mounts(name).items():
            folder.mkdir(parents=True, exist_ok=True)
        for folder in self.image_dirs:
            Path(self.rewrite(name, folder)).mkdir(parents=True, exist_ok=True)
        env = self._process_env(name)
        if str(service.get("image", "")).startswith("redis:"):
            args = self.command(name)[1:] if service.get("command") else []
            data = self._mounts(name).get(REDIS_WORKDIR, self.root / "image" / name / "data")
            data.mkdir(parents=True, exist_ok=True)
            command = [REDIS_SERVER, *args, "--port", str(self.port(name, REDIS_PORT)), "--bind", "127.0.0.1",
                       "--dir", str(data), "--daemonize", "no"]
        else:
            command = self.command(name)
            program = BIN / command[0]
            if not program.exists():
                raise ComposeError(f"{name}: {command[0]} is not installed in {BIN}")
            command[0] = str(program)
        log = self.root / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as handle:
            proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.running[name] = Running(name, proc, log, env, command)
        return self.running[name]

    def healthy(self, name: str) -> bool:
        """One run of the service's healthcheck test."""
        check = self.services[name].get("healthcheck")
        if not check:
            raise ComposeError(f"{name} has no healthcheck, but a service waits for it to be healthy")
        test = [self.rewrite(name, str(t)) for t in check["test"]]
        if test[0] == "CMD-SHELL":
            argv = ["sh", "-c", test[1]]
        elif test[0] == "CMD":
            argv = test[1:]
        else:
            raise ComposeError(f"{name}: healthcheck test {test[0]!r} is not CMD or CMD-SHELL")
        if argv[0] == "redis-cli":  # the image's redis-cli talks to its own default port
            argv[1:1] = ["-h", "127.0.0.1", "-p", str(self.port(name, REDIS_PORT))]
        timeout = seconds(check.get("timeout"), 30)
        try:
            done = subprocess.run(argv, env=self.running[name].env, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return done.returncode == 0

    def wait(self, name: str, condition: str, timeout: float) -> None:
        """Block until ``name`` meets the depends_on ``condition`` (ComposeError with its log if not)."""
        if (name, condition) in self._done:
            return
        run = self.running.get(name)
        if run is None:
            raise ComposeError(f"{name} was never started")
        deadline = time.monotonic() + timeout
        if condition == "service_started":
            pass
        elif condition == "service_healthy":
            check = self.services[name].get("healthcheck") or {}
            budget = seconds(check.get("start_period"), 0) + seconds(check.get("interval"), 30) * int(check.get("retries", 3))
            deadline = time.monotonic() + min(timeout, budget)
            while not self.healthy(name):
                if run.proc.poll() is not None:
                    raise self.failure(name, f"exited with {run.proc.returncode} before it was healthy")
                if time.monotonic() > deadline:
                    raise self.failure(name, "never became healthy")
                time.sleep(0.5)
        elif condition == "service_completed_successfully":
            try:
                code = run.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise self.failure(name, f"still running after {timeout:.0f}s") from None
            if code != 0:
                raise self.failure(name, f"exited with {code}")
        else:
            raise ComposeError(f"unknown depends_on condition {condition!r}")
        self._done.add((name, condition))

    def failure(self, name: str, what: str) -> ComposeError:
        tail = self.running[name].log_text()[-3000:] if name in self.running else ""
        return ComposeError(f"{name} {what}; its log ends:\n{tail}")

    def up(self, timeout: float) -> None:
        """Start every service compose would start, each once its dependencies meet their conditions."""
        deadline = time.monotonic() + timeout
        for name in start_order(self.services):
            service = self.services[name]
            if not is_project_service(service) and not str(service.get("image", "")).startswith("redis:"):
                self.skipped.append(name)
                continue
            for dep, condition in dependencies(service).items():
                if dep in self.skipped:
                    raise ComposeError(f"{name} depends on {dep}, an image that cannot run here")
                self.wait(dep, condition, deadline - time.monotonic())
            self.start(name)

    def down(self) -> None:
        for run in reversed(list(self.running.values())):
            if run.proc.poll() is None:
                os.killpg(run.proc.pid, signal.SIGTERM)
        for run in self.running.values():
            try:
                run.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(run.proc.pid, signal.SIGKILL)
                run.proc.wait()


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    return []
