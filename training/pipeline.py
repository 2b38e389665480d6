"""The training pipeline behind `hybridrec train / tune / evaluate`.

Stages, in the order of the protocol (../shared/DESIGN.md, "Evaluation protocol"):

1. ``fit_signals``: every requested signal on the 'fit' split, with 'validation' for signals that
   early-stop on it (LightGCN); optionally a few candidate configs per signal, the best kept by
   validation NDCG@10 (``PipelineConfig.search``).
2. ``Fusion.fit_scales`` on the validation pairs; ``build_pool``: the candidate pool of the
   validation users (training.candidates).
3. ``tune_ga``: blend weights by the genetic algorithm on the pool (training.tuner).
4. ``refit_signals``: every signal's final model on the whole 'train' split: fit again with the
   same hyperparameters (LightGCN for its validated best epoch count) or, on large data, the model
   of stage 1 with every user folded in from its 'train' history (``PipelineConfig.refit``); the
   tuned scales carry over.
5. ``evaluate_fusion``: full ranking of the test split with etl.metrics.evaluate, for each signal
   alone and for the tuned blend; ``publish_bundle`` writes the serving bundle when asked.

The test split is read only in stage 5: no choice anywhere depends on it.

What mattered on ml-latest-small (test NDCG@10, EASE's 0.1303 the best reference row):
- recency: the protocol's test items are each user's next ones, so user vectors that weigh the
  last few interactions most win. The 'svd' signal (models/svd.py, low-rank ridge item-item)
  went from 0.1278 to 0.1510 with a history half-life of 2 interactions and 512 factors;
- scales: re-measuring them after the refit on the validation pairs (now training pairs)
  re-weighted the blend and cost 0.015; the tuned scales are kept;
- weight noise: 610 validation users leave the best blend uncertain (one weight ranged from
  0.05 to 0.5 over bootstrap resamples); a single GA run's blend scored 0.149-0.152, the mean
  of 5 bootstrap rounds (GAConfig.bagging) 0.155, against 0.151 for the best signal alone;
- complementarity: with als, content, lightgcn, popularity and svd no weight vector beat svd
  alone on test by more than 0.0001 (bench/blend_headroom.py, 1,005 blends scored on test as an
  oracle): those signals all read a history as a set. The 'sequence' signal (models/sequence.py,
  what users watch next) reads its order; with it the tuned blend scored 0.1649 on test (validation
  0.1698), against 0.1510 for svd and 0.1316 for sequence alone.
"""

from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from etl.dataset import Dataset
from etl.jsonable import jsonable
from etl.metrics import evaluate
from training.candidates import CandidatePool, build_pool
from hybrid.fusion import Fusion
from training.tuner import GAConfig, TuneResult, tune_ga
from models.base import FactorModel, TrainData, TrainingOptions, model_class, require_client
from models.signals import signal_names

__all__ = [
    "DEFAULT_SIGNALS",
    "PipelineConfig",
    "PipelineResult",
    "TuningOutcome",
    "default_config",
    "evaluate_fusion",
    "fit_signals",
    "fused_scorer",
    "publish_bundle",
    "REFIT_MODES",
    "REFOLD_MIN_INTERACTIONS",
    "refit_plan",
    "refit_signals",
    "run_pipeline",
    "signal_class",
    "tune",
]

DEFAULT_SIGNALS: tuple[str, ...] = tuple(sorted(signal_names()))
"""Every signal, by name (the order fixes the tuner's weight vector, so it stays that of past runs)."""


def signal_class(kind: str) -> type[FactorModel]:
    """The model class of a signal kind (models.base imports its module on first use)."""
    return model_class(kind)


def default_config(kind: str) -> Any:
    """A signal's default config: its tuned preset when the Config offers one (``Config.tuned()``)."""
    config_cls = signal_class(kind).Config
    tuned = getattr(config_cls, "tuned", None)
    return tuned() if callable(tuned) else config_cls()


