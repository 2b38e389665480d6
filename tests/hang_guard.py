"""The last guard against a hung test (hooks that tests/conftest.py takes in).

pytest-timeout's signal fails a test stuck in Python code, but not one stuck in C (a library
waiting forever under a released GIL, or a wait for a GIL another thread never releases), and
its failure is lost when the signal lands in a background asyncio task (the task ends with it; the
test goes on waiting); its stack dump goes to the test's captured output, which a run that never
ends never shows. Either would hold the run until CI's own limit with nothing printed.

So, past a test's pytest-timeout limit plus half of ``hang_margin_s`` (ini, default 120 s), a
thread prints every thread's stack and every pending asyncio task's to the real stderr; past the
whole margin, faulthandler's watchdog (a C thread that needs neither the main thread nor the GIL)
prints every thread's stack again and ends the run with exit status 1.
"""

from __future__ import annotations

import asyncio
import faulthandler
import os
import sys
import threading
import traceback
from collections.abc import Iterator
from typing import TextIO

import pytest

_REAL_STDERR = pytest.StashKey[TextIO]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("hang_margin_s", "seconds past a test's timeout before the run is ended with every stack printed",
                  default="120")


def pytest_configure(config: pytest.Config) -> None:
    # kept before the tests' output capture points file descriptor 2 elsewhere
    config.stash[_REAL_STDERR] = os.fdopen(os.dup(2), "w")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    marker = item.get_closest_marker("timeout")
    limit = float(marker.args[0]) if marker is not None and marker.args else float(item.config.getini("timeout") or 0)
    if limit <= 0:
        yield
        return
    margin = float(item.config.getini("hang_margin_s"))
    out = item.config.stash[_REAL_STDERR]
    report = threading.Timer(limit + margin / 2, _report_stacks, (item.nodeid, out))
    report.daemon = True
    report.start()
    faulthandler.dump_traceback_later(limit + margin, exit=True, file=out)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
        report.cancel()


def _report_stacks(nodeid: str, out: TextIO) -> None:
    """Every thread's stack and every pending asyncio task's (what a hung coroutine awaits)."""
    lines = [f"\n+++ {nodeid} is past its timeout: threads and asyncio tasks +++\n"]
    names = {t.ident: t.name for t in threading.enumerate()}
    for ident, frame in sys._current_frames().items():
        lines.append(f"--- thread {names.get(ident, ident)}\n")
        lines.extend(traceback.format_stack(frame))
    for task in list(asyncio.tasks._all_tasks):  # every loop's tasks (read from this thread: a snapshot)
        if not task.done():
            lines.append(f"--- task {task.get_name()}, outermost first:\n")
            lines.extend(_awaiting(task.get_coro()))
    out.write("".join(lines))
    out.flush()


def _awaiting(coro: object) -> list[str]:
    """The chain of coroutines a task's coroutine awaits, one frame each, and what the last awaits."""
    lines: list[str] = []
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None) or getattr(coro, "ag_frame", None)
        if frame is None:
            lines.append(f"  awaiting {coro!r}\n")
            break
        lines.extend(traceback.format_stack(frame, limit=1))
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None) or getattr(coro, "ag_await", None)
    return lines
