"""Killing a Dask worker process in the middle of a job, for the tests of recovery from a lost worker."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from distributed import Client

T = TypeVar("T")


def kill_a_worker_during(client: Client, job: Callable[[], T], started: Callable[[], bool],
                         timeout: float = 180.0) -> tuple[T, bool]:
    """Run ``job`` in a thread, SIGKILL one of ``client``'s worker processes once ``started()`` holds
    (or after 60 s), and return the job's result with whether the job was still running when the
    worker died. The job's own exception is raised here."""
    victim = next(iter(client.run(os.getpid).values()))
    out: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            out.append(job())
        except BaseException as err:  # noqa: BLE001 - raised again below, in the test's thread
            errors.append(err)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 60
    while not started() and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(victim, signal.SIGKILL)
    killed_mid_job = thread.is_alive()
    thread.join(timeout=timeout)
    if errors:
        raise errors[0]
    assert not thread.is_alive(), f"the job still runs {timeout} s after its worker was killed"
    assert victim not in client.run(os.getpid).values(), "the killed worker is still there"
    return out[0], killed_mid_job