def _as_config(kind: str, spec: Any) -> Any:
    """A Config instance from None (the default), a Config, or a dict of overrides of the default."""
    if spec is None:
        return default_config(kind)
    if isinstance(spec, Mapping):
        base = default_config(kind)
        known = {f.name for f in fields(base)}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise ValueError(f"{kind}: unknown config field(s) {unknown}; known: {sorted(known)}")
        return replace(base, **spec)
    expected = signal_class(kind).Config
    if not isinstance(spec, expected):
        raise ValueError(
            f"{kind}: config must be a {expected.__name__} or a dict of overrides, got {type(spec).__name__}"
        )
    return spec


@dataclass
class PipelineConfig:
    """What the pipeline trains and how it tunes the blend."""

    signals: tuple[str, ...] = DEFAULT_SIGNALS
    """Signal kinds to train and blend."""
    configs: dict[str, Any] = field(default_factory=dict)
    """Per signal: a Config, or a dict of overrides of its default (tuned preset when offered)."""
    search: dict[str, list[Any]] = field(default_factory=dict)
    """Per signal: candidate configs (Configs or override dicts) fit on 'fit' and ranked by
    validation NDCG@10; the best replaces ``configs[signal]``. Empty: no search."""
    per_signal: int = 100
    """Candidates per signal in the tuning pool (each signal's top-N, unioned per user)."""
    max_tune_users: int | None = 10_000
    """Validation users sampled for the pool (seeded); None: all of them. The pool's and the GA's
    cost grow with it (at 25M synthetic interactions, 20,000 users: pool 97 s, GA 249 s, 2-core
    AMD EPYC); 10,000 users are 16 times ml-latest-small's 610, where bagging already tames the
    weights' noise. At 25M with 10,000: pool 49 s, GA 101 s, validation NDCG@10 0.2331 (0.2340
    with 20,000), test 0.3563 against 0.3572 (both with the fold-in refit; one run each)."""
    ga: GAConfig = field(default_factory=GAConfig)
    """The genetic algorithm's settings."""
    tune_signals: tuple[str, ...] | None = None
    """Signals whose weights are tuned (the others get 0); None: all."""
    max_eval_users: int | None = None
    """Test users evaluated (a seeded sample, for very large data); None: all, as the protocol says."""
    refit: str = "auto"
    """How stage 4 makes each signal's final model on 'train' (``refit_signals``): 'fit' fits it
    again; 'fold_in' keeps the model fit on 'fit' and folds every user in from its 'train' history
    (``FactorModel.refold``; a signal whose fit costs less, popularity, is fit again); 'auto' is
    'fold_in' when the 'train' split holds at least ``REFOLD_MIN_INTERACTIONS``, else 'fit'."""
    k: int = 10
    seed: int = 0
    verbose: bool = True

    def __post_init__(self) -> None:
        if not self.signals:
            raise ValueError("PipelineConfig.signals is empty")
        if len(set(self.signals)) != len(self.signals):
            raise ValueError(f"PipelineConfig.signals repeats a signal: {self.signals}")
        for name in (*self.configs, *self.search):
            if name not in self.signals:
                raise ValueError(f"config or search given for {name!r}, which is not among signals {self.signals}")
        if self.tune_signals is not None and not set(self.tune_signals) <= set(self.signals):
            raise ValueError(f"tune_signals {self.tune_signals} must be among signals {self.signals}")
        if self.per_signal < self.k:
            raise ValueError(f"per_signal ({self.per_signal}) must be >= k ({self.k})")
        if self.refit not in REFIT_MODES:
            raise ValueError(f"PipelineConfig.refit must be one of {REFIT_MODES}, got {self.refit!r}")

    def config_for(self, kind: str) -> Any:
        return _as_config(kind, self.configs.get(kind))


# -- stages ---------------------------------------------------------------------------------------
def _log(verbose: bool, message: str) -> None:
    if verbose:  # one write per line: fits log from several threads
        sys.stderr.write(f"pipeline: {message}\n")
        sys.stderr.flush()


def _options(options: TrainingOptions | None, what: str) -> TrainingOptions:
    """``options``, checked to carry the client every stage runs on (ClientRequiredError without one)."""
    options = options or TrainingOptions()
    require_client(options.client, what)
    return options


FitCallback = Callable[[str, FactorModel, float], None]
"""Called from the fitting thread as each fit ends: (signal, model, seconds)."""


