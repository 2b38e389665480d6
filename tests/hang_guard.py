"""The last guard against a hung test (hooks that tests/conftest.py takes in).

pytest-timeout's signal fails a test stuck in Python code. A test stuck in C (a library waiting
forever under a released GIL) or waiting for a GIL that another thread never releases never sees
that signal, and would hold the run until CI's own limit with nothing printed. Past its
pytest-timeout limit plus ``hang_margin_s`` (ini, default 120 s), faulthandler's watchdog, a C
thread that needs neither the main thread nor the GIL, prints every thread's Python stack to the
real stderr and ends the run with exit status 1.
"""

from __future__ import annotations

import faulthandler
import os
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
    if limit > 0:
        margin = float(item.config.getini("hang_margin_s"))
        faulthandler.dump_traceback_later(limit + margin, exit=True, file=item.config.stash[_REAL_STDERR])
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
