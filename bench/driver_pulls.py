"""An explanation's drivers two ways: is hybrid/explain.py's numba kernel (``_top_pulls``) worth it?

    python bench/driver_pulls.py --bundle-root ROOT            # ROOT holds a bundle version and latest
    python bench/driver_pulls.py --bundle-root ROOT --users 200 --rounds 3

For each bundle user (the first ``--users``) and each signal whose fold-in splits by history item
(``FactorModel.history_terms``), the drivers of ``--targets`` random items, ``k`` each, are picked
by:

- ``kernel``: ``hybrid.explain._top_pulls``, what the API runs;
- ``numpy``: the same rule written with numpy (``numpy_pulls``): every pull in one float64 product,
  the item itself and pulls at or below the noise floor left out, the top k by (-pull, row).

The two are interleaved call by call; prints microseconds per call (mean over the users) per signal
and round, the load average at each round, and the share of calls whose drivers are equal (rows, and pulls to 1e-9: the two sum in
different orders).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def numpy_pulls(vectors: np.ndarray, history: np.ndarray, factors: np.ndarray, targets: np.ndarray,
                k: int) -> tuple[np.ndarray, np.ndarray]:
    """``_top_pulls``'s rule with numpy (pull(j, i) = <vectors[j], factors[i]>, the operands of
    ``FactorModel.pull_operands``; ``targets`` the items' rows): rows of the drivers (-1 after the
    last) and their pulls, one row per target."""
    v64 = vectors.astype(np.float64)
    t64 = np.asarray(factors, dtype=np.float64)
    pulls = v64 @ t64.T  # history x targets
    own = history[:, None] == targets[None, :]
    norms = np.sqrt(np.einsum("ij,ij->i", v64, v64))
    floor = 1e-6 * np.sqrt(np.einsum("ij,ij->i", t64, t64)) * np.where(own, 0.0, norms[:, None]).max(axis=0)
    pulls[own | ~(pulls > floor)] = -np.inf
    order = np.lexsort((np.broadcast_to(history[:, None], pulls.shape), -pulls), axis=0)[:k]
    top = np.take_along_axis(pulls, order, axis=0).T
    kept = top > -np.inf
    return np.where(kept, history[order].T, -1), np.where(kept, top, 0.0)


def kernel_pulls(vectors: np.ndarray, history: np.ndarray, factors: np.ndarray, targets: np.ndarray,
                 k: int) -> tuple[np.ndarray, np.ndarray]:
    """What the API runs (hybrid.explain._top_pulls), same arguments and answer as numpy_pulls."""
    from hybrid.explain import _top_pulls

    found = np.full((len(targets), k), -1, dtype=np.int64)
    sims = np.zeros((len(targets), k), dtype=np.float64)
    _top_pulls(vectors, np.arange(len(history)), history, factors, targets, k, found, sims)
    return found, sims


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle-root", type=Path, required=True, help="a bundle root (its latest is read)")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--targets", type=int, default=10, help="items explained per call (a page of answers)")
    parser.add_argument("-k", type=int, default=3, help="drivers per item (the API's default)")
    args = parser.parse_args(argv)

    from graphql_api.engine import serving_threads
    from hybrid import bundle as bundles
    from models.signals import driver_signals

    serving_threads()
    bundle = bundles.load(args.bundle_root, mmap=True)
    rng = np.random.default_rng(0)
    seen = bundle.history  # users x items, the trained histories
    histories = [seen.indices[seen.indptr[u]:seen.indptr[u + 1]] for u in range(min(args.users, seen.shape[0]))]
    signals = [s for s in driver_signals() if s in bundle.fusion.models]
    ways = {"kernel": kernel_pulls, "numpy": numpy_pulls}
    for round_ in range(args.rounds):
        print(f"round {round_ + 1}, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        for signal in signals:
            model = bundle.fusion.models[signal]
            spent = dict.fromkeys(ways, 0.0)
            equal = calls = 0
            for items in histories:
                targets = rng.choice(len(bundle.items), args.targets, replace=False).astype(np.int64)
                history, vectors, factors = model.pull_operands(items, targets)  # what the API passes
                if len(history) == 0:
                    continue
                answers = []
                for name, way in ways.items():
                    start = time.perf_counter()
                    answers.append(way(vectors, history, factors, targets, args.k))
                    spent[name] += time.perf_counter() - start
                (rows_a, pulls_a), (rows_b, pulls_b) = answers
                equal += int(np.array_equal(rows_a, rows_b) and np.allclose(pulls_a, pulls_b, rtol=1e-9, atol=0))
                calls += 1
            figures = ", ".join(f"{name} {spent[name] / calls * 1e6:.0f} us" for name in ways)
            print(f"  {signal:9s} {figures} a call; drivers equal on {equal}/{calls}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