def fit_signals(
    data: TrainData,
    configs: Mapping[str, Any],
    options: TrainingOptions,
    verbose: bool = False,
    concurrency: int | None = None,
    on_fit: FitCallback | None = None,
) -> tuple[dict[str, FactorModel], dict[str, float]]:
    """Fit one model per signal on ``data``; returns the models and each fit's wall seconds.

    Fits run ``concurrency`` at a time (None: one per worker thread of the cluster), each from
    its own client thread; their tasks share the cluster. A signal whose fit is one long task
    (LightGCN's trainer) would otherwise hold one worker while the other idles. The scale bench's
    1M refit (six signals, 2 single-threaded workers, 2-core AMD EPYC, alternated in one process,
    load 0.1-1.6) took 147.0 and 145.8 s side by side against 175.0 s one after another (LightGCN
    alone 122 s of it); at 25M, where the other signals' fits add up to more than LightGCN's,
    tuning's fits took 812 s against 1,294 s on another day (not paired). The seconds of
    concurrent fits overlap, so they add up to more than the stage's wall time.

    Models are returned in the order of ``configs``; ``on_fit`` sees each as it ends (to save it
    before the others finish). Every model is built before any fit starts, so a config of the
    wrong type fails at once. When a fit fails, fits not yet started are cancelled, the running
    ones end, and the error is raised (an ExceptionGroup when several failed).
    """
    client = require_client(options.client, "fit_signals")
    slots = max(1, sum(client.nthreads().values())) if concurrency is None else concurrency
    if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
        raise ValueError(f"concurrency must be an integer >= 1, got {concurrency!r}")
    models = {kind: signal_class(kind)(config) for kind, config in configs.items()}
    kinds = list(models)

    def fit(kind: str) -> float:
        _log(verbose, f"fitting {kind} on {data.split!r} ({kinds.index(kind) + 1}/{len(kinds)})")
        start = time.perf_counter()
        models[kind].fit(data, options)
        seconds = time.perf_counter() - start
        _log(verbose, f"fit {kind} on {data.split!r} in {seconds:.1f}s")
        if on_fit is not None:
            on_fit(kind, models[kind], seconds)
        return seconds

    data.matrix()  # read once, before the threads share it
    if data.validation is not None:
        data.matrix(data.validation)
    # One BLAS thread in this process while fits run side by side: a fit's scoped
    # threadpool_limits (svd's QR) would otherwise resize the process-wide OpenBLAS pool while
    # another thread is inside a threaded BLAS call (tests/conftest.py says why that hangs). The
    # client's share of a fit is orchestration and small dense steps; the work is on the workers.
    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(
        max_workers=min(slots, max(len(kinds), 1)), thread_name_prefix="fit-signal"
    ) as pool:
        futures = {kind: pool.submit(fit, kind) for kind in kinds}
        try:
            wait(futures.values(), return_when=FIRST_EXCEPTION)
        finally:  # a failure or an interrupt: start nothing more; the running fits end
            for future in futures.values():
                future.cancel()
    errors = [f.exception() for f in futures.values() if not f.cancelled() and f.exception() is not None]
    if len(errors) == 1:
        raise errors[0]
    if errors:
        failed = [k for k, f in futures.items() if not f.cancelled() and f.exception() is not None]
        raise ExceptionGroup(f"fits of {', '.join(failed)} failed", errors)
    return models, {kind: f.result() for kind, f in futures.items()}


