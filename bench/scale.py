"""Scale bench: synthetic data through ingest, tuning, each signal, the hybrid and the index.

    python bench/scale.py                                   # 1M, 5M and 25M interactions
    python bench/scale.py --sizes 1000000 --stages generate ingest tune
    python bench/scale.py --sizes 20000 50000 --quick --out /tmp/s     # seconds (tests)

Per size, stages in order on one LocalCluster (--workers single-threaded processes):

- generate, ingest: bench/synthetic_scale.py's stages (Parquet partitions written on the
  workers, then etl.ingest: validate, de-duplicate, vocabularies, protocol split);
- tune: training.pipeline.tune, the pipeline's stages 1-3: every signal fit on 'fit' (LightGCN
  early-stopped on 'validation'), normalisation scales, the validation candidate pool, the GA;
- refit: the pipeline's stage 4 (training.pipeline.refit_signals, from tuning's models, kept
  under --cache): each signal's final model on 'train', fit again with its refit config
  (FactorModel.refit_config: LightGCN for its validated epoch count) or, from
  REFOLD_MIN_INTERACTIONS on, tuning's model with every user folded in from 'train'
  (PipelineConfig.refit 'auto'); then each signal's test metrics (signal-<kind>.json, apart from
  the stage's time);
- hybrid: the fusion of the refit signals with the tuned scales and weights, on test;
- index: the serving bundle published under --cache (its build time is the usearch index's, with
  its graph space), and searches of its index as served (``bench/api_load.py --scale N`` load-tests
  that bundle).

Each stage reports wall seconds, CPU seconds and peak RSS of this process and the Dask workers
together (bench/synthetic_scale.py's ProcessSampler), and what the stage added to it. Test
metrics are over a seeded sample of --eval-users test users (all of them when fewer).

LightGCN trains in the graph's spectral domain (models.lightgcn_trainer: one truncated SVD, then
steps whose cost does not grow with the graph), early-stopped on validation as on ml-latest-small;
its epochs draw --lightgcn-epoch-size positives each, so validation is consulted every few
million positives rather than once per 20M. --lightgcn-epochs caps the epochs (tests use it to
keep runs short; the report then says its quality is not its tuned quality).

Resumable: a stage whose JSON (OUT/scale/n<N>/<stage>.json) exists, whose outputs under --cache
are there and which ran with the same settings, is skipped unless --force, so a long run can be
continued. A signal's refit is kept when only the signal list changed and tuning handed it the
same config, so adding a signal refits the others only on 'fit' (tuning needs them all).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.harness import (  # noqa: E402
    CACHE,
    RESULTS,
    dataset_sizes,
    environment,
    kept_result,
    log,
    measure,
    read_json,
    same_json,
    sample_test,
    start_cluster,
    write_json,
)
from bench.synthetic_scale import BenchContext, stage_generate, stage_ingest  # noqa: E402
from etl.sources.synthetic import SyntheticConfig  # noqa: E402

K = 10
DEFAULT_SIZES = (1_000_000, 5_000_000, 25_000_000)


@dataclass
class ScaleContext(BenchContext):
    """synthetic_scale's BenchContext plus this bench's settings and output folder."""

    args: argparse.Namespace = None  # type: ignore[assignment]
    out_dir: Path = Path(".")
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def dataset_dir(self) -> Path:
        return self.work_dir / "dataset"

    def dataset(self) -> Any:
        from etl.dataset import Dataset

        return Dataset.open(self.dataset_dir)

    def model_dir(self, kind: str) -> Path:
        return self.work_dir / "models" / kind

    @property
    def bundle_root(self) -> Path:
        """Where the index stage publishes the serving bundle."""
        return self.work_dir / "bundles"

    def tuned_dir(self, kind: str) -> Path:
        """Where tuning's model of a signal (fit on 'fit') is kept for the refit."""
        return self.work_dir / "tuned" / kind

    def previous(self, stage: str) -> dict[str, Any]:
        if stage not in self.results:
            self.results[stage] = read_json(self.out_dir / f"{stage}.json")
        return self.results[stage]

    def options(self) -> Any:
        from models.base import TrainingOptions

        return TrainingOptions(client=self.client, seed=self.args.seed)


