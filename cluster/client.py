"""The one way to get a Dask client: one per process, which callers reuse and ``close_client`` closes.

DASK_SCHEDULER_ADDRESS (or an explicit address) connects to a running cluster; otherwise a
LocalCluster sized to this machine is started and its dashboard URL printed. Either is opened on
the first call and returned by every later one (for the same address) until ``close_client()``;
models and the tuner never call this: they are handed the client (TrainingOptions.client).
"""

from __future__ import annotations

import os
import sys

import psutil
from distributed import Client, LocalCluster, default_client, get_worker
from distributed import get_client as worker_client_of_task

_OPEN: dict[str, object] = {}
"""What this process opened: 'client', its 'address' ('' for a LocalCluster) and any 'cluster'."""


def get_client(address: str | None = None, *, n_workers: int | None = None, quiet: bool = False) -> Client:
    """This process's client of ``address``, $DASK_SCHEDULER_ADDRESS, the current default client, or a
    new LocalCluster.

    Inside a Dask task (a job submitted with `hybridrec submit`) it is the worker's own client. Asking
    for another address than the open client's closes that one first (one client per process).
    """
    try:
        get_worker()
        return worker_client_of_task()
    except ValueError:
        pass
    address = address or os.environ.get("DASK_SCHEDULER_ADDRESS") or None
    opened = _OPEN.get("client")
    if opened is not None and _OPEN["address"] == (address or "") and opened.status == "running":  # type: ignore[attr-defined]
        return opened  # type: ignore[return-value]
    if opened is not None:
        close_client()
    if address:
        client = Client(address)
        _OPEN.update(client=client, address=address)
        if not quiet:
            print(f"Dask: connected to {address}; dashboard {client.dashboard_link}", file=sys.stderr)
        return client
    try:
        return default_client()
    except ValueError:
        pass
    cores = os.cpu_count() or 1
    workers = n_workers or max(1, min(cores, 8))
    memory = int(psutil.virtual_memory().total * 0.8 / workers)
    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=max(1, cores // workers),
        memory_limit=memory,
        dashboard_address=os.environ.get("HYBRIDREC_DASHBOARD", ":8787"),
    )
    client = Client(cluster)
    _OPEN.update(client=client, address="", cluster=cluster)
    if not quiet:
        print(f"Dask: LocalCluster with {workers} workers; dashboard {client.dashboard_link}", file=sys.stderr)
    return client


def close_client() -> None:
    """Close the client ``get_client`` opened in this process (and its LocalCluster, if it started one);
    the next ``get_client`` opens a new one."""
    client, cluster = _OPEN.pop("client", None), _OPEN.pop("cluster", None)
    _OPEN.pop("address", None)
    if client is not None:
        client.close()  # type: ignore[attr-defined]
    if cluster is not None:
        cluster.close()  # type: ignore[attr-defined]
