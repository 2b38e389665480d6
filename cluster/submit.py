"""Send a CLI job to a running Dask cluster: `hybridrec submit JOB ... --scheduler tcp://host:8786`.

The job's arguments are parsed (and rejected) here, then the job runs as one task on a worker,
which secedes from its thread and drives its own named tasks through the worker's client. If
that worker dies, the scheduler runs the job again elsewhere (jobs publish atomically, so a
re-run is safe). `--detach` publishes the job's future under its key and returns at once.
"""

from __future__ import annotations

import argparse
import uuid
from typing import Any

from distributed import Client, worker_client

from etl.errors import HybridrecError

#: How many times the scheduler may re-run a job whose worker died.
JOB_RETRIES = 3


def _run_remote(args: argparse.Namespace) -> str | None:
    with worker_client(separate_thread=True):
        return args.handler(args)


def submit_job(args: argparse.Namespace, scheduler: str, *, detach: bool = False) -> tuple[str, Any]:
    """Run a parsed CLI job on the cluster; returns (key, its output) or (key, None) when detached."""
    if getattr(args, "handler", None) is None:
        raise ValueError(f"`{args.command}` cannot be submitted: it has subcommands; name one")
    client = Client(scheduler)
    key = f"job-{args.command}-{uuid.uuid4().hex[:8]}"
    future = client.submit(_run_remote, args, key=key, pure=False, retries=JOB_RETRIES)
    if detach:
        client.publish_dataset(future, name=key)
        return key, None
    try:
        return key, future.result()
    finally:
        client.close()


def follow_job(key: str, scheduler: str) -> Any:
    """Wait for a detached job and return its output."""
    client = Client(scheduler)
    try:
        if key not in client.list_datasets():
            raise HybridrecError(f"no detached job {key!r} on {scheduler}")
        result = client.get_dataset(key).result()
        client.unpublish_dataset(key)
        return result
    finally:
        client.close()
