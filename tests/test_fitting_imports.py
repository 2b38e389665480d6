"""Fits side by side import scikit-learn in several threads of one process at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Nine threads released together import three scikit-learn modules for the first time in a fresh
# interpreter. Plain importlib failed in 5 of 5 such runs here ("cannot import name ... from
# partially initialized module"); models.base.fitting_module serialises them.
RACE = """
import threading
from models.base import fitting_module
names = ["sklearn.utils.extmath", "sklearn.feature_extraction.text", "sklearn.decomposition"] * 3
errors, barrier = [], threading.Barrier(len(names))
def run(name):
    barrier.wait()
    try:
        fitting_module(name)
    except Exception as error:
        errors.append(repr(error))
threads = [threading.Thread(target=run, args=(n,)) for n in names]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(len(errors), errors[:1])
"""


def test_first_imports_from_many_threads_at_once_all_succeed() -> None:
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", RACE], cwd=REPO, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.startswith("0 "), out.stdout
