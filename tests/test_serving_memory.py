"""graphql_api.engine.serving_memory: glibc's malloc thresholds in a serving process."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

MALLOC_REUSE = """
import json, resource
import numpy as np
from graphql_api.engine import SERVING_MMAP_THRESHOLD, serving_memory

serving_memory()
PAGE = resource.getpagesize()


def faults(nbytes: int, times: int) -> int:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(times):
        block = np.empty(nbytes, np.uint8)
        block[::PAGE] = 1  # touch every page
        del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def resident() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


small = SERVING_MMAP_THRESHOLD // 4
faults(small, 1)  # the heap grows to hold it once
small_faults = faults(small, 50)
before = resident()
faults(4 * SERVING_MMAP_THRESHOLD, 3)
print(json.dumps({"small_pages": small // PAGE, "small_faults": small_faults,
                  "large": 4 * SERVING_MMAP_THRESHOLD, "kept": resident() - before}))
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="sets glibc's malloc thresholds and reads /proc")
def test_a_serving_process_reuses_request_sized_blocks_and_returns_large_ones() -> None:
    """A temporary the size of an explanation's gathers (here 1 MiB) is reused from the heap, not
    mapped afresh and faulted in page by page each time (glibc's fixed 128 KiB default did that:
    50 x 256 faults here; so did a 4 MiB threshold with the heap trimmed above 128 KiB); a block
    above the threshold goes back to the system when freed (left to glibc, its threshold rises and
    a freed 16 MiB block stays resident)."""
    done = subprocess.run([sys.executable, "-c", MALLOC_REUSE], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["small_faults"] < seen["small_pages"], seen  # 50 blocks in the pages of one
    assert seen["kept"] < seen["large"] // 4, seen
