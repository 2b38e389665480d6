"""The exact search of a served bundle, three ways: is the int8 screen's numba kernel still worth it?

    python bench/search_paths.py --bundle-root ROOT            # ROOT holds a bundle version and latest
    python bench/search_paths.py --bundle-root ROOT --users 280 --rounds 3

Each bundle user's query and excluded history (``HybridRecommender.plan``: the tuned blend, the
trained history left out) is ranked for the top k by:

- ``screen``: what serves catalogues up to graphql_api.engine.EXACT_SCAN_ITEMS, the int8 screen
  and its numba kernel (``FusedIndex.screen.top_k``, hybrid/screening.py);
- ``usearch-i8``: usearch's exact (brute-force, SIMD) search over the screen's int8 codes for the k
  + excluded best, then the excluded dropped and the rest rescored in float32 (``screening.ranked``);
- ``numpy``: the float32 product of the batch with every item vector (BLAS, one thread as served)
  and the project's top-k (etl.topk.topk);
- ``hnsw-space`` (bundles with a graph space): the bundle's usearch graph searched as a catalogue
  above EXACT_SCAN_ITEMS is (``FusedIndex.search``: HNSW in the graph space, the candidates ranked
  from the fused vectors), an approximate path.

Batches of 1 and of 7 queries (the API's batched searches hold about 7 under load,
graphql_api/batching.py), with a 32 MB buffer read between batches (the vectors out of cache, as
between requests in a server). Prints ms per query (median over batches) per round, the paths
interleaved in each round, the load average at each round, and the share of queries whose top k
equals the screen's (ids and order). usearch-i8 is a candidate path, not an exact one: its int8
ranking may miss an item of the exact top k.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

Search = Callable[[np.ndarray, list[np.ndarray]], np.ndarray]


def paths(index, k: int) -> dict[str, Search]:  # noqa: ANN001 - a FusedIndex
    """Each path: (queries, excluded rows per query) -> (m, k) item rows, best first."""
    from usearch.index import MetricKind, search

    from etl.topk import topk
    from hybrid.screening import ranked

    screen, vectors = index.screen, np.asarray(index.vectors)

    def by_screen(q: np.ndarray, excludes: list[np.ndarray]) -> np.ndarray:
        return screen.top_k(q, k, excludes)[0]

    def by_usearch(q: np.ndarray, excludes: list[np.ndarray]) -> np.ndarray:
        p = q * screen.scale  # the query scaled as the codes are, then to int8 (hybrid/screening.py)
        p8 = np.clip(np.rint(p / (np.abs(p).max(axis=1, keepdims=True) / 127)), -127, 127).astype(np.int8)
        found = search(screen.codes, p8, k + max(len(e) for e in excludes), MetricKind.IP, exact=True, threads=1)
        out = np.empty((len(q), k), dtype=np.int64)
        for j, ex in enumerate(excludes):
            cand = screen.order[np.asarray(found.keys[j], dtype=np.int64)]
            out[j] = ranked(vectors, q[j], cand[~np.isin(cand, ex)], k)[0]
        return out

    def by_numpy(q: np.ndarray, excludes: list[np.ndarray]) -> np.ndarray:
        scores = q @ vectors.T
        return np.stack([topk(s, k, exclude=ex)[0] for s, ex in zip(scores, excludes, strict=True)])

    ways = {"screen": by_screen, "usearch-i8": by_usearch, "numpy": by_numpy}
    if index.space is not None:
        import dataclasses

        from hybrid.index import FusedIndex

        # the bundle's graph as a catalogue above graphql_api.engine.EXACT_SCAN_ITEMS is served:
        # HNSW in the graph space, candidates ranked from the fused vectors (no exact thresholds)
        graph = FusedIndex(index.graph, index.vectors, dataclasses.replace(index.config, exact_count=0, exact_share=0.0),
                           mapped=index.mapped, space=index.space)

        def by_graph(q: np.ndarray, excludes: list[np.ndarray]) -> np.ndarray:
            return graph.search(q, k, exclude=excludes)[0]

        ways["hnsw-space"] = by_graph
    return ways


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle-root", type=Path, required=True, help="a bundle root (its latest is searched)")
    parser.add_argument("--users", type=int, default=280, help="users whose queries are searched")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, every path in each")
    parser.add_argument("-k", type=int, default=10)
    args = parser.parse_args(argv)

    from graphql_api.engine import serving_threads
    from hybrid import bundle as bundles
    from hybrid.recommender import HybridRecommender

    serving_threads()
    bundle = bundles.load(args.bundle_root, mmap=True)
    recommender = HybridRecommender(bundle)
    plans = [recommender.plan(str(u), args.k) for u in bundle.users.ids[: args.users]]
    queries = np.stack([p.query for p in plans]).astype(np.float32)
    excludes = [np.asarray(p.exclude, dtype=np.int64) for p in plans]
    ways = paths(bundle.index, args.k)
    reference = ways["screen"](queries, excludes)
    for name, way in ways.items():
        same = np.mean([np.array_equal(a, b) for a, b in zip(way(queries, excludes), reference, strict=True)])
        print(f"{name:11s} top-{args.k} equal to the screen's on {same:.1%} of {len(queries)} queries")

    flush = np.ones(8 << 20, dtype=np.float32)  # 32 MB
    print(f"{len(bundle.index)} items x {bundle.index.dim} dims; ms per query, median over batches")
    for round_ in range(args.rounds):
        print(f"round {round_ + 1}, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        for m in (1, 7):
            for name, way in ways.items():
                times = []
                for start in range(0, len(queries) - m + 1, m):
                    flush.sum()
                    began = time.perf_counter()
                    way(queries[start : start + m], excludes[start : start + m])
                    times.append(time.perf_counter() - began)
                print(f"  batch {m}  {name:11s} {1e3 * np.median(times) / m:6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
