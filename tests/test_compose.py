"""docker-compose.yml is not run here (no Docker engine): check that it is consistent instead."""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cluster.cli import build_parser

pytest_plugins = ["tests.api_helpers"]

REPO = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def _hybridrec_commands() -> set[str]:
    parser = build_parser()
    return set(parser._subparsers._group_actions[0].choices)


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_service_command_names_a_real_entry_point(name: str) -> None:
    service = SERVICES[name]
    assert "restart" in service, f"{name}: no restart policy"
    command = service.get("command")
    if "image" in service and "build" not in service:
        return  # third-party image (redis, prometheus, grafana): its own entry point
    assert command, f"{name}: project service without a command"
    program = command[0]
    if program == "hybridrec":
        assert command[1] in _hybridrec_commands(), f"{name}: `hybridrec {command[1]}` does not exist"
        with pytest.raises(SystemExit) as exit_:
            build_parser().parse_args([*command[1:], "--help"])
        assert exit_.value.code == 0
    elif program == "dask":
        assert command[1] in ("scheduler", "worker")
        assert shutil.which("dask", path=str(Path(sys.executable).parent)), "dask console script missing"
    elif program == "uvicorn":
        module, _, attr = command[1].partition(":")
        assert hasattr(importlib.import_module(module), attr), f"{name}: {command[1]} not importable"
        assert "--factory" in command
    else:
        pytest.fail(f"{name}: unknown program {program}")


