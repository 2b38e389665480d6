"""Our Dask ALS against implicit 0.7's CPU ALS: same loss, same parameters, same cores.

    python bench/als_vs_implicit.py                      # ml-latest-small + 5M synthetic
    python bench/als_vs_implicit.py --interactions 5000000 25000000
    python bench/als_vs_implicit.py --no-ml-small --interactions 5000 --out /tmp/r   # tiny (tests)

Both fit 64 factors, reg 0.05, alpha 1, 15 iterations, 3 CG steps, seed 0. Ours runs on a
LocalCluster of --workers single-threaded processes; implicit gets as many threads (BLAS pinned
to one). implicit's confidence is the matrix value itself, so it is handed our confidences
(1 + alpha per interaction, every rating one implicit positive): both minimise the same loss.
Quality is NDCG@10 / Recall@10 on the protocol's test split (fit on 'train', train items
excluded). Wall times include each library's own data preparation, not ingest; the ratio is
ours / implicit (above 1: we are slower).

Each dataset's figures go to <out>/als_vs_implicit/<dataset>.json (both methods' NDCG@10,
Recall@10, wall and CPU seconds and peak memory, the ratios, the settings, the environment
with its load average), which bench/report.py tabulates. The project's targets (issue 3): our
quality at least implicit's at these settings on ml-latest-small (where the issue states
implicit's 0.1081), and our wall time at most TIME_RATIO_TARGET x implicit's at 25M interactions
with 2 workers; each JSON says whether its figures meet the one stated for it. A dataset whose
JSON already holds the same settings is not run again (resumable, as the other benches; --force
reruns it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.harness import (  # noqa: E402
    RESULTS,
    Measure,
    dataset_sizes,
    environment,
    measure,
    kept_result,
    ml_small_dataset,
    synthetic_dataset,
    write_json,
)
from etl.dataset import Dataset  # noqa: E402
from etl.metrics import evaluate  # noqa: E402
from models.als import ALS, ALSConfig  # noqa: E402
from models.base import TrainData, TrainingOptions  # noqa: E402

PARAMS = {"factors": 64, "regularization": 0.05, "alpha": 1.0, "iterations": 15}
QUALITY_RATIO_TARGET = 1.0
"""Issue 3: our NDCG@10 / implicit's at least this (stated on ml-latest-small)."""
TIME_RATIO_TARGET = 1.5
"""Issue 3: our wall seconds / implicit's at most this (at 25M interactions, 2 workers)."""


