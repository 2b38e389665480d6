"""Faults under load, with real processes: redis-server killed and restarted, the API killed and
restarted while interactions are recorded, new bundles published. Each test states what is lost:
nothing (every acknowledged interaction is found afterwards) and, where the design promises it, no
failed request. bench/faults.py runs the same scenarios longer and prints the figures.

A Dask worker killed during training is covered by tests/test_als.py and
tests/test_cluster_topology.py.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from bench.fault_scenarios import (
    FaultResult,
    api_restarted_under_load,
    bundle_published_under_load,
    redis_killed_under_load,
)

pytest_plugins = ["tests.api_helpers"]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
SECONDS = 3.0


def nothing_lost(result: FaultResult) -> None:
    print(result.line())
    assert result.acknowledged > 0, f"no interaction was acknowledged under load: {result}"
    assert result.lost == 0 and result.found_after == result.acknowledged, result
    assert result.visible_through_api, f"the API counts fewer online interactions than acknowledged: {result.notes}"


def test_redis_killed_and_restarted_under_load_fails_nothing_and_loses_nothing(api_root: Path, tmp_path: Path) -> None:
    result = redis_killed_under_load(tmp_path, api_root, seconds=SECONDS, local_log=True)
    assert result.notes["requests_while_redis_down"] > 0, result  # the fault landed under load
    assert result.failed == 0 and result.refused == 0, result.failures
    assert result.notes["replayed_into_redis"], "events accepted while Redis was down never reached it"
    nothing_lost(result)


def test_redis_only_refuses_events_while_down_and_loses_none_acknowledged(api_root: Path, tmp_path: Path) -> None:
    result = redis_killed_under_load(tmp_path, api_root, seconds=SECONDS, local_log=False)
    assert result.notes["requests_while_redis_down"] > 0, result
    assert result.failed == 0, result.failures  # queries keep being answered; mutations are refused, typed
    nothing_lost(result)


@pytest.mark.parametrize(("store", "kill"), [("log", signal.SIGKILL), ("log", signal.SIGTERM), ("redis", signal.SIGKILL)],
                         ids=["log-crash", "log-graceful", "redis-crash"])
def test_api_restarted_while_recording_keeps_every_acknowledged_interaction(
        api_root: Path, tmp_path: Path, store: str, kill: signal.Signals) -> None:
    result = api_restarted_under_load(tmp_path, api_root, seconds=SECONDS, store=store, kill=kill)
    assert result.failed == 0, result.failures  # only connection errors while it restarts (unavailable)
    nothing_lost(result)


def test_bundles_published_under_load_fail_no_request(api_root: Path, tmp_path: Path, tiny_dataset, tiny_models) -> None:
    result = bundle_published_under_load(tmp_path, api_root, tiny_dataset, tiny_models, seconds=SECONDS)
    assert result.failed == 0, result.failures
    assert result.notes["all_workers_switched"], result.notes
    assert set(result.notes["versions_served"]) >= {"v1", result.notes["published"][-1]}, result.notes
    nothing_lost(result)
