"""docker-compose.yml is not run here (no Docker engine): check that it is consistent instead."""

from __future__ import annotations

import importlib
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from cluster.cli import build_parser

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
    assert f"{scheduler_port}:{scheduler_port}" in SERVICES["dask-scheduler"]["ports"]
    assert SERVICES["dask-worker"]["command"][2] == env["DASK_SCHEDULER_ADDRESS"]
    api_cmd = SERVICES["api"]["command"]
    api_port = api_cmd[api_cmd.index("--port") + 1]
    assert f"{api_port}:{api_port}" in SERVICES["api"]["ports"]
    assert f"localhost:{api_port}/health" in " ".join(SERVICES["api"]["healthcheck"]["test"])
    assert env["HYBRIDREC_REDIS_URL"].startswith("redis://redis:6379")
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
    import re

    from graphql_api.metrics import Metrics

    exported = {m.name for m in Metrics().registry.collect()}
    dashboard = json.loads((REPO / "ops/grafana/dashboards/hybridrec-api.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert exprs
    for expr in exprs:
        for name in re.findall(r"hybridrec_[a-z_]+", expr):
            base = re.sub(r"_(bucket|count|sum|total)$", "", name)
            assert base in exported, f"dashboard queries {name}, which the API does not export"
