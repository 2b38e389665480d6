"""tests/hang_guard.py ends a run whose test is stuck where pytest-timeout's signal cannot reach it,
printing the stuck test's stack, instead of letting it hold CI until CI's own limit."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

STUCK = '''
import signal, time
import pytest

@pytest.mark.timeout(1)
def test_stuck_where_no_signal_reaches():
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})  # pytest-timeout's signal never arrives
    time.sleep(60)

def test_never_reached():
    pass
'''


@pytest.mark.timeout(120)
def test_a_test_stuck_past_its_timeout_ends_the_run_with_its_stack(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_stuck.py").write_text(STUCK)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.hang_guard",
                           "-o", "hang_margin_s=2", "test_stuck.py"],
                          cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=100)
    took = time.monotonic() - started
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Timeout (0:00:03)" in done.stderr and "test_stuck_where_no_signal_reaches" in done.stderr
    assert "test_never_reached" not in done.stdout  # the run ended there
    assert took < 50  # the sleep alone would take 60 s


AWAITING = '''
import asyncio, time
import pytest

@pytest.mark.anyio
@pytest.mark.timeout(1)
async def test_awaiting_what_never_comes():
    async def busy():  # where pytest-timeout's signal lands: its failure ends this task, not the test
        while True:
            time.sleep(0.05)
            await asyncio.sleep(0)
    background = asyncio.get_running_loop().create_task(busy())
    await asyncio.Event().wait()

@pytest.fixture
def anyio_backend():
    return "asyncio"
'''


@pytest.mark.timeout(120)
def test_a_coroutine_awaiting_forever_is_reported_with_its_task_stack(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_awaiting.py").write_text(AWAITING)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.hang_guard",
                           "-o", "hang_margin_s=4", "test_awaiting.py"],
                          cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=100)
    assert done.returncode == 1, done.stdout + done.stderr
    report = done.stderr
    assert "test_awaiting.py::test_awaiting_what_never_comes is past its timeout" in report
    awaits = report[report.index("is past its timeout"):report.index("Timeout (0:00:05)")]
    assert "in test_awaiting_what_never_comes\n    await asyncio.Event().wait()" in awaits  # what the test awaits