REFIT_MODES = ("auto", "fit", "fold_in")
REFOLD_MIN_INTERACTIONS = 2_000_000
"""'auto' makes the final models by fold-in (``refit_signals``) from this many 'train' interactions
on. Tuning's model has seen 80% of each history; with much data per item its item side loses
little, and folding every user in from 'train' (what serving does with later events) costs a
fraction of a fit. At 1M synthetic interactions (797k in 'train'; `bench/scale.py --refit
fold_in`, 2026-12-07, test NDCG@10 over 10,000 users, against the fits of the same tuning) the
hybrid scored 0.4161 against 0.4178 (LightGCN 0.3930 vs 0.3898, svd 0.3627 vs 0.3602, content
0.0993 vs 0.0994, ALS 0.3362 vs 0.3430, sequence 0.1503 vs 0.1585) and the refit took 12.7 s
against 143.5 s; at 5M (3.99M in 'train', 'auto') 0.3816 against 0.3813 (LightGCN 0.3638 vs
0.3639, svd 0.3289 vs 0.3262, ALS 0.2323 vs 0.2348, sequence 0.1845 vs 0.1892), 24.3 s against
201.5 s (the fits' figures from the committed runs of the same tuning, the same day; times not
paired, the gap is tenfold). At 25M (19.9M in 'train', the same tuning, runs on different
machines' loads) 0.3572 against 0.3591: LightGCN 0.3492 vs 0.3493, ALS 0.1857 vs 0.1871, svd
0.2673 vs 0.2787 (the one signal that lost more than 1%; its weight in the blend is 0.04); the
refit's models took 105 s against 803 s. Below this size the fits are cheap, and ml-latest-small's figures stay those of the
protocol's refit."""


def refit_plan(refit: str, dataset: Dataset, kinds: Sequence[str]) -> dict[str, str]:
    """How ``refit_signals`` makes each signal's final model: 'fit' or 'fold_in' per kind, for
    ``refit`` ('auto', 'fit' or 'fold_in', ``PipelineConfig.refit``) on ``dataset``."""
    if refit not in REFIT_MODES:
        raise ValueError(f"refit must be one of {REFIT_MODES}, got {refit!r}")
    if refit == "auto":
        refit = "fold_in" if dataset.count("train") >= REFOLD_MIN_INTERACTIONS else "fit"
    return {s: "fold_in" if refit == "fold_in" and signal_class(s).refolds else "fit" for s in kinds}


def refit_signals(
    dataset: Dataset,
    fitted: Mapping[str, FactorModel],
    options: TrainingOptions,
    verbose: bool = False,
    refit: str = "fit",
    data: TrainData | None = None,
) -> tuple[dict[str, FactorModel], dict[str, float]]:
    """Every signal's final model on the whole 'train' split, and the seconds each took.

    ``data``: the dataset's 'train' TrainData to use (its matrices already read); None builds one.

    ``refit`` (``PipelineConfig.refit``; ``refit_plan`` resolves it per signal) 'fit': fit again
    with its tuned hyperparameters (``FactorModel.refit_config``: LightGCN for its validated epoch
    count). 'fold_in': the model of ``fitted`` (fit on 'fit') with every user folded in from its
    'train' history (``FactorModel.refold``), for the signals that refold, side by side in this
    process (their seconds overlap); the others fit again."""
    data = data if data is not None else TrainData(dataset, split="train")
    if Path(data.dataset.path) != Path(dataset.path) or data.split != "train":
        raise ValueError(f"data must be the 'train' split of {dataset.path}, got {data.split!r} of {data.dataset.path}")
    plan = refit_plan(refit, dataset, list(fitted))
    models, seconds = fit_signals(data, {s: m.refit_config() for s, m in fitted.items() if plan[s] == "fit"},
                                  options, verbose)
    folded = [s for s in fitted if plan[s] == "fold_in"]

    def refold(s: str) -> None:
        start = time.perf_counter()
        models[s] = fitted[s].refold(data)
        seconds[s] = time.perf_counter() - start
        _log(verbose, f"folded {s}'s users in from 'train' in {seconds[s]:.1f}s")

    # Fold-ins run in this process, one per core: their kernels (sparse products, ALS's CG) release
    # the GIL. BLAS stays on one thread meanwhile, as in fit_signals (a scoped limit inside one
    # would resize the process-wide OpenBLAS pool under the other's call).
    threads = max(1, min(len(folded), os.cpu_count() or 1))
    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(threads, "refold") as pool:
        for future in [pool.submit(refold, s) for s in folded]:
            future.result()
    return {s: models[s] for s in fitted}, {s: seconds[s] for s in fitted}