# -- stages: each returns (rows handled, details for its JSON) -------------------------------------
def run_generate(ctx: ScaleContext) -> tuple[int, dict[str, Any]]:
    rows = stage_generate(ctx)
    size = sum(f.stat().st_size for f in (ctx.work_dir / "synthetic").rglob("*.parquet"))
    return rows, {"parquet_mib": size / 2**20}


def run_ingest(ctx: ScaleContext) -> tuple[int, dict[str, Any]]:
    ctx.state.setdefault("synthetic_dir", ctx.work_dir / "synthetic")
    rows = stage_ingest(ctx)
    return rows, {"sizes": dataset_sizes(ctx.dataset())}


def pipeline_config(ctx: ScaleContext) -> Any:
    from training.pipeline import PipelineConfig
    from training.tuner import GAConfig

    args = ctx.args
    configs: dict[str, Any] = {}
    if "lightgcn" in args.signals:
        # validation_users: early-stopping checks on a sample, as the test metrics are
        # every 2 epochs, patience 3: an epoch is a 20th of the data here, and the validation curve of a
        # 25M graph flattens within a few epochs (bench/lightgcn_gpu.py: best at epoch 6 of 12)
        configs["lightgcn"] = {"epoch_size": args.lightgcn_epoch_size, "validation_users": args.eval_users,
                               "eval_every": 2, "patience": 3}
        if args.lightgcn_epochs is not None:
            e = args.lightgcn_epochs
            configs["lightgcn"].update(epochs=e, eval_every=min(e, 2))
    ga = GAConfig(population=8, generations=3, patience=3, bagging=0) if args.quick else GAConfig()
    n_items = ctx.dataset().n_items
    return PipelineConfig(signals=tuple(args.signals), configs=configs, ga=ga, verbose=True,
                          per_signal=max(K, min(100, n_items // 2)), refit=args.refit)


def run_tune(ctx: ScaleContext) -> tuple[int, dict[str, Any]]:
    from training.pipeline import tune
    from etl.jsonable import jsonable

    ds = ctx.dataset()
    outcome = tune(ds, pipeline_config(ctx), ctx.options())
    for kind, model in outcome.models.items():  # the refit starts from them (as the pipeline does)
        _save(model, ctx.tuned_dir(kind))
    refit = {s: jsonable(m.refit_config()) for s, m in outcome.models.items()}
    epochs = {s: {"epochs_run": getattr(m, "epochs_run_", None), "best_epoch": getattr(m, "best_epoch_", None)}
              for s, m in outcome.models.items() if hasattr(m, "epochs_run_")}
    return ds.count("fit"), {
        "weights": outcome.weights, "scales": outcome.scales, "validation": outcome.validation,
        "timings": outcome.timings, "refit_configs": refit, "epochs": epochs,
        "pool": {"users": outcome.pool.n_users, "width": outcome.pool.width, "coverage": outcome.pool.coverage()},
        "evaluations": outcome.tuning.evaluations,
    }  # fmt: skip


def _save(model: Any, folder: Path) -> None:
    """A model's parameters alone into an emptied folder (a file of an earlier save would load with
    them): its interactions are the dataset's, read once per stage (``_fusion``)."""
    shutil.rmtree(folder, ignore_errors=True)
    model.save(folder, data=False)


def _evaluate(ctx: ScaleContext, score: Callable[[np.ndarray], np.ndarray], train: Any) -> dict[str, float]:
    from etl.metrics import evaluate

    truth = sample_test(ctx.dataset().matrix("test"), ctx.args.eval_users, seed=ctx.args.seed)
    return evaluate(score, train, truth, k=K)


def _signal_kept(ctx: ScaleContext, kind: str, how: str) -> dict[str, Any] | None:
    """The signal's finished refit (its JSON) when its model is there and it ran with these
    settings and was made ``how`` ('fit' or 'fold_in', training.pipeline.refit_plan)."""
    path = ctx.out_dir / f"signal-{kind}.json"
    if not (path.exists() and (ctx.model_dir(kind) / "model.json").exists()):
        return None
    done = kept_result(path, ctx.args.force, lambda d: same_settings(f"signal-{kind}", d, ctx.args, ctx))
    return done if done is not None and done.get("refit", "fit") == how else None


def run_refit(ctx: ScaleContext) -> tuple[int, dict[str, Any]]:
    """The pipeline's stage 4 (training.pipeline.refit_signals) from tuning's models: each signal
    fit again on 'train' side by side, or refolded (``PipelineConfig.refit``); then each saved and
    evaluated on test apart from the refit.

    A signal whose refit ran before with the same settings, refit config and mode is kept. Each
    refit signal's own JSON (signal-<kind>.json) holds its seconds (fits overlap each other), its
    test metrics and the peak memory of the stage's refit."""
    from models.base import FactorModel, FitData, TrainData
    from training.pipeline import refit_plan, refit_signals

    ds = ctx.dataset()
    mode = pipeline_config(ctx).refit
    plan = refit_plan(mode, ds, ctx.args.signals)
    refit_configs = ctx.previous("tune")["refit_configs"]
    kept = {kind: done for kind in ctx.args.signals if (done := _signal_kept(ctx, kind, plan[kind])) is not None}
    ctx.results.update({f"signal-{kind}": done for kind, done in kept.items()})
    todo = [kind for kind in ctx.args.signals if kind not in kept]
    fit_data = FitData(ds.users, ds.items, ds.matrix("fit"), "fit")
    tuned = {kind: FactorModel.load(ctx.tuned_dir(kind), data=fit_data) for kind in todo}
    data = TrainData(ds, "train")
    data.matrix()  # read before timing
    (models, seconds), cost = measure(lambda: refit_signals(ds, tuned, ctx.options(), verbose=True, refit=mode,
                                                            data=data))
    for kind, model in models.items():
        _save(model, ctx.model_dir(kind))
        start = time.perf_counter()
        metrics = _evaluate(ctx, model.score, data.matrix())
        record = {"stage": f"signal-{kind}", "interactions": ctx.config.n_interactions, "rows": data.matrix().nnz,
                  "seconds": seconds[kind], "refit": plan[kind], "peak_mib": cost.peak_mib,
                  "added_mib": cost.added_mib, "workers": ctx.args.workers, "eval_users": ctx.args.eval_users,
                  "fitted_with": sorted(todo), "metrics": metrics, "evaluate_seconds": time.perf_counter() - start,
                  "config": refit_configs[kind], "settings": settings(ctx.args), "environment": environment()}
        for attr in ("epochs_run_", "best_epoch_"):
            if hasattr(model, attr):
                record[attr.rstrip("_")] = getattr(model, attr)
        write_json(ctx.out_dir / f"signal-{kind}.json", record)
        ctx.results[f"signal-{kind}"] = record
        log(f"  signal-{kind:<11} {plan[kind]:<7} {seconds[kind]:>9.1f} s; NDCG@{K} {metrics[f'ndcg@{K}']:.4f}")
    return data.matrix().nnz, {"fit": cost.__dict__, "mode": mode, "refit": plan, "fitted": sorted(todo),
                               "kept": sorted(kept), "fit_seconds": seconds}


def _fusion(ctx: ScaleContext) -> tuple[Any, dict[str, float]]:
    from hybrid.fusion import Fusion
    from models.base import FactorModel, FitData

    tuned = ctx.previous("tune")
    ds = ctx.dataset()
    train = FitData(ds.users, ds.items, ds.matrix("train"), "train")
    models = {s: FactorModel.load(ctx.model_dir(s), data=train) for s in ctx.args.signals}
    return Fusion(models, {s: float(tuned["scales"][s]) for s in ctx.args.signals}), tuned["weights"]


def run_hybrid(ctx: ScaleContext) -> tuple[int, dict[str, Any]]:
    from training.pipeline import fused_scorer

    fusion, weights = _fusion(ctx)
    train = fusion.models[fusion.signals[0]].seen_
    metrics = _evaluate(ctx, fused_scorer(fusion, weights), train)
    return int(metrics["users"]), {"metrics": metrics, "weights": weights}


def run_index(ctx: ScaleContext) -> tuple[int, dict[str, Any]]:
    """The serving bundle published under --cache (training.pipeline.publish_bundle: models, fused
    item vectors, graph space and usearch index; ``bench/api_load.py --scale N`` serves it), then
    searches of its index as a server loads it: --queries sampled users with the tuned blend, their
    'train' items excluded, one batch (usearch on every core) and one query at a time."""
    from hybrid.bundle import load
    from training.pipeline import publish_bundle

    fusion, weights = _fusion(ctx)
    root = ctx.bundle_root
    shutil.rmtree(root, ignore_errors=True)
    start = time.perf_counter()
    publish_bundle(root, fusion, ctx.dataset(), weights, metrics={"test": ctx.previous("hybrid")["metrics"]},
                   params={"source": "bench/scale.py", "refit": ctx.previous("refit")["refit"]})
    publish = time.perf_counter() - start
    del fusion
    bundle = load(root)
    index, entry = bundle.index, bundle.manifest.index
    train = bundle.history
    users = np.flatnonzero(np.diff(train.indptr) > 0)
    users = np.random.default_rng(ctx.args.seed).choice(users, size=min(ctx.args.queries, users.size), replace=False)
    queries = bundle.fusion.query(bundle.fusion.user_parts(users), weights)
    exclude = train[users]
    start = time.perf_counter()
    index.search(queries, K, exclude=exclude)
    search = time.perf_counter() - start
    start = time.perf_counter()
    for j in range(len(users)):
        index.search(queries[j], K, exclude=exclude[j])
    single = time.perf_counter() - start
    return len(index), {"items": len(index), "dim": index.dim, "graph_dtype": index.graph.dtype,
                        "graph_width": index.graph.ndim, "graph_space": None if index.space is None else index.space.widths,
                        "build_seconds": entry.build_seconds, "publish_seconds": publish,
                        "queries": int(users.size), "search_seconds": search,
                        "queries_per_second": users.size / search if search > 0 else None,
                        "single_query_ms": 1e3 * single / users.size, "answered": dict(index.stats)}


def stages(signals: list[str]) -> list[tuple[str, Callable[[ScaleContext], tuple[int, dict[str, Any]]], Callable[[ScaleContext], bool]]]:
    """(name, run, outputs-present) in run order."""
    always = (lambda ctx: True)
    out: list[Any] = [
        ("generate", run_generate, lambda ctx: (ctx.work_dir / "synthetic" / "items.parquet").exists()),
        ("ingest", run_ingest, lambda ctx: (ctx.dataset_dir / "manifest.json").exists()),
        ("tune", run_tune, lambda ctx: all((ctx.tuned_dir(s) / "model.json").exists() for s in signals)),
    ]
    out.append(("refit", run_refit, lambda ctx: all((ctx.model_dir(s) / "model.json").exists() for s in signals)))
    out += [("hybrid", run_hybrid, always), ("index", run_index, lambda ctx: (ctx.bundle_root / "latest").exists())]
    return out


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """What the stages after ingest depend on: a finished stage run with other settings is rerun."""
    return {"signals": list(args.signals), "lightgcn_epochs": args.lightgcn_epochs,
            "lightgcn_epoch_size": args.lightgcn_epoch_size, "eval_users": args.eval_users,
            "queries": args.queries, "workers": args.workers, "seed": args.seed, "quick": args.quick,
            "refit": args.refit}


def same_settings(name: str, done: dict[str, Any], args: argparse.Namespace, ctx: ScaleContext) -> bool:
    """Whether the finished stage ``name`` (its JSON ``done``) holds for these settings.

    A signal's refit (``signal-<kind>``) depends on the other signals only through the config
    tuning hands it (its refit config), so adding a signal reruns tuning, the hybrid and the
    index, not the refits of the signals that were there.
    """
    now, then = settings(args), dict(done.get("settings") or {})
    if name == "tune":  # tuning is the same whatever the refit does with its models
        now.pop("refit"), then.pop("refit", None)
    if name == "refit":  # and every signal refit with the config tuning hands it now
        configs = ctx.previous("tune")["refit_configs"]
        paths = {s: ctx.out_dir / f"signal-{s}.json" for s in args.signals}
        return then == now and all(p.exists() and same_json(read_json(p).get("config"), configs.get(s))
                                   for s, p in paths.items())
    if not name.startswith("signal-"):
        return then == now
    kind = name.removeprefix("signal-")
    now.pop("signals"), then.pop("signals", None)
    config = ctx.previous("tune")["refit_configs"].get(kind)
    return then == now and same_json(done.get("config"), config)


def run_size(n: int, client: Any, args: argparse.Namespace) -> dict[str, Any]:
    config = SyntheticConfig(n_interactions=n, partition_size=args.partition_size, seed=args.seed)
    ctx = ScaleContext(config, client, args.cache / "scale" / f"n{n}", args=args, out_dir=args.out / "scale" / f"n{n}")
    ctx.work_dir.mkdir(parents=True, exist_ok=True)
    log(f"scale: {n:,} interactions, {config.users:,} users, {config.items:,} items -> {ctx.out_dir}")
    for name, run, present in stages(args.signals):
        path = ctx.out_dir / f"{name}.json"
        if args.stages and name not in args.stages:
            continue
        done = kept_result(path, args.force, lambda d, name=name: name in ("generate", "ingest")
                           or same_settings(name, d, args, ctx)) if path.exists() and present(ctx) else None
        if done is not None:
            ctx.results[name] = done
            continue
        (rows, details), cost = measure(lambda run=run: run(ctx))
        result = {"stage": name, "interactions": n, "rows": rows, "seconds": cost.seconds,
                  "cpu_seconds": cost.cpu_seconds, "peak_mib": cost.peak_mib, "added_mib": cost.added_mib,
                  "peak_client_mib": cost.peak_client_mib, "peak_worker_mib": cost.peak_worker_mib,
                  "workers": args.workers, "eval_users": args.eval_users, "lightgcn_epochs": args.lightgcn_epochs,
                  "quick": args.quick, "settings": settings(args), "environment": environment(), **details}
        if name == "refit":  # the stage's figure is its fits; the signals' evaluations are reported apart
            result["stage_seconds"], result["seconds"] = result["seconds"], details["fit"]["seconds"]
            result["stage_peak_mib"], result["peak_mib"] = result["peak_mib"], details["fit"]["peak_mib"]
            result["added_mib"] = details["fit"]["added_mib"]
        write_json(path, result)
        ctx.results[name] = result
        extra = ""
        if "metrics" in details:
            extra = f"; NDCG@{K} {details['metrics'][f'ndcg@{K}']:.4f}, Recall@{K} {details['metrics'][f'recall@{K}']:.4f}"
        log(f"  {name:<18} {rows:>12,d} rows {result['seconds']:>9.1f} s  peak {result['peak_mib']:>8,.0f} MiB "
            f"(+{result['added_mib']:,.0f}){extra}")
    return ctx.results


def main(argv: list[str] | None = None) -> None:
    from training.pipeline import DEFAULT_SIGNALS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", help="interactions per size (default 1M 5M 25M)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (scale/ is written in it)")
    parser.add_argument("--cache", type=Path, default=CACHE, help="generated data, datasets and models")
    parser.add_argument("--signals", nargs="+", default=list(DEFAULT_SIGNALS))
    parser.add_argument("--stages", nargs="*", help="run only these stages (default: all)")
    parser.add_argument("--lightgcn-epochs", type=int, default=None,
                        help="cap on LightGCN's epochs (default: none, early stopping on validation decides)")
    parser.add_argument("--lightgcn-epoch-size", type=int, default=2**20, help="positives a LightGCN epoch draws")
    parser.add_argument("--eval-users", type=int, default=10_000, help="test users sampled for metrics")
    parser.add_argument("--queries", type=int, default=1_000, help="index searches timed")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--partition-size", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="small GA (for tiny smoke runs)")
    parser.add_argument("--refit", choices=("auto", "fit", "fold_in"), default="auto",
                        help="PipelineConfig.refit: how the refit stage makes each final model (default: the pipeline's)")
    parser.add_argument("--force", action="store_true", help="rerun stages whose JSON exists")
    args = parser.parse_args(argv)
    args.sizes = args.sizes or list(DEFAULT_SIZES)

    cluster, client = start_cluster(args.workers)
    try:
        for n in args.sizes:
            run_size(n, client, args)
    finally:
        client.close()
        cluster.close()


if __name__ == "__main__":
    main()
