"""Quality bench: DESIGN.md's protocol table for baselines, each project signal and the tuned hybrid.

    python bench/quality.py                                  # ml-latest-small + 1M synthetic
    python bench/quality.py --datasets ml-latest-small
    python bench/quality.py --datasets synthetic --synthetic 5000000
    python bench/quality.py --quick --out /tmp/q             # tiny synthetic, minutes (tests)

Rows, each on the protocol's test split (full ranking, train items excluded, k=10):
- baselines (bench/baselines.py): implicit ALS (64 factors, reg 0.05, alpha 1, 15 iterations),
  LightFM WARP (64 components, 30 epochs), EASE (lambda chosen on validation);
- the tuned hybrid: training.pipeline.run_pipeline (tune on validation, refit on train, test once);
- each project signal alone (popularity is the popularity baseline), fit on 'train' with the
  config of the pipeline's final fit, so its row is the signal the hybrid blends.
LightGCN is early-stopped on validation everywhere; --lightgcn-epochs caps its epochs on synthetic
data (--quick: 4), and the report then says so.
Per row: NDCG, Recall, Precision, MAP, hit rate at 10, catalogue coverage, intra-list diversity
(genres), fit seconds and peak memory (RSS of this process and the Dask workers together, and
what the fit added to it). A fit is timed alone; its evaluation is not in its seconds.

Every row is written to OUT/quality/<dataset>/<method>.json as soon as it is done, with the settings
it depends on, and kept by the next run that asks for the same settings (resumable) unless --force;
OUT/quality/<dataset>.json gathers a dataset's rows.
bench/report.py turns them into the report.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.harness import (  # noqa: E402
    CACHE,
    ML_SMALL,
    RESULTS,
    Measure,
    dataset_sizes,
    environment,
    genre_features,
    kept_result,
    log,
    measure,
    ml_small_dataset,
    same_json,
    sample_test,
    start_cluster,
    synthetic_dataset,
    write_json,
)
from etl.dataset import Dataset  # noqa: E402
from etl.metrics import evaluate  # noqa: E402

K = 10
BASELINES = ("implicit-als", "lightfm-warp", "ease")
METRICS = ("ndcg", "recall", "precision", "map", "hit_rate", "coverage", "diversity", "cold_recall", "cold_share")
"""Per row; cold_*: items without a train interaction (etl/metrics.py ``cold_item_metrics``)."""


def signal_defaults(signals: Any) -> dict[str, Any]:
    """Each signal's default config: a row measured under other defaults (a retuned preset, a new
    trainer's settings) is measured again."""
    from models.base import model_class

    return {s: asdict(model_class(s).Config()) for s in signals}


def slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "-" for c in name.lower()).strip("-")


def row_of(method: str, group: str, metrics: dict[str, float], cost: Measure | None, **extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"method": method, "group": group, "users": metrics.get("users")}
    for m in METRICS:
        row[m] = metrics.get(f"{m}@{K}")
    if cost is not None:
        row.update(fit_seconds=cost.seconds, fit_cpu_seconds=cost.cpu_seconds, peak_mib=cost.peak_mib,
                   added_mib=cost.added_mib, peak_worker_mib=cost.peak_worker_mib)
    row.update(extra)
    return row


def config_from(kind: str, params: dict[str, Any]) -> Any:
    """A signal's Config from the JSON of the pipeline's final config."""
    from training.pipeline import default_config

    base = default_config(kind)
    known = {f.name for f in fields(base)}
    return replace(base, **{k: v for k, v in params.items() if k in known})


