"""docker-compose.yml: checked for consistency, and (no Docker engine here) run as compose would run it,
its services as processes on loopback (tests/compose_runner.py)."""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bench.processes import free_port
from cluster.cli import build_parser
from tests.compose_runner import REDIS_PORT, ComposeError, ComposeRun, Running, interpolate, read_env_file

pytest_plugins = ["tests.api_helpers"]

REPO = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
EXAMPLE_ENV = read_env_file(REPO / "deploy.env.example")


def _hybridrec_commands() -> set[str]:
    parser = build_parser()
    return set(parser._subparsers._group_actions[0].choices)


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_service_command_names_a_real_entry_point(name: str) -> None:
    service = SERVICES[name]
    assert "restart" in service, f"{name}: no restart policy"
    command = interpolate(service.get("command"), EXAMPLE_ENV)
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

_VAR = re.compile(r"\$\{([A-Z_]+)(?:(:\?|:-)([^}]*))?\}")
SECRETS = {"REDIS_PASSWORD", "HYBRIDREC_API_KEYS", "HYBRIDREC_ADMIN_KEYS"}


def test_secrets_come_from_the_env_file_and_nothing_else_is_exposed() -> None:
    text = (REPO / "docker-compose.yml").read_text()
    names = _VAR.findall(text)
    required = {n for n, form, _ in names if form == ":?"}
    assert required == set(EXAMPLE_ENV) == SECRETS
    assert all(message for n, form, message in names if n in SECRETS), "every secret is required (${VAR:?message})"
    assert {form for n, form, _ in names if n not in SECRETS} == {":-"}, "other settings are optional (${VAR:-default})"
    assert ".env" in (REPO / ".gitignore").read_text().split()
    assert "ports" not in SERVICES["redis"]
    assert "--requirepass" in SERVICES["redis"]["command"]
    for name in ("dask-scheduler", "prometheus", "grafana"):
        assert all(p.startswith("127.0.0.1:") for p in SERVICES[name]["ports"]), name
    with pytest.raises(KeyError, match="REDIS_PASSWORD: set REDIS_PASSWORD in .env"):
        interpolate(SERVICES["api"]["environment"], {})


def test_optional_settings_default_to_production_and_are_documented() -> None:
    """The trainer's and the data step's ``${VAR:-default}`` defaults are the code's own defaults."""
    from cluster.jobs import DEMO_SYNTHETIC_INTERACTIONS
    from training.pipeline import DEFAULT_SIGNALS
    from training.tuner import GAConfig

    text = (REPO / "docker-compose.yml").read_text()
    defaults = {n: d for n, form, d in _VAR.findall(text) if form == ":-"}
    assert defaults == {"HYBRIDREC_DATA": "", "HYBRIDREC_MOVIELENS_URL": "",
                        "HYBRIDREC_SYNTHETIC_INTERACTIONS": str(DEMO_SYNTHETIC_INTERACTIONS),
                        "HYBRIDREC_SIGNALS": ",".join(DEFAULT_SIGNALS), "HYBRIDREC_GENERATIONS": str(GAConfig().generations),
                        "HYBRIDREC_ERASURE_SALT": ""}
    example, readme = (REPO / "deploy.env.example").read_text(), (REPO / "README.md").read_text()
    for name in defaults:
        assert f"# {name}=" in example, f"deploy.env.example does not mention {name}"
        assert name in readme, f"README.md does not mention {name}"
    data_roots = {name: SERVICES[name]["command"][SERVICES[name]["command"].index("--data-root") + 1]
                  for name in ("data", "trainer", "retrainer")}
    assert len(set(data_roots.values())) == 1, data_roots
    assert SERVICES["trainer"]["depends_on"]["data"]["condition"] == "service_completed_successfully"


# -- the whole file, run ---------------------------------------------------------------------------------

SMALL_TRAINING = {"HYBRIDREC_SYNTHETIC_INTERACTIONS": "4000", "HYBRIDREC_SIGNALS": "als,content,popularity",
                  "HYBRIDREC_GENERATIONS": "2"}
"""The test's .env: little data and a short GA, as an operator trying the stack out would choose."""


def _test_env_file(folder: Path) -> dict[str, str]:
    """deploy.env.example's secrets plus small settings; the GroupLens mirror is a closed port (offline)."""
    lines = [(REPO / "deploy.env.example").read_text(), *(f"{k}={v}" for k, v in SMALL_TRAINING.items()),
             f"HYBRIDREC_MOVIELENS_URL=http://127.0.0.1:{free_port()}/movielens"]
    (folder / ".env").write_text("\n".join(lines) + "\n")
    return read_env_file(folder / ".env")


def _image_dirs() -> tuple[str, ...]:
    return tuple(re.findall(r"mkdir -p (/\S+)", (REPO / "Dockerfile").read_text()))


def _api_key(keys: str, scope: str) -> str:
    """The first key of a HYBRIDREC_API_KEYS value whose scopes include ``scope`` (default read+write)."""
    for entry in keys.split(","):
        key, _, rest = entry.partition(":")
        scopes = rest.split("@")[0] if rest else "read+write"
        if scope in scopes.split("+"):
            return key.split("@")[0]
    raise AssertionError(f"no {scope} key in {keys!r}")