def fit_implicit(train: sp.csr_matrix, threads: int) -> tuple[np.ndarray, np.ndarray, Measure]:
    """implicit's CPU ALS on our confidences; the fit alone is measured (its own preparation included)."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    conf = train.copy().astype(np.float32)
    conf.data = ALSConfig(**PARAMS).confidences(conf.data)
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(**PARAMS, random_state=0, num_threads=threads)
        _, cost = measure(lambda: model.fit(conf, show_progress=False))
    return model.user_factors, model.item_factors, cost


def fit_ours(ds: Dataset, client: object) -> tuple[np.ndarray, np.ndarray, Measure]:
    """Our Dask ALS on the LocalCluster; the matrix is read before the fit (implicit is handed it too)."""
    data = TrainData(ds, "train")
    data.matrix()
    model, cost = measure(lambda: ALS(ALSConfig(**PARAMS)).fit(data, TrainingOptions(client=client, seed=0)))
    return model.user_factors_, model.item_factors_, cost


def quality(ds: Dataset, x: np.ndarray, y: np.ndarray, train: sp.csr_matrix) -> tuple[float, float]:
    r = evaluate(lambda u: x[u] @ y.T, train, ds.matrix("test"))
    return r["ndcg@10"], r["recall@10"]


def settings(workers: int) -> dict[str, Any]:
    """What a record was measured with: a dataset whose JSON holds the same is not run again."""
    return {**PARAMS, "cg_steps": ALSConfig(**PARAMS).cg_steps, "seed": 0,
            "implicit_threads": workers, "dask_workers": workers, "threads_per_worker": 1}


def compare(name: str, interactions: int | None, ds: Dataset, client: Any, workers: int) -> dict[str, Any]:
    """Both fits on ``ds``'s train split, scored on its test split: the JSON record of one dataset."""
    train = ds.matrix("train")
    load_before = os.getloadavg()[0]
    xi, yi, implicit_cost = fit_implicit(train, workers)
    xo, yo, ours_cost = fit_ours(ds, client)
    ni, ri = quality(ds, xi, yi, train)
    no, ro = quality(ds, xo, yo, train)
    quality_ratio = no / ni if ni > 0 else None
    time_ratio = ours_cost.seconds / implicit_cost.seconds
    quality_met = quality_ratio is not None and quality_ratio >= QUALITY_RATIO_TARGET
    time_met = time_ratio <= TIME_RATIO_TARGET
    # Both fits minimise the same loss: at scale their NDCG@10 differ in the fifth digit either
    # way, so the quality target is judged where the issue states it, on ml-latest-small.
    met = quality_met if interactions is None else time_met
    return {
        "dataset": name, "interactions": interactions, "sizes": dataset_sizes(ds), "train_nnz": train.nnz,
        "workers": workers,
        "settings": settings(workers),
        "ours": {"ndcg": no, "recall": ro, "seconds": ours_cost.seconds, "cost": ours_cost},
        "implicit": {"ndcg": ni, "recall": ri, "seconds": implicit_cost.seconds, "cost": implicit_cost},
        "quality_ratio": quality_ratio, "time_ratio": time_ratio,
        "target": {"quality_ratio_min": QUALITY_RATIO_TARGET, "time_ratio_max": TIME_RATIO_TARGET,
                   "quality_stated_at": "ml-latest-small", "time_stated_at": "25M interactions, 2 workers",
                   "quality_met": quality_met, "time_met": time_met, "met": met},
        "load_average_before": round(load_before, 2), "environment": environment(),
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ml-small", type=Path, default=REPO.parent / "shared/data/ml-latest-small")
    parser.add_argument("--no-ml-small", action="store_true", help="synthetic sizes only")
    parser.add_argument("--interactions", type=int, nargs="*", default=[5_000_000],
                        help="synthetic sizes (etl.sources.synthetic); none to skip")
    parser.add_argument("--workers", type=int, default=2, help="Dask workers (1 thread each) = implicit threads")
    parser.add_argument("--cache", type=Path, default=REPO / "bench/results/tmp", help="ingested datasets")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (als_vs_implicit/ is written in it)")
    parser.add_argument("--force", action="store_true", help="rerun datasets whose JSON holds the same settings")
    args = parser.parse_args(argv)

    from distributed import Client, LocalCluster

    datasets: list[tuple[str, int | None, Any]] = []
    if args.no_ml_small:
        pass
    elif (args.ml_small / "ratings.csv").exists():
        datasets.append(("ml-latest-small", None, lambda: ml_small_dataset(args.ml_small, args.cache)))
    else:
        print(f"skipping ml-latest-small: {args.ml_small} not found", file=sys.stderr)
    for n in args.interactions:
        datasets.append((f"synthetic-{n}", n, lambda n=n: synthetic_dataset(n, args.cache)))

    records = []
    warmed = False
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster, set_as_default=False) as client:
        print(f"Dask dashboard {client.dashboard_link}; load average {os.getloadavg()[0]:.1f}", file=sys.stderr)
        for name, interactions, make in datasets:
            path = args.out / "als_vs_implicit" / f"{name}.json"
            done = kept_result(path, args.force, lambda r: r.get("settings") == settings(args.workers))
            if done is not None:
                records.append(done)
                continue
            t = time.perf_counter()
            ds = make()
            print(f"{name}: {ds.n_users:,} users, {ds.n_items:,} items, {ds.count('train'):,} train interactions "
                  f"(ready in {time.perf_counter() - t:.0f} s)", file=sys.stderr, flush=True)
            if not warmed:  # warm up: worker imports and the compiled kernel load outside the timings
                ALS(ALSConfig(factors=8, iterations=1)).fit(TrainData(ds, "train"), TrainingOptions(client=client))
                warmed = True
            record = compare(name, interactions, ds, client, args.workers)
            write_json(path, record)
            records.append(record)
            print(f"  implicit {record['implicit']['seconds']:.1f} s, ours {record['ours']['seconds']:.1f} s; "
                  f"NDCG@10 {record['implicit']['ndcg']:.4f} vs {record['ours']['ndcg']:.4f}; wrote {path}",
                  file=sys.stderr, flush=True)

    print(f"\nALS, {PARAMS}, {args.workers} cores each; load average {os.getloadavg()[0]:.1f}")
    head = ("data", "train nnz", "implicit s", "ours s", "ours/implicit", "NDCG impl", "NDCG ours",
            "Recall impl", "Recall ours", "load avg")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in records:
        i, o = r["implicit"], r["ours"]
        print(f"| {r['dataset']} | {r['train_nnz']:,} | {i['seconds']:.1f} | {o['seconds']:.1f} | {r['time_ratio']:.2f} "
              f"| {i['ndcg']:.4f} | {o['ndcg']:.4f} | {i['recall']:.4f} | {o['recall']:.4f} "
              f"| {r['environment']['load_average']:.1f} |")
    return records


if __name__ == "__main__":
    main()