def select_config(
    kind: str,
    candidates: Sequence[Any],
    data: TrainData,
    options: TrainingOptions,
    k: int = 10,
    verbose: bool = False,
) -> tuple[Any, FactorModel, list[dict[str, Any]]]:
    """Fit each candidate config on ``data`` (split 'fit') and keep the best validation NDCG@k."""
    if data.validation is None:
        raise ValueError("select_config needs TrainData with a validation split")
    fit, val = data.matrix(), data.matrix(data.validation)
    best, report = None, []
    for spec in candidates:
        config = _as_config(kind, spec)
        model = signal_class(kind)(config).fit(data, options)
        ndcg = evaluate(model.score, fit, val, k=k)[f"ndcg@{k}"]
        report.append({"config": jsonable(config), f"validation_ndcg@{k}": ndcg})
        _log(verbose, f"search {kind}: validation NDCG@{k} {ndcg:.4f} for {spec}")
        if best is None or ndcg > best[0]:
            best = (ndcg, config, model)
    assert best is not None
    return best[1], best[2], report


def fused_scorer(fusion: Fusion, weights: Mapping[str, float]) -> Callable[[np.ndarray], np.ndarray]:
    """score_batch for etl.metrics: query @ item_vectors.T for a batch of user rows."""
    items = fusion.item_vectors()

    def score(rows: np.ndarray) -> np.ndarray:
        return fusion.query(fusion.user_parts(rows), weights) @ items.T

    return score


def _sample_rows(m: sp.csr_matrix, max_users: int | None, seed: int) -> sp.csr_matrix:
    """``m`` with only a seeded sample of its non-empty rows kept (all when max_users is None)."""
    users = np.flatnonzero(np.diff(m.indptr) > 0)
    if max_users is None or users.size <= max_users:
        return m
    keep = np.zeros(m.shape[0], dtype=np.float32)
    keep[np.random.default_rng(seed).choice(users, size=max_users, replace=False)] = 1.0
    out = sp.csr_matrix(sp.diags(keep) @ m)
    out.eliminate_zeros()
    return out