def _wait_for_log(run: Running, text: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = run.log_text()
        if text in log:
            return log
        if run.proc.poll() is not None:
            raise AssertionError(f"{run.name} exited with {run.proc.returncode} before logging {text!r}:\n{log[-3000:]}")
        time.sleep(0.5)
    raise AssertionError(f"{run.name} did not log {text!r} in {timeout:.0f}s:\n{run.log_text()[-3000:]}")


@pytest.fixture
def compose_run(tmp_path: Path) -> Iterator[ComposeRun]:
    run = ComposeRun(COMPOSE, _test_env_file(tmp_path), tmp_path / "compose", image_dirs=_image_dirs())
    try:
        yield run
    finally:
        run.down()


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_every_service_starts_from_a_fresh_volume(compose_run: ComposeRun) -> None:
    """docker-compose.yml as compose runs it, on empty volumes and offline: the data step falls back
    to synthetic data, the trainer publishes, the API answers a keyed recommendations query and
    refuses an anonymous write, the retrainer logs its first decision and stays up; the data step
    run again on the filled volume reuses the data."""
    import httpx
    import redis as redis_client

    from hybrid.bundle import latest_version

    env = compose_run.env_file
    compose_run.up(timeout=300)
    assert set(compose_run.skipped) == {"prometheus", "grafana"}
    compose_run.wait("api", "service_healthy", timeout=200)
    data_log = compose_run.running["data"].log_text()
    assert "data: download failed" in data_log and f"{int(env['HYBRIDREC_SYNTHETIC_INTERACTIONS']):,} interactions" in data_log

    bundle_root = compose_run.environment("api")["HYBRIDREC_BUNDLE_ROOT"]
    version = latest_version(bundle_root)
    assert version is not None, f"nothing published under {bundle_root}"
    url = f"http://127.0.0.1:{compose_run.port('api', 8000)}"
    query = '{ recommendations(userId: "3", first: 10) { modelVersion userKnown items { score item { id title } } } }'
    read_key = _api_key(env["HYBRIDREC_API_KEYS"], "read")
    answer = httpx.post(f"{url}/graphql", json={"query": query}, headers={"x-api-key": read_key}, timeout=60).json()
    assert "errors" not in answer, answer
    recs = answer["data"]["recommendations"]
    assert recs["modelVersion"] == version and recs["userKnown"]
    assert len(recs["items"]) == 10 and all(i["item"]["title"] for i in recs["items"])
    health = httpx.get(f"{url}/health", timeout=30).json()
    assert health["redis"] == "up" and "dev_mode" not in health
    assert "HYBRIDREC_DEV" not in compose_run.running["api"].env
    with pytest.raises(redis_client.AuthenticationError):  # Redis wants the .env's password
        redis_client.Redis(port=compose_run.port("redis", REDIS_PORT)).ping()

    retrainer = compose_run.running["retrainer"]
    log = _wait_for_log(retrainer, "retrain: not published:", timeout=120)
    assert "0 new interactions since the live bundle, fewer than 1000" in log
    assert retrainer.proc.poll() is None, "the retrainer stopped after its first decision"

    mutation = {"query": 'mutation { recordInteraction(userId: "3", itemId: "4") { __typename } }'}
    anonymous = httpx.post(f"{url}/graphql", json=mutation, timeout=30).json()
    assert anonymous["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    write_key = _api_key(env["HYBRIDREC_API_KEYS"], "write")
    keyed = httpx.post(f"{url}/graphql", json=mutation, headers={"x-api-key": write_key}, timeout=30).json()
    assert keyed["data"]["recordInteraction"]["__typename"] == "InteractionRecorded", keyed

    prepared = Path(compose_run.command("data")[compose_run.command("data").index("--data-root") + 1]) / "raw"
    marker = (prepared / "prepared.json").read_text()
    again = subprocess.run(compose_run.command("data"), env=compose_run.running["data"].env, cwd=REPO,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "data: reusing synthetic MovieLens-like data" in again.stderr
    assert (prepared / "prepared.json").read_text() == marker


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_trainer_without_data_stops_the_stack(tmp_path: Path) -> None:
    """The file as it was before the data step (HYBRIDREC_DATA=/shared/raw, which nothing fills):
    the trainer exits with the DataError and neither the retrainer nor the API is started."""
    import copy

    before = copy.deepcopy(COMPOSE)
    services = before["services"]
    del services["data"]
    del services["trainer"]["depends_on"]["data"]
    for service in services.values():
        if "HYBRIDREC_DATA" in service.get("environment", {}):
            service["environment"]["HYBRIDREC_DATA"] = "/shared/raw"
    run = ComposeRun(before, _test_env_file(tmp_path), tmp_path / "compose", image_dirs=_image_dirs())
    try:
        with pytest.raises(ComposeError, match=r"trainer exited with 2(.|\n)*volumes/shared/raw: no such file or folder"):
            run.up(timeout=150)
    finally:
        run.down()
    assert "api" not in run.running and "retrainer" not in run.running