class DatasetBench:
    """The rows of one dataset; each is cached in its own JSON file."""

    def __init__(self, name: str, ds: Dataset, client: Any, args: argparse.Namespace) -> None:
        self.name, self.ds, self.client, self.args = name, ds, client, args
        self.folder = args.out / "quality" / slug(name)
        self.train = ds.matrix("train")
        self.truth = sample_test(ds.matrix("test"), args.eval_users, seed=0)
        self.features = genre_features(ds)
        # the preset on MovieLens (what it was tuned on); on synthetic data an optional cap
        self.lightgcn_epochs = None if name.startswith("ml-") else args.lightgcn_epochs

    def evaluate(self, score: Any) -> dict[str, float]:
        return evaluate(score, self.train, self.truth, k=K, item_features=self.features)

    def settings(self, method: str) -> dict[str, Any]:
        """What a row of ``method`` depends on besides the dataset: a row measured with other
        settings is measured again."""
        args = self.args
        if method == "implicit-als":
            own: dict[str, Any] = {"workers": args.workers}
        elif method == "lightfm-warp":
            own = {"epochs": args.lightfm_epochs, "workers": args.workers}
        elif method == "ease":
            own = {"lambdas": [float(x) for x in args.ease_lambdas], "max_items": args.ease_max_items}
        else:  # the pipeline, and each signal refit with the pipeline's config
            own = {"signals": list(args.signals), "quick": args.quick, "lightgcn_epochs": self.lightgcn_epochs,
                   "defaults": signal_defaults(args.signals)}
        return {"eval_users": args.eval_users, **own}

    def cached(self, method: str, run: Any, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """The row of ``method``: kept from an earlier run with the same settings (and, for a signal,
        the same ``params`` from the pipeline), else measured by ``run`` and written."""
        path = self.folder / f"{slug(method)}.json"
        settings = self.settings(method)

        def same(row: dict[str, Any]) -> bool:
            complete = bool(row.get("skipped")) or all(m in row for m in METRICS)  # a row from before a metric: again
            return row.get("settings") == settings and complete and (params is None or same_json(row.get("params"), params))

        row = kept_result(path, self.args.force, same)
        if row is not None:
            return row
        log(f"{self.name} / {method}: running")
        row = {**run(), "settings": settings}
        write_json(path, row)
        ndcg = row.get("ndcg")
        log(f"{self.name} / {method}: " + (f"NDCG@{K} {ndcg:.4f}, Recall@{K} {row['recall']:.4f}, "
                                           f"fit {row['fit_seconds']:.1f} s, peak {row['peak_mib']:,.0f} MiB"
                                           if ndcg is not None else row.get("skipped", "")))
        return row

    # -- baselines --------------------------------------------------------------------------------
    def baseline(self, key: str) -> dict[str, Any]:
        from bench.baselines import EASE, ImplicitALS, LightFMWarp

        args = self.args
        if key == "implicit-als":
            model = ImplicitALS(threads=args.workers)
        elif key == "lightfm-warp":
            model = LightFMWarp(epochs=args.lightfm_epochs, threads=args.workers)
        else:
            model = EASE(lambdas=tuple(args.ease_lambdas), max_items=args.ease_max_items)
            reason = model.check(self.ds.n_items)
            if reason:
                return {"method": model.name, "group": "baseline", "skipped": reason}
            model.select(self.ds.matrix("fit"), self.ds.matrix("validation"), k=K)
        _, cost = measure(lambda: model.fit(self.train))
        return row_of(model.name, "baseline", self.evaluate(model.score), cost, params=model.describe())

    # -- the pipeline and its signals -------------------------------------------------------------
    def pipeline_config(self) -> Any:
        from training.pipeline import PipelineConfig
        from training.tuner import GAConfig

        args = self.args
        configs: dict[str, Any] = {}
        e = self.lightgcn_epochs
        if "lightgcn" in args.signals and not self.name.startswith("ml-"):
            # as bench/scale.py: validation every few epochs of 2^20 positives, not of the whole data
            configs["lightgcn"] = {"epoch_size": 2**20}
            if e:
                configs["lightgcn"].update(epochs=e, eval_every=min(e, 5))
        ga = GAConfig(population=8, generations=3, patience=3, bagging=0) if args.quick else GAConfig()
        return PipelineConfig(signals=tuple(args.signals), configs=configs, ga=ga, max_eval_users=args.eval_users,
                              per_signal=max(K, min(100, self.ds.n_items // 2)))

    def hybrid(self) -> dict[str, Any]:
        from training.pipeline import run_pipeline
        from models.base import TrainingOptions

        result, cost = measure(lambda: run_pipeline(self.ds, self.pipeline_config(), TrainingOptions(client=self.client)))
        log("pipeline result\n" + result.table(K))
        # run_pipeline's own test figures (the same users) and the diversity the protocol lists
        from training.pipeline import fused_scorer

        metrics = self.evaluate(fused_scorer(result.fusion, result.weights))
        summary = result.summary()
        return row_of(
            "hybrid (tuned)", "hybrid", metrics, cost,
            pipeline_test=summary["test"], weights=summary["weights"], scales=summary["scales"],
            validation=summary["validation"], params=summary["params"], timings=summary["timings"],
            tuning={k: summary["tuning"].get(k) for k in ("evaluations", "ndcg") if k in summary["tuning"]},
            pool=summary["pool"],
        )  # fmt: skip

    def signal(self, kind: str, params: dict[str, Any], pipeline_test: dict[str, Any]) -> dict[str, Any]:
        from training.pipeline import signal_class
        from models.base import TrainData, TrainingOptions

        config = config_from(kind, params)
        data = TrainData(self.ds, "train")
        data.matrix()  # read before timing, as the pipeline has it in hand
        model, cost = measure(lambda: signal_class(kind)(config).fit(data, TrainingOptions(client=self.client)))
        metrics = self.evaluate(model.score)
        piped = pipeline_test.get(kind, {}).get(f"ndcg@{K}")
        if piped is not None and abs(piped - metrics[f"ndcg@{K}"]) > 0.002:
            log(f"  note: {kind} alone scores {metrics[f'ndcg@{K}']:.4f}, in the pipeline's refit {piped:.4f}")
        return row_of(kind, "signal", metrics, cost, params=params, pipeline_ndcg=piped)

    def run(self) -> dict[str, Any]:
        rows = []
        for key in BASELINES:
            if key not in self.args.skip:
                rows.append(self.cached(key, lambda key=key: self.baseline(key)))
        hybrid = self.cached("hybrid", self.hybrid)
        signals = [self.cached(f"signal-{s}", lambda s=s: self.signal(s, hybrid["params"][s], hybrid["pipeline_test"]),
                               params=hybrid["params"][s])
                   for s in self.args.signals]
        # popularity first (it is the popularity baseline), then the other rows as run
        order = [r for r in signals if r["method"] == "popularity"] + rows + \
                [r for r in signals if r["method"] != "popularity"] + [hybrid]
        out = {"dataset": self.name, "path": self.ds.path, "sizes": dataset_sizes(self.ds), "k": K,
               "eval_users": self.args.eval_users, "quick": self.args.quick,
               "lightgcn_epochs": self.lightgcn_epochs, "environment": environment(), "rows": order}
        write_json(self.args.out / "quality" / f"{slug(self.name)}.json", out)
        return out


def print_table(result: dict[str, Any]) -> None:
    s = result["sizes"]
    print(f"\n{result['dataset']}: {s['users']:,} users, {s['items']:,} items, {s['train']:,} train and "
          f"{s['test']:,} test interactions")
    head = ("method", "NDCG@10", "Recall@10", "Prec@10", "MAP@10", "HR@10", "coverage", "diversity", "cold recall",
            "cold share", "fit s", "peak MiB")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in result["rows"]:
        if r.get("skipped"):
            print(f"| {r['method']} | {r['skipped']} |" + " |" * (len(head) - 2))
            continue
        vals = [f"{r[m]:.4f}" if r.get(m) is not None else "n/a" for m in METRICS]
        print(f"| {r['method']} | " + " | ".join(vals) + f" | {r['fit_seconds']:.1f} | {r['peak_mib']:,.0f} |")


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    from training.pipeline import DEFAULT_SIGNALS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", choices=("ml-latest-small", "synthetic"),
                        help="default: both (--quick: synthetic)")
    parser.add_argument("--synthetic", type=int, help="synthetic interactions (default 1,000,000; --quick 20,000)")
    parser.add_argument("--ml-small", type=Path, default=ML_SMALL)
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (quality/ is written in it)")
    parser.add_argument("--cache", type=Path, default=CACHE, help="ingested datasets")
    parser.add_argument("--signals", nargs="+", default=list(DEFAULT_SIGNALS))
    parser.add_argument("--skip", nargs="*", default=[], choices=BASELINES, help="baselines to leave out")
    parser.add_argument("--lightgcn-epochs", type=int,
                        help="cap on LightGCN's epochs on synthetic data (default: none, early stopping on "
                             "validation decides; --quick 4); ml-latest-small always gets its tuned preset")
    parser.add_argument("--lightfm-epochs", type=int, help="default 30 (--quick 3)")
    parser.add_argument("--ease-lambdas", type=float, nargs="+", help="default 100 200 300 500 1000 (--quick 50 200)")
    parser.add_argument("--ease-max-items", type=int, default=25_000)
    parser.add_argument("--eval-users", type=int, help="test users evaluated (seeded sample); default: all")
    parser.add_argument("--workers", type=int, default=2, help="Dask workers (1 thread each); baselines' threads")
    parser.add_argument("--quick", action="store_true", help="tiny synthetic data, short fits: a smoke run")
    parser.add_argument("--force", action="store_true", help="rerun rows whose JSON holds the same settings")
    args = parser.parse_args(argv)
    if args.quick:
        args.datasets = args.datasets or ["synthetic"]
        args.synthetic = args.synthetic or 20_000
        args.lightgcn_epochs = args.lightgcn_epochs or 4
        args.lightfm_epochs = args.lightfm_epochs or 3
        args.ease_lambdas = args.ease_lambdas or [50.0, 200.0]
    args.datasets = args.datasets or ["ml-latest-small", "synthetic"]
    args.synthetic = args.synthetic or 1_000_000
    args.lightfm_epochs = args.lightfm_epochs or 30
    args.ease_lambdas = args.ease_lambdas or [100.0, 200.0, 300.0, 500.0, 1000.0]

    cluster, client = start_cluster(args.workers)
    results = []
    try:
        for which in args.datasets:
            if which == "ml-latest-small":
                if not (args.ml_small / "ratings.csv").exists():
                    log(f"skipping ml-latest-small: {args.ml_small} not found")
                    continue
                name, ds = "ml-latest-small", ml_small_dataset(args.ml_small, args.cache)
            else:
                name = f"synthetic {args.synthetic:,}"
                ds = synthetic_dataset(args.synthetic, args.cache, client)
            log(f"{name}: {dataset_sizes(ds)}")
            result = DatasetBench(name, ds, client, args).run()
            print_table(result)
            results.append(result)
    finally:
        client.close()
        cluster.close()
    return results


if __name__ == "__main__":
    main()
