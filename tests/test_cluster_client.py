"""cluster.client: one client per process, reused by every caller until close_client()."""

from __future__ import annotations

import pytest
from distributed import LocalCluster

from cluster.client import close_client, get_client


def test_scheduler_address_gives_one_client_until_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
        monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", cluster.scheduler_address)
        first = get_client(quiet=True)
        try:
            assert get_client(quiet=True) is first
            assert get_client(cluster.scheduler_address, quiet=True) is first
            assert first.submit(sum, [1, 2], pure=False).result() == 3
        finally:
            close_client()
        assert first.status == "closed"
        again = get_client(quiet=True)
        try:
            assert again is not first and again.status == "running"
        finally:
            close_client()


def test_local_cluster_is_started_once_and_closed_with_its_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    monkeypatch.setenv("HYBRIDREC_DASHBOARD", ":0")
    client = get_client(n_workers=1, quiet=True)
    try:
        assert get_client(quiet=True) is client
        cluster = client.cluster
        assert len(cluster.workers) == 1
    finally:
        close_client()
    assert client.status == "closed" and cluster.status.name == "closed"
