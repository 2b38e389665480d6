"""Our Dask ALS against implicit 0.7's CPU ALS: same loss, same parameters, same cores.

    python bench/als_vs_implicit.py                      # ml-latest-small + 5M synthetic
    python bench/als_vs_implicit.py --interactions 5000000 25000000

Both fit 64 factors, reg 0.05, alpha 1, 15 iterations, 3 CG steps, seed 0. Ours runs on a
LocalCluster of --workers single-threaded processes; implicit gets as many threads (BLAS pinned
to one). implicit's confidence is the matrix value itself, so it is handed our confidences
(1 + alpha per interaction, every rating one implicit positive): both minimise the same loss.
Quality is NDCG@10 / Recall@10 on the protocol's test split (fit on 'train', train items
excluded). Wall times include each library's own data preparation, not ingest; the ratio is
ours / implicit (above 1: we are slower).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.harness import ml_small_dataset, synthetic_dataset  # noqa: E402
from etl.dataset import Dataset  # noqa: E402
from etl.metrics import evaluate  # noqa: E402
from models.als import ALS, ALSConfig  # noqa: E402
from models.base import TrainData, TrainingOptions  # noqa: E402

PARAMS = {"factors": 64, "regularization": 0.05, "alpha": 1.0, "iterations": 15}


def fit_implicit(train: sp.csr_matrix, threads: int) -> tuple[np.ndarray, np.ndarray, float]:
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    conf = train.copy().astype(np.float32)
    conf.data = ALSConfig(**PARAMS).confidences(conf.data)
    with threadpool_limits(1, "blas"):
        start = time.perf_counter()
        model = AlternatingLeastSquares(**PARAMS, random_state=0, num_threads=threads)
        model.fit(conf, show_progress=False)
        seconds = time.perf_counter() - start
    return model.user_factors, model.item_factors, seconds


def fit_ours(ds: Dataset, client: object) -> tuple[np.ndarray, np.ndarray, float]:
    data = TrainData(ds, "train")
    data.matrix()  # read before timing: implicit is handed the matrix too
    start = time.perf_counter()
    model = ALS(ALSConfig(**PARAMS)).fit(data, TrainingOptions(client=client, seed=0))
    return model.user_factors_, model.item_factors_, time.perf_counter() - start


def quality(ds: Dataset, x: np.ndarray, y: np.ndarray, train: sp.csr_matrix) -> tuple[float, float]:
    r = evaluate(lambda u: x[u] @ y.T, train, ds.matrix("test"))
    return r["ndcg@10"], r["recall@10"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ml-small", type=Path, default=REPO.parent / "shared/data/ml-latest-small")
    parser.add_argument("--interactions", type=int, nargs="*", default=[5_000_000],
                        help="synthetic sizes (etl.sources.synthetic); none to skip")
    parser.add_argument("--workers", type=int, default=2, help="Dask workers (1 thread each) = implicit threads")
    parser.add_argument("--cache", type=Path, default=REPO / "bench/results/tmp", help="ingested datasets")
    args = parser.parse_args(argv)

    from distributed import Client, LocalCluster

    datasets: list[tuple[str, object]] = []
    if (args.ml_small / "ratings.csv").exists():
        datasets.append(("ml-latest-small", lambda: ml_small_dataset(args.ml_small, args.cache)))
    else:
        print(f"skipping ml-latest-small: {args.ml_small} not found", file=sys.stderr)
    for n in args.interactions:
        datasets.append((f"synthetic {n:,}", lambda n=n: synthetic_dataset(n, args.cache)))

    rows = []
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster, set_as_default=False) as client:
        print(f"Dask dashboard {client.dashboard_link}; load average {os.getloadavg()[0]:.1f}", file=sys.stderr)
        for name, make in datasets:
            t = time.perf_counter()
            ds = make()
            train = ds.matrix("train")
            print(f"{name}: {ds.n_users:,} users, {ds.n_items:,} items, {train.nnz:,} train interactions "
                  f"(ready in {time.perf_counter() - t:.0f} s)", file=sys.stderr, flush=True)
            if not rows:  # warm up: worker imports and the compiled kernel load outside the timings
                ALS(ALSConfig(factors=8, iterations=1)).fit(TrainData(ds, "train"), TrainingOptions(client=client))
            xi, yi, ti = fit_implicit(train, args.workers)
            xo, yo, to = fit_ours(ds, client)
            ni, ri = quality(ds, xi, yi, train)
            no, ro = quality(ds, xo, yo, train)
            rows.append((name, train.nnz, ti, to, ni, no, ri, ro))
            print(f"  implicit {ti:.1f} s, ours {to:.1f} s; NDCG@10 {ni:.4f} vs {no:.4f}", file=sys.stderr, flush=True)

    print(f"\nALS, {PARAMS}, {args.workers} cores each; load average {os.getloadavg()[0]:.1f}")
    head = ("data", "train nnz", "implicit s", "ours s", "ours/implicit", "NDCG impl", "NDCG ours",
            "Recall impl", "Recall ours")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name, nnz, ti, to, ni, no, ri, ro in rows:
        print(f"| {name} | {nnz:,} | {ti:.1f} | {to:.1f} | {to / ti:.2f} | {ni:.4f} | {no:.4f} | {ri:.4f} | {ro:.4f} |")


if __name__ == "__main__":
    main()
