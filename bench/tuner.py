"""Blend-weight tuners at equal budgets, and the cost of tuning at MovieLens-25M size.

    python bench/tuner.py                          # ml-latest-small: GA vs grid vs random
    python bench/tuner.py --budgets 25 50 100 200 400 --seeds 3 --png /tmp/tuners.png
    python bench/tuner.py --synthetic 25000000     # time pool precompute + GA at 25M
    python bench/tuner.py --dataset DIR --signals popularity als --budgets 10 20 --seeds 2 --out /tmp/r  # tiny

ml-latest-small: the signals are fit once on 'fit' (pipeline defaults), the validation pool is
built once, then each method gets each budget of fitness evaluations (validation NDCG@10 on the
pool); GA and random search are repeated over --seeds and averaged. With --test, the signals
are also refit on 'train' and each method's chosen weights are scored on the test split (for
the report only: nothing is chosen on test).

GA vs grid vs random share one objective (plain validation NDCG@10 unless --smoothing).

--synthetic N: tuning cost given fitted signals, at N interactions shaped like MovieLens (users
and items scaled as etl.sources.synthetic does: 162k x 62k at 25M). The interaction matrices
are drawn directly (power-law item popularity, log-normal user activity, 20% of each user's
entries in validation; repeated draws collapse, so 25M draws leave ~20.7M distinct pairs), and
the signals are stand-ins with the default configs' dimensions and random factors: the cost of
a pool and of a fitness evaluation depends on shapes, not on what was learned. The pipeline's
pool (max_tune_users validation users, per_signal candidates) and GA (its default config,
smoothing included) run their full budget, no early stopping. Timed: pool precompute + GA;
wall seconds and, with the default in-process worker, CPU seconds / cores, which is the wall
time on an idle machine (a shared machine's load inflates the wall time). The target (issue 3):
tuning finishes within TUNING_SECONDS_TARGET (10 minutes) at 25M; judged on the wall time.

Results go under <out>/tuner/ for bench/report.py: <dataset>.json (every method's best
validation NDCG@10 per budget and seed, test NDCG@10 with --test, the pool, the environment)
with <dataset>.png (best NDCG@10 against evaluations per method), and synthetic-<N>.json (the
stages' wall and CPU seconds, the pool, the evaluations, the load average, the target).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.harness import (  # noqa: E402
    CACHE,
    RESULTS,
    dataset_sizes,
    environment,
    kept_result,
    ml_small_dataset,
    write_json,
)
from etl.dataset import Dataset  # noqa: E402
from training.candidates import build_pool  # noqa: E402
from hybrid.fusion import Fusion  # noqa: E402
from training.pipeline import (  # noqa: E402
    DEFAULT_SIGNALS,
    PipelineConfig,
    default_config,
    evaluate_fusion,
    fit_signals,
    refit_signals,
)
from training.tuner import GAConfig, TuneResult, tune_ga, tune_grid, tune_random  # noqa: E402
from models.base import FactorModel, TrainData, TrainingOptions  # noqa: E402

ML_SMALL = REPO.parent / "shared" / "data" / "ml-latest-small"
TUNING_SECONDS_TARGET = 600.0
"""Issue 3: tuning at 25M interactions finishes within 10 minutes."""
METHODS = ("ga", "ga-bag5", "random", "grid")


def ga_for_budget(budget: int, seed: int, smoothing: int = 0, bagging: int = 0) -> GAConfig:
    """A GA that uses at most ``budget`` evaluations (no early stopping); with bagging, the
    rounds share the budget (less the final check of the mean and each signal)."""
    if bagging:
        per_round = ga_for_budget((budget - 6) // bagging, seed, smoothing)
        return replace(per_round, bagging=bagging)
    population = 12 if budget < 100 else 24
    population = min(population, budget)
    elite = 2 if population > 4 else 0
    generations = max(1, 1 + (budget - population) // (population - elite))
    return GAConfig(population=population, generations=generations, elite=elite,
                    tournament=min(3, population), seed=seed, patience=generations, smoothing=smoothing, bagging=0)


@dataclass
class Row:
    """One method at one budget: evaluations used (mean over seeds), best validation and test NDCG@10 per seed."""

    method: str
    budget: int
    used: float
    best: list[float]
    test: list[float]

    def record(self) -> dict[str, Any]:
        """The JSON form, with the means and spread the report shows."""
        return {"method": self.method, "budget": self.budget, "evaluations": self.used, "best": self.best,
                "best_mean": float(np.mean(self.best)), "best_sd": float(np.std(self.best)), "test": self.test,
                "test_mean": float(np.mean(self.test)) if self.test else None}


def compare(pool, budgets, seeds, client, test_of=None, smoothing: int = 0) -> list[Row]:
    rows = []
    for budget in budgets:
        runs: dict[str, list[TuneResult]] = {"ga": [], "ga-bag5": [], "random": [], "grid": []}
        for seed in range(seeds):
            runs["ga"].append(tune_ga(pool, config=ga_for_budget(budget, seed, smoothing), client=client))
            if budget >= 100:
                runs["ga-bag5"].append(tune_ga(pool, config=ga_for_budget(budget, seed, smoothing, 5), client=client))
            runs["random"].append(tune_random(pool, budget=budget, seed=seed, client=client, smoothing=smoothing))
        runs["grid"].append(tune_grid(pool, budget=budget, client=client, smoothing=smoothing))
        for method, results in runs.items():
            if not results:
                continue
            rows.append(Row(
                method, budget, float(np.mean([r.evaluations for r in results])), [r.ndcg for r in results],
                [test_of(r.weights) for r in results] if test_of else [],
            ))
            print(f"  budget {budget:>4} {method:<6} val {np.mean(rows[-1].best):.4f}", file=sys.stderr, flush=True)
    return rows


def print_table(rows: list[Row]) -> None:
    has_test = any(r.test for r in rows)
    head = f"{'budget':>6}  {'method':<8}{'evals':>7}{'val NDCG@10 (mean ± sd)':>26}"
    head += f"{'test NDCG@10':>15}" if has_test else ""
    print(head)
    print("-" * len(head))
    for r in rows:
        sd = np.std(r.best) if len(r.best) > 1 else 0.0
        line = f"{r.budget:>6}  {r.method:<8}{r.used:>7.0f}{np.mean(r.best):>17.4f} ± {sd:.4f}"
        line += f"{np.mean(r.test):>15.4f}" if r.test else ""
        print(line)


def plot(rows: list[Row], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in METHODS:
        pts = [r for r in rows if r.method == method]
        ax.errorbar([r.used for r in pts], [np.mean(r.best) for r in pts],
                    yerr=[np.std(r.best) for r in pts], marker="o", capsize=3, label=method)
    ax.set_xscale("log")
    ax.set_xlabel("fitness evaluations")
    ax.set_ylabel("best validation NDCG@10")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"wrote {path}")


def run_ml_small(args: argparse.Namespace, client) -> dict[str, Any]:
    name = Path(args.dataset).name if args.dataset else "ml-latest-small"
    asked = {"budgets": args.budgets, "seeds": args.seeds, "smoothing": args.smoothing, "test": args.test}

    def same(r: dict[str, Any]) -> bool:
        return sorted(r.get("signals", [])) == sorted(args.signals) and {k: r["settings"].get(k) for k in asked} == asked

    done = kept_result(args.out / "tuner" / f"{name}.json", args.force, same)
    if done is not None:
        return done
    ds = Dataset.open(args.dataset) if args.dataset else ml_small_dataset(ML_SMALL, args.cache)
    options = TrainingOptions(client=client, device="cpu", seed=0)
    config = PipelineConfig(signals=tuple(args.signals), verbose=False)
    data = TrainData(ds, split="fit", validation="validation")
    start = time.perf_counter()
    models, _ = fit_signals(data, {s: config.config_for(s) for s in config.signals}, options, verbose=True)
    fusion = Fusion.fit_scales(models, data.matrix("validation"))
    fit_seconds = time.perf_counter() - start
    print(f"signals fit in {fit_seconds:.1f}s", file=sys.stderr)
    start = time.perf_counter()
    pool = build_pool(models, fusion.scales, data.matrix(), data.matrix("validation"), per_signal=config.per_signal,
                      client=client)
    pool_seconds = time.perf_counter() - start
    per_signal = {s: pool.ndcg({s: 1.0}) for s in pool.signals}
    print(f"pool: {pool.n_users} users x {pool.width} in {pool_seconds:.1f}s; "
          f"per-signal validation NDCG@10: " + ", ".join(f"{s} {v:.4f}" for s, v in per_signal.items()))
    test_of: Callable[[dict[str, float]], float] | None = None
    if args.test:
        final, _ = refit_signals(ds, models, options)
        final_fusion = Fusion(final, dict(fusion.scales))

        def score_on_test(weights: dict[str, float]) -> float:
            return evaluate_fusion(final_fusion, weights, ds, signals=False)["hybrid"]["ndcg@10"]

        test_of = score_on_test
    rows = compare(pool, args.budgets, args.seeds, client, test_of, args.smoothing)
    print(f"\nGA vs grid vs random on {name} validation pool ({', '.join(pool.signals)}); "
          f"GA/random over {args.seeds} seeds; objective: NDCG@10"
          + (f" smoothed over {args.smoothing} jittered copies (shown: plain NDCG@10)" if args.smoothing else ""))
    print_table(rows)
    record = {
        "kind": "compare", "dataset": name, "sizes": dataset_sizes(ds), "signals": list(pool.signals),
        "pool": {"users": pool.n_users, "width": pool.width, "seconds": pool_seconds},
        "fit_seconds": fit_seconds, "per_signal_validation_ndcg": per_signal,
        "settings": {"budgets": args.budgets, "seeds": args.seeds, "smoothing": args.smoothing, "test": args.test,
                     "objective": "validation NDCG@10" + (f" smoothed over {args.smoothing}" if args.smoothing else ""),
                     "averaged_over_seeds": ["ga", "ga-bag5", "random"], "ga_bag5_from_budget": 100},
        "rows": [r.record() for r in rows], "environment": environment(),
    }
    folder = args.out / "tuner"
    write_json(folder / f"{name}.json", record)
    png = Path(args.png) if args.png else folder / f"{name}.png"
    plot(rows, png, f"blend tuners on {name} (validation)")
    print(f"wrote {folder / f'{name}.json'}")
    return record


# -- synthetic scale ------------------------------------------------------------------------------
class StandIn(FactorModel):
    """A 'fitted' signal of given dimension with random factors (shapes are what cost)."""

    kind = "bench-stand-in"
    Config = dict

    def _fit(self, data, options):  # pragma: no cover - never fit
        raise NotImplementedError

    def fold_in(self, items, values=None):  # pragma: no cover
        raise NotImplementedError


def signal_dim(kind: str) -> int:
    """The vector dimension a signal's default config gives."""
    config = default_config(kind)
    for name in ("factors", "embedding_dim", "dim"):
        if hasattr(config, name):
            return int(getattr(config, name))
    return 1  # popularity


