"""The one way to get a Dask client.

DASK_SCHEDULER_ADDRESS (or an explicit address) connects to a running cluster; otherwise a
LocalCluster sized to this machine is started once per process and its dashboard URL printed.
"""

from __future__ import annotations

import os
import sys

import psutil
from distributed import Client, LocalCluster, default_client, get_worker
from distributed import get_client as worker_client_of_task

_LOCAL: dict[str, object] = {}


def get_client(address: str | None = None, *, n_workers: int | None = None, quiet: bool = False) -> Client:
    """A client for ``address``, $DASK_SCHEDULER_ADDRESS, the current default client, or a new LocalCluster.

    Inside a Dask task (a job submitted with `hybridrec submit`) it is the worker's own client.
    """
    try:
        get_worker()
        return worker_client_of_task()
    except ValueError:
        pass
    address = address or os.environ.get("DASK_SCHEDULER_ADDRESS") or None
    if address:
        client = Client(address)
        if not quiet:
            print(f"Dask: connected to {address}; dashboard {client.dashboard_link}", file=sys.stderr)
        return client
    try:
        return default_client()
    except ValueError:
        pass
    if "client" in _LOCAL:
        return _LOCAL["client"]  # type: ignore[return-value]
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
    _LOCAL.update(cluster=cluster, client=client)
    if not quiet:
        print(f"Dask: LocalCluster with {workers} workers; dashboard {client.dashboard_link}", file=sys.stderr)
    return client