def evaluate_fusion(
    fusion: Fusion,
    weights: Mapping[str, float] | None,
    dataset: Dataset,
    *,
    split: str = "test",
    k: int = 10,
    signals: bool = True,
    max_users: int | None = None,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Protocol metrics on ``split`` (full ranking, train items excluded): each signal alone
    (when ``signals``) and the blend ``weights`` (under 'hybrid'; skipped when None)."""
    train = fusion.models[fusion.signals[0]].seen_
    truth = _sample_rows(dataset.matrix(split), max_users, seed)
    out: dict[str, dict[str, float]] = {}
    if signals:
        for s in fusion.signals:
            out[s] = evaluate(fusion.models[s].score, train, truth, k=k)
    if weights is not None:
        out["hybrid"] = evaluate(fused_scorer(fusion, weights), train, truth, k=k)
    return out


# -- results ----------------------------------------------------------------------------------------
@dataclass
class TuningOutcome:
    """Stages 1-3: signals fit on 'fit', their scales, the pool and the tuned weights."""

    models: dict[str, FactorModel]
    scales: dict[str, float]
    pool: CandidatePool
    tuning: TuneResult
    validation: dict[str, float]
    """Validation NDCG@k per signal (exact: a signal's own top-k is always in the pool) and of
    the tuned blend on the pool ('hybrid')."""
    search: dict[str, list[dict[str, Any]]]
    timings: dict[str, float]

    @property
    def weights(self) -> dict[str, float]:
        return self.tuning.weights


@dataclass
class PipelineResult:
    """What `hybridrec train` reports and publishes."""

    signals: tuple[str, ...]
    weights: dict[str, float]
    scales: dict[str, float]
    """Normalisation scalars of the final fusion (those of tuning, carried over)."""
    test: dict[str, dict[str, float]]
    """Test metrics per signal and for the tuned blend ('hybrid')."""
    validation: dict[str, float]
    tuning: TuneResult
    fusion: Fusion
    params: dict[str, dict[str, Any]]
    """Per signal: the config of the final fit."""
    refit: dict[str, str]
    """Per signal: how its final model was made on 'train', 'fit' or 'fold_in' (``refit_plan``)."""
    tuning_scales: dict[str, float]
    pool: dict[str, Any]
    search: dict[str, list[dict[str, Any]]]
    timings: dict[str, float]
    bundle: str | Path | None = None
    """The published version (a Path under a local bundle root, a URL under any other)."""

    def table(self, k: int = 10) -> str:
        """Per-signal and hybrid validation / test NDCG@k and test Recall@k as text."""
        rows = [f"{'signal':<12}{'weight':>8}{'val ndcg':>10}{'test ndcg':>11}{'test recall':>13}"]
        for name in (*self.signals, "hybrid"):
            t = self.test.get(name, {})
            w = self.weights.get(name, float("nan")) if name != "hybrid" else 1.0
            rows.append(
                f"{name:<12}{w:>8.3f}{self.validation.get(name, float('nan')):>10.4f}"
                f"{t.get(f'ndcg@{k}', float('nan')):>11.4f}{t.get(f'recall@{k}', float('nan')):>13.4f}"
            )
        return "\n".join(rows)

    def summary(self) -> dict[str, Any]:
        """JSON-able digest: weights, scales, metrics, parameters, tuning history, timings."""
        return jsonable({
            "signals": list(self.signals),
            "weights": self.weights,
            "scales": self.scales,
            "tuning_scales": self.tuning_scales,
            "validation": self.validation,
            "test": self.test,
            "params": self.params,
            "refit": self.refit,
            "pool": self.pool,
            "tuning": self.tuning.summary(),
            "search": self.search,
            "timings": self.timings,
            "bundle": str(self.bundle) if self.bundle else None,
        })


# -- the pipeline ---------------------------------------------------------------------------------
def tune(dataset: Dataset | str | Path, config: PipelineConfig | None = None,
         options: TrainingOptions | None = None) -> TuningOutcome:
    """Stages 1-3 (`hybridrec tune`): fit on 'fit', scale and pool on 'validation', GA weights.

    Runs on the Dask cluster of ``options.client`` (required: ClientRequiredError without one)."""
    config = config or PipelineConfig()
    options = _options(options, "tune")
    dataset = dataset if isinstance(dataset, Dataset) else Dataset.open(dataset)
    verbose = config.verbose
    timings: dict[str, float] = {}
    data = TrainData(dataset, split="fit", validation="validation")
    fit, val = data.matrix(), data.matrix("validation")

    configs = {s: config.config_for(s) for s in config.signals}
    models: dict[str, FactorModel] = {}
    search: dict[str, list[dict[str, Any]]] = {}
    start = time.perf_counter()
    for s, candidates in config.search.items():
        configs[s], models[s], search[s] = select_config(s, candidates, data, options, config.k, verbose)
    rest, seconds = fit_signals(data, {s: c for s, c in configs.items() if s not in models}, options, verbose)
    models.update(rest)
    models = {s: models[s] for s in config.signals}
    data.__dict__.pop("_histories", None)  # the fits' shared read, not held through the pool and the GA
    timings.update({f"fit_{s}": v for s, v in seconds.items()})
    timings["fit_signals"] = time.perf_counter() - start

    start = time.perf_counter()
    fusion = Fusion.fit_scales(models, val)
    pool = build_pool(models, fusion.scales, fit, val, per_signal=config.per_signal, max_users=config.max_tune_users,
                      seed=config.seed, k=config.k, client=options.client)
    timings["pool"] = time.perf_counter() - start
    _log(verbose, f"pool: {pool.n_users} users x {pool.width} candidates, {pool.nbytes / 2**20:.1f} MiB, "
                  f"holds {pool.coverage():.1%} of validation items ({timings['pool']:.1f}s)")
    validation = {s: pool.ndcg({s: 1.0}) for s in pool.signals}

    _log(verbose, f"GA: tuning the blend's weights on validation (at most {config.ga.generations} generations)")
    start = time.perf_counter()
    result = tune_ga(pool, config.tune_signals, config.ga, options.client)
    timings["tune"] = time.perf_counter() - start
    validation["hybrid"] = result.ndcg
    _log(verbose, f"GA: validation NDCG@{config.k} {result.ndcg:.4f} after {result.evaluations} evaluations "
                  f"({timings['tune']:.1f}s); weights {_fmt(result.weights)}")
    return TuningOutcome(models, dict(fusion.scales), pool, result, validation, search, timings)


def publish_bundle(bundle_root: str | Path, fusion: Fusion, dataset: Dataset, weights: Mapping[str, float],
                   metrics: Mapping[str, Any], params: Mapping[str, Any], *, make_latest: bool = True) -> str | Path:
    """Publish the serving bundle (hybrid.bundle.publish) with the tuned weights as variant 'tuned'."""
    from hybrid.bundle import publish
    from hybrid.fusion import check_weights
    from hybrid.variants import Variants

    tuned = check_weights(weights, fusion.signals)
    return publish(bundle_root, fusion, dataset, weights=tuned, variants=Variants(fusion.signals, tuned),
                   metrics=dict(metrics), params=dict(params), make_latest=make_latest)


def run_pipeline(
    dataset: Dataset | str | Path,
    config: PipelineConfig | None = None,
    options: TrainingOptions | None = None,
    *,
    bundle_root: str | Path | None = None,
    plot: str | Path | None = None,
) -> PipelineResult:
    """Tune on validation, refit on 'train', evaluate on test (`hybridrec train`).

    ``bundle_root`` (a folder or an fsspec URL): publish the final fusion there as a new bundle
    version; ``plot``: write the GA's convergence PNG there. Runs on the Dask cluster of
    ``options.client`` (required: ClientRequiredError without one).
    """
    config = config or PipelineConfig()
    options = _options(options, "run_pipeline")
    dataset = dataset if isinstance(dataset, Dataset) else Dataset.open(dataset)
    outcome = tune(dataset, config, options)
    timings = dict(outcome.timings)

    start = time.perf_counter()
    final, seconds = refit_signals(dataset, outcome.models, options, config.verbose, config.refit)
    timings.update({f"refit_{s}": v for s, v in seconds.items()})
    timings["refit_signals"] = time.perf_counter() - start
    # The tuned scales carry over unchanged: the weights were tuned in their units. Re-measuring
    # on the validation pairs, now training pairs, inflates collaborative signals' spread while a
    # content signal's barely moves, which silently re-weights the blend (on ml-latest-small it
    # cost 0.015 test NDCG@10). Nothing better exists without the test split: kept scales were
    # the closest to the spread on test pairs of every signal there (checked, never used).
    fusion = Fusion(final, dict(outcome.scales))

    start = time.perf_counter()
    test = evaluate_fusion(
        fusion, outcome.weights, dataset, k=config.k, max_users=config.max_eval_users, seed=config.seed
    )
    timings["evaluate"] = time.perf_counter() - start
    # the config of each final model's fit: a refolded one's as its refit would have been (LightGCN's
    # validated epoch count, not tuning's cap); a model fit on 'train' gives its own
    params = {s: jsonable(m.refit_config()) for s, m in final.items()}
    pool = {"users": outcome.pool.n_users, "width": outcome.pool.width, "per_signal": outcome.pool.per_signal,
            "coverage": outcome.pool.coverage()}
    result = PipelineResult(
        signals=fusion.signals,
        weights=outcome.weights,
        scales=dict(fusion.scales),
        test=test,
        validation=outcome.validation,
        tuning=outcome.tuning,
        fusion=fusion,
        params=params,
        refit=refit_plan(config.refit, dataset, fusion.signals),
        tuning_scales=outcome.scales,
        pool=pool,
        search=outcome.search,
        timings=timings,
    )
    _log(config.verbose, "results\n" + result.table(config.k))
    if plot is not None:
        outcome.tuning.plot(plot)
    if bundle_root is not None:
        metrics = {"test": test, "validation": outcome.validation}
        extra = {"tuning": outcome.tuning.summary(), "pool": pool, "refit": result.refit}
        result.bundle = publish_bundle(bundle_root, fusion, dataset, outcome.weights, metrics, {**params, **extra})
        _log(config.verbose, f"published {result.bundle}")
    return result


def _fmt(weights: Mapping[str, float]) -> str:
    return json.dumps({s: round(w, 3) for s, w in weights.items()})