def synthetic_matrices(n: int, seed: int = 0) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """fit and validation matrices with MovieLens-like shapes for n interactions."""
    from etl.sources.synthetic import _scaled

    n_users, n_items = _scaled(n, 1), _scaled(n, 2)
    rng = np.random.default_rng(seed)
    activity = rng.lognormal(0.0, 1.0, n_users)
    per_user = np.maximum(5, np.round(activity / activity.sum() * n)).astype(np.int64)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.9
    popularity /= popularity.sum()
    rows, cols = [], []
    for lo in range(0, n_users, 8192):  # in slices: a draw of 25M at once needs several GB
        counts = np.minimum(per_user[lo : lo + 8192], n_items // 2)
        items = rng.choice(n_items, size=int(counts.sum()), p=popularity)
        rows.append(np.repeat(np.arange(lo, lo + counts.size), counts))
        cols.append(items)
    r, c = np.concatenate(rows), np.concatenate(cols)
    m = sp.csr_matrix((np.ones(r.size, np.float32), (r, c)), shape=(n_users, n_items))
    m.sum_duplicates()
    m.data[:] = 1.0
    # The last 20% of each user's entries (in column order here) go to validation.
    lengths = np.diff(m.indptr)
    pos = np.arange(m.nnz) - np.repeat(m.indptr[:-1], lengths)
    to_val = pos >= np.repeat(np.ceil(lengths * 0.8), lengths)
    coo = m.tocoo()
    fit = sp.csr_matrix((coo.data[~to_val], (coo.row[~to_val], coo.col[~to_val])), shape=m.shape)
    val = sp.csr_matrix((coo.data[to_val], (coo.row[to_val], coo.col[to_val])), shape=m.shape)
    return fit, val


def run_synthetic(args: argparse.Namespace, client) -> dict[str, Any]:
    done = kept_result(args.out / "tuner" / f"synthetic-{args.synthetic}.json", args.force, lambda r: (
        r.get("signal_dims") == {s: signal_dim(s) for s in args.signals}
        and r.get("max_users") == args.max_users and r["cluster"]["in_process"] == (not args.processes)))
    if done is not None:
        return done
    start = time.perf_counter()
    fit, val = synthetic_matrices(args.synthetic)
    draw_seconds = time.perf_counter() - start
    print(f"synthetic: {fit.shape[0]:,} users x {fit.shape[1]:,} items, {fit.nnz:,} fit + {val.nnz:,} validation "
          f"interactions ({draw_seconds:.1f}s to draw)")
    load_before = os.getloadavg()[0]
    dims = {s: signal_dim(s) for s in args.signals}
    rng = np.random.default_rng(1)
    models = {}
    for s in args.signals:
        m = StandIn()
        m.user_factors_ = rng.standard_normal((fit.shape[0], dims[s]), dtype=np.float32)
        m.item_factors_ = rng.standard_normal((fit.shape[1], dims[s]), dtype=np.float32)
        models[s] = m
    config = PipelineConfig(signals=tuple(args.signals), verbose=False)
    ga = GAConfig(**{**vars(config.ga), "patience": config.ga.generations})
    in_process = not args.processes
    marks = [_clock()]
    fusion = Fusion.fit_scales(models, val)
    marks.append(_clock())
    print(f"scales done; building the pool (load average {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)
    pool = build_pool(models, fusion.scales, fit, val, per_signal=config.per_signal,
                      max_users=args.max_users if args.max_users > 0 else None, client=client)
    marks.append(_clock())
    print(f"pool done ({pool.n_users:,} x {pool.width}); GA", file=sys.stderr, flush=True)
    result = tune_ga(pool, config=ga, client=client)
    marks.append(_clock())
    workers = client.scheduler_info(n_workers=-1)["workers"]
    print(f"cluster: {len(workers)} workers, {sum(w['nthreads'] for w in workers.values())} threads, "
          f"{os.cpu_count()} cores; load average at the end {os.getloadavg()[0]:.1f}")
    print("signal dims: " + ", ".join(f"{s} {d}" for s, d in dims.items()))
    cores = os.cpu_count() or 1
    head = f"{'stage':<36}{'wall s':>9}" + (f"{'cpu s':>9}{'cpu s / cores':>15}" if in_process else "")
    print(head)
    stages = [("scales", "scales (validation pairs)", 0, 1),
              ("pool", f"pool ({pool.n_users:,} users x {pool.width} cands)", 1, 2),
              ("ga", f"GA ({result.evaluations} evaluations, bagging {ga.bagging})", 2, 3),
              ("total", "tuning total (pool + GA)", 1, 3)]
    for _, name, a, b in stages:
        wall, cpu = marks[b][0] - marks[a][0], marks[b][1] - marks[a][1]
        print(f"{name:<36}{wall:>9.1f}" + (f"{cpu:>9.1f}{cpu / cores:>15.1f}" if in_process else ""))
    print(f"pool size {pool.nbytes / 2**20:.0f} MiB; "
          f"{1000 * (marks[3][0] - marks[2][0]) / result.evaluations:.0f} ms wall per evaluation")
    if in_process:
        print("cpu s / cores: the wall time on an otherwise idle machine (CPU seconds of every thread of this process)")
    tuning_seconds = marks[3][0] - marks[1][0]
    record = {
        "kind": "timing", "n_interactions": args.synthetic, "users": fit.shape[0], "items": fit.shape[1],
        "fit_nnz": fit.nnz, "validation_nnz": val.nnz, "draw_seconds": draw_seconds, "signal_dims": dims,
        "max_users": args.max_users,
        "pool": {"users": pool.n_users, "width": pool.width, "mib": pool.nbytes / 2**20},
        "ga": ga, "evaluations": result.evaluations,
        "ms_per_evaluation": 1000 * (marks[3][0] - marks[2][0]) / result.evaluations,
        "stages": {key: {"name": name, "wall_seconds": marks[b][0] - marks[a][0],
                         "cpu_seconds": marks[b][1] - marks[a][1] if in_process else None,
                         "cpu_seconds_per_core": (marks[b][1] - marks[a][1]) / cores if in_process else None}
                   for key, name, a, b in stages},
        "tuning_seconds": tuning_seconds,
        "tuning_cpu_seconds_per_core": (marks[3][1] - marks[1][1]) / cores if in_process else None,
        "cluster": {"workers": len(workers), "threads": sum(w["nthreads"] for w in workers.values()),
                    "in_process": in_process},
        "target": {"seconds_max": TUNING_SECONDS_TARGET, "stated_at": "25M interactions",
                   "judged_on": "wall seconds of pool + GA", "met": tuning_seconds <= TUNING_SECONDS_TARGET},
        "load_average_before": round(load_before, 2), "environment": environment(),
    }
    path = args.out / "tuner" / f"synthetic-{args.synthetic}.json"
    write_json(path, record)
    print(f"wrote {path}")
    return record


def _clock() -> tuple[float, float]:
    """(wall seconds, CPU seconds of every thread of this process)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", help="an ingested dataset folder (default: ingest ml-latest-small)")
    parser.add_argument("--cache", type=Path, default=CACHE, help="folder for the ingested ml-latest-small")
    parser.add_argument("--signals", nargs="+", default=[s for s in DEFAULT_SIGNALS])
    parser.add_argument("--budgets", nargs="+", type=int, default=[25, 50, 100, 200, 400])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--test", action="store_true", help="also refit on train and report each choice's test NDCG")
    parser.add_argument("--png", help="write the best-per-budget plot here (default: <out>/tuner/<dataset>.png)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (tuner/ is written in it)")
    parser.add_argument("--smoothing", type=int, default=0,
                        help="jittered copies per fitness for all three methods (default 0: plain NDCG@10)")
    parser.add_argument("--synthetic", type=int, default=0, metavar="N", help="time the tuning at N interactions")
    parser.add_argument("--max-users", type=int, default=PipelineConfig().max_tune_users or 0,
                        help="validation users in the synthetic pool (0: all)")
    parser.add_argument("--processes", action="store_true", help="worker processes (default: one in-process worker)")
    parser.add_argument("--workers", type=int, default=None, help="with --processes (default: one per core)")
    parser.add_argument("--force", action="store_true", help="rerun when the result JSON holds the same settings")
    args = parser.parse_args(argv)

    from distributed import Client, LocalCluster

    cores = os.cpu_count() or 1
    if args.processes:
        workers = args.workers or max(1, min(cores, 8))
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0")
    else:  # one in-process worker: getrusage then counts every thread's CPU time
        cluster = LocalCluster(n_workers=1, threads_per_worker=cores, processes=False, dashboard_address=":0")
    with cluster, Client(cluster) as client:
        if args.synthetic:
            return run_synthetic(args, client)
        return run_ml_small(args, client)


if __name__ == "__main__":
    main()
