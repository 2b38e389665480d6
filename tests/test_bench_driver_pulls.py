"""bench/driver_pulls.py compares like with like: its numpy rule picks the drivers the API's kernel
picks, the explained item itself and noise left out, ties by row."""

from __future__ import annotations

import numpy as np

from bench.driver_pulls import kernel_pulls, numpy_pulls


def test_numpy_rule_picks_the_kernels_drivers() -> None:
    rng = np.random.default_rng(5)
    factors = rng.integers(-3, 4, size=(40, 6)).astype(np.float32)  # small integers: sums exact, ties real
    history = np.array([2, 5, 7, 11, 13, 17, 19], dtype=np.int64)
    vectors = factors[history].copy()
    vectors[3] = vectors[1]  # rows 5 and 11 pull every target equally: the lower row first
    vectors[6] = 0.0  # row 19 pulls nothing: never a driver
    targets = np.array([5, 0, 11, 30, 39], dtype=np.int64)  # 5 and 11 are in the history: left out
    at_targets = np.ascontiguousarray(factors[targets])  # the items' side (FactorModel.pull_operands)
    for k in (1, 3, 7):
        rows_k, pulls_k = kernel_pulls(vectors, history, at_targets, targets, k)
        rows_n, pulls_n = numpy_pulls(vectors, history, at_targets, targets, k)
        assert np.array_equal(rows_k, rows_n), k
        assert np.allclose(pulls_k, pulls_n)
        for target, rows in zip(targets, rows_k, strict=True):
            assert target not in rows and 19 not in rows
    rows, pulls = kernel_pulls(vectors, history, at_targets, targets, 7)
    tied = [list(r) for r, target in zip(rows, targets, strict=True) if target not in (5, 11) and 5 in r]
    assert tied and all(11 in r and r.index(5) + 1 == r.index(11) for r in tied)