def test_ports_agree() -> None:
    env = SERVICES["api"]["environment"]
    scheduler_port = SERVICES["dask-scheduler"]["command"][SERVICES["dask-scheduler"]["command"].index("--port") + 1]
    assert env["DASK_SCHEDULER_ADDRESS"] == f"tcp://dask-scheduler:{scheduler_port}"
    assert f"127.0.0.1:{scheduler_port}:{scheduler_port}" in SERVICES["dask-scheduler"]["ports"]
    assert SERVICES["dask-worker"]["command"][2] == env["DASK_SCHEDULER_ADDRESS"]
    api_cmd = SERVICES["api"]["command"]
    api_port = api_cmd[api_cmd.index("--port") + 1]
    assert f"{api_port}:{api_port}" in SERVICES["api"]["ports"]
    assert f"localhost:{api_port}/health" in " ".join(SERVICES["api"]["healthcheck"]["test"])
    assert re.match(r"redis://:\$\{REDIS_PASSWORD:\?[^}]+\}@redis:6379/0$", env["HYBRIDREC_REDIS_URL"])
    prom = yaml.safe_load((REPO / "ops/prometheus/prometheus.yml").read_text())
    targets = {t for job in prom["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    assert f"api:{api_port}" in targets


def test_volumes_agree() -> None:
    declared = set(COMPOSE["volumes"])
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name}: bind mount {source} missing from the repository"
            else:
                assert source in declared, f"{name}: volume {source} not declared"
    trainer_env = SERVICES["trainer"]["environment"]
    api_env = SERVICES["api"]["environment"]
    assert trainer_env["HYBRIDREC_BUNDLE_ROOT"] == api_env["HYBRIDREC_BUNDLE_ROOT"]
    assert "--bundle-root" in SERVICES["trainer"]["command"]
    assert SERVICES["trainer"]["command"][SERVICES["trainer"]["command"].index("--bundle-root") + 1] == api_env["HYBRIDREC_BUNDLE_ROOT"]


def test_redis_persists() -> None:
    assert "--appendonly" in SERVICES["redis"]["command"]
    assert SERVICES["api"]["depends_on"]["trainer"]["condition"] == "service_completed_successfully"


def test_grafana_dashboard_uses_metrics_the_api_exports() -> None:
    import json

    from graphql_api.metrics import Metrics

    exported = {m.name for m in Metrics().registry.collect()}
    dashboard = json.loads((REPO / "ops/grafana/dashboards/hybridrec-api.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert exprs
    for expr in exprs:
        for name in re.findall(r"hybridrec_[a-z_]+", expr):
            base = re.sub(r"_(bucket|count|sum|total)$", "", name)
            assert base in exported, f"dashboard queries {name}, which the API does not export"


# -- secrets and exposure --------------------------------------------------------------------------------

EXAMPLE_ENV = dict(line.split("=", 1) for line in (REPO / "deploy.env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
_VAR = re.compile(r"\$\{([A-Z_]+)(?::\?([^}]*))?\}")


def _interpolate(value: object, env: dict[str, str]) -> object:
    """Compose's ``${VAR}`` / ``${VAR:?message}`` (the forms this file uses), strictly."""
    if isinstance(value, list):
        return [_interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: _interpolate(v, env) for k, v in value.items()}
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        if match.group(1) not in env:
            raise KeyError(f"{match.group(1)}: {match.group(2)}")
        return env[match.group(1)]

    return _VAR.sub(one, value)


def test_secrets_come_from_the_env_file_and_nothing_else_is_exposed() -> None:
    text = (REPO / "docker-compose.yml").read_text()
    names = set(_VAR.findall(text))
    assert {n for n, _ in names} == set(EXAMPLE_ENV) == {"REDIS_PASSWORD", "HYBRIDREC_API_KEYS", "HYBRIDREC_ADMIN_KEYS"}
    assert all(message for _, message in names), "every secret is required (${VAR:?message})"
    assert ".env" in (REPO / ".gitignore").read_text().split()
    assert "ports" not in SERVICES["redis"]
    assert "--requirepass" in SERVICES["redis"]["command"]
    for name in ("dask-scheduler", "prometheus", "grafana"):
        assert all(p.startswith("127.0.0.1:") for p in SERVICES[name]["ports"]), name
    with pytest.raises(KeyError, match="REDIS_PASSWORD: set REDIS_PASSWORD in .env"):
        _interpolate(SERVICES["api"]["environment"], {})


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_redis_and_api_run_as_compose_starts_them(api_root: Path, tmp_path: Path) -> None:
    """The redis and api services' own commands and environment, with deploy.env.example's values,
    as processes on loopback: Redis wants its password, the API starts with the keys and refuses
    anonymous writes."""
    import httpx
    import redis as redis_client

    from tests.api_helpers import REDIS_SERVER, free_port, start_uvicorn, wait_for_port

    redis_cmd = _interpolate(SERVICES["redis"]["command"], EXAMPLE_ENV)
    assert redis_cmd[0] == "redis-server"
    port = free_port()
    proc = subprocess.Popen([REDIS_SERVER, *redis_cmd[1:], "--port", str(port), "--bind", "127.0.0.1",
                             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        with pytest.raises(redis_client.AuthenticationError):
            redis_client.Redis(port=port).ping()
        env = _interpolate(SERVICES["api"]["environment"], EXAMPLE_ENV)
        env["HYBRIDREC_REDIS_URL"] = env["HYBRIDREC_REDIS_URL"].replace("@redis:6379", f"@127.0.0.1:{port}")
        assert redis_client.Redis.from_url(env["HYBRIDREC_REDIS_URL"]).ping()
        env.update(HYBRIDREC_BUNDLE_ROOT=str(api_root), HYBRIDREC_EVENTS_DIR=str(tmp_path / "events"))
        env = {k: str(v) for k, v in env.items() if k.startswith("HYBRIDREC_")}
        assert "HYBRIDREC_DEV" not in env and "HYBRIDREC_DEV" not in os.environ
        server = start_uvicorn(env, tmp_path / "api.log")
        try:
            mutation = {"query": 'mutation { recordInteraction(userId: "3", itemId: "4") { __typename } }'}
            health = httpx.get(f"{server.url}/health", timeout=10).json()
            anonymous = httpx.post(f"{server.url}/graphql", json=mutation, timeout=30).json()
            key = EXAMPLE_ENV["HYBRIDREC_API_KEYS"].split(",")[1]
            keyed = httpx.post(f"{server.url}/graphql", json=mutation, headers={"x-api-key": key}, timeout=30).json()
        finally:
            server.stop()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert health["redis"] == "up" and "dev_mode" not in health
    assert anonymous["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert keyed["data"]["recordInteraction"]["__typename"] == "InteractionRecorded"
