"""Blend-weight tuners: a genetic algorithm, and grid and random search for comparison.

Weights are non-negative and sum to 1 (a blend's ranking does not depend on their overall
scale). Fitness is NDCG@k of the blend on a candidate pool of validation users
(training.candidates), never on test. Every fitness evaluation is one named Dask task
(``ga-gen-{g}-ind-{i}-<run>``, ``grid-eval-{i}-<run>``, ``random-eval-{i}-<run>``) on the Dask
client the caller passes (required: ClientRequiredError without one), so a generation runs in
parallel over the cluster. The pool is scattered once (models.base.SharedValues: one replica, which
the workers fetch, scattered again only if the cluster lost it).

The GA (real-coded): the first generation holds every single signal alone, the uniform blend and
Dirichlet(1) draws; parents are chosen by tournament; children by blend crossover (BLX-alpha
arithmetic mixing of two parents, then re-normalised) and Gaussian mutation of the log-weights;
the best ``elite`` individuals pass unchanged (and are not re-evaluated). It stops after
``generations`` or when the best fitness has not improved by ``min_improvement`` for
``patience`` generations.

Bagging (``GAConfig.bagging``, on by default): the GA runs once per bootstrap resample of the
validation users (``ga-round-{b}-gen-{g}-ind-{i}-<run>``) and the blend is the mean of the
rounds' best weights. With a few hundred validation users the single best blend is mostly
noise in its details; on ml-latest-small the mean of 5-6 rounds gained 0.002-0.005 test
NDCG@10 over a single GA run (see training/pipeline.py).
"""

from __future__ import annotations

import itertools
import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from training.candidates import CandidatePool
from models.base import SharedValues, gather_shared, require_client

__all__ = ["GAConfig", "Generation", "TuneResult", "simplex_grid", "tune_ga", "tune_grid", "tune_random"]


@dataclass
class GAConfig:
    """Settings of the genetic algorithm."""

    population: int = 24
    """Individuals per generation."""
    generations: int = 25
    """Most generations (the first, random one included)."""
    elite: int = 2
    """Best individuals copied unchanged into the next generation."""
    tournament: int = 3
    """Individuals drawn per tournament; the fittest becomes a parent."""
    crossover_rate: float = 0.9
    """Probability that a child mixes two parents (else it copies the first)."""
    blend_alpha: float = 0.3
    """BLX-alpha: the mixing coefficient is drawn from [-alpha, 1 + alpha] (0: strictly between parents)."""
    mutation_rate: float = 0.3
    """Probability that each weight of a child is mutated."""
    mutation_scale: float = 0.5
    """Standard deviation of the Gaussian step on a mutated log-weight."""
    zero_rate: float = 0.05
    """Probability that a mutated weight is set to 0 instead (lets a blend drop a signal)."""
    seed: int = 0
    """Seed of every random draw; a run is reproducible for a fixed pool and seed."""
    patience: int = 6
    """Generations without an improvement of at least min_improvement before stopping."""
    min_improvement: float = 1e-4
    """Smallest gain in best fitness that counts as an improvement."""
    bagging: int = 5
    """Bootstrap rounds: the GA runs on this many resamples of the validation users (with
    replacement, seeded) and the weights are the mean of the rounds' best. A few hundred users
    leave the best blend uncertain (on ml-latest-small one weight swung from 0.05 to 0.5 between
    resamples); averaging the rounds keeps what they agree on. 0: one GA on the pool as it is.
    If the mean blend scores below the best single signal on validation, that signal is kept."""
    smoothing: int = 0
    """Jittered copies averaged into each fitness (0: plain NDCG). Each copy multiplies the
    weights by fixed log-normal factors, so the GA prefers broad optima over sharp peaks that
    a few hundred validation users can produce by chance; costs (1 + smoothing) x the time."""
    smoothing_scale: float = 0.3
    """Standard deviation of the log-normal jitter of ``smoothing``."""

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, rule: str) -> None:
            if not ok:
                raise ValueError(f"GAConfig.{name} must be {rule}, got {getattr(self, name)!r}")

        for name in ("population", "generations", "tournament", "patience"):
            value = getattr(self, name)
            need(isinstance(value, int) and not isinstance(value, bool) and value >= 1, name, "an int >= 1")
        need(isinstance(self.elite, int) and 0 <= self.elite < self.population, "elite", "an int in [0, population)")
        need(self.tournament <= self.population, "tournament", "<= population")
        for name in ("crossover_rate", "mutation_rate", "zero_rate"):
            need(0.0 <= getattr(self, name) <= 1.0, name, "in [0, 1]")
        need(self.blend_alpha >= 0, "blend_alpha", ">= 0")
        need(self.mutation_scale > 0, "mutation_scale", "> 0")
        need(self.min_improvement >= 0, "min_improvement", ">= 0")
        need(isinstance(self.smoothing, int) and self.smoothing >= 0, "smoothing", "an int >= 0")
        need(isinstance(self.bagging, int) and not isinstance(self.bagging, bool) and self.bagging >= 0, "bagging",
             "an int >= 0")
        need(self.smoothing_scale > 0, "smoothing_scale", "> 0")

    @property
    def max_evaluations(self) -> int:
        """The most fitness evaluations the GA rounds can use (elites are not re-evaluated; each
        bootstrap round is a run). Bagging adds 1 + (signals tuned) for the final check."""
        one = self.population + (self.generations - 1) * (self.population - self.elite)
        return one if self.bagging == 0 else self.bagging * one


@dataclass
class Generation:
    """One generation (or, for grid/random search, one batch of evaluations)."""

    index: int
    best: float
    """Best fitness in this generation."""
    mean: float
    """Mean fitness of this generation."""
    best_so_far: float
    weights: dict[str, float]
    """The best individual's weights in this generation."""
    evaluations: int
    """Fitness evaluations used so far (cumulative)."""
    seconds: float
    """Wall time so far (cumulative)."""


@dataclass
class TuneResult:
    """The tuned weights, their validation fitness and the run's record."""

    method: str
    """'ga', 'grid' or 'random'."""
    signals: tuple[str, ...]
    weights: dict[str, float]
    """Best weights (sum 1), every signal of the pool present (0 when unused)."""
    fitness: float
    """The objective at ``weights``: NDCG@k on the validation pool (averaged over the jittered
    copies when smoothing)."""
    ndcg: float
    """Plain validation NDCG@k of ``weights`` on the pool."""
    evaluations: int
    history: list[Generation]
    trace: list[float] = field(default_factory=list)
    """Best fitness so far after each evaluation, in evaluation order."""
    stopped_early: bool = False
    seconds: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)
    rounds: list[TuneResult] = field(default_factory=list)
    """With bagging: the GA of each bootstrap round (their fitness is on the resample)."""

    def best_after(self, evaluations: int) -> float:
        """Best fitness found within the first ``evaluations`` evaluations (nan before any)."""
        if evaluations < 1 or not self.trace:
            return float("nan")
        return self.trace[min(evaluations, len(self.trace)) - 1]

    def summary(self) -> dict[str, Any]:
        """JSON-able digest (for a manifest or a report)."""
        return {
            "method": self.method,
            "weights": self.weights,
            "fitness": self.fitness,
            "ndcg": self.ndcg,
            "evaluations": self.evaluations,
            "generations": len(self.history),
            "stopped_early": self.stopped_early,
            "seconds": round(self.seconds, 3),
            "config": self.config,
            "history": [asdict(g) for g in self.history],
            "rounds": [
                {"weights": r.weights, "fitness": r.fitness, "evaluations": r.evaluations,
                 "history": [asdict(g) for g in r.history]}
                for r in self.rounds
            ],
        }

    def plot(self, path: str | Path, title: str | None = None) -> Path:
        """A convergence PNG: best and mean fitness per generation, best so far per evaluation."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
        runs = self.rounds or [self]
        for b, run in enumerate(runs):
            gens = [g.index for g in run.history]
            tag = f"round {b}: " if self.rounds else ""
            line = left.plot(gens, [g.best for g in run.history], marker="o", label=f"{tag}best in generation")[0]
            left.plot(gens, [g.mean for g in run.history], marker=".", color=line.get_color(), alpha=0.5,
                      label=f"{tag}mean of generation")
            right.plot(np.arange(1, len(run.trace) + 1), run.trace, color=line.get_color(),
                       label=tag.rstrip(": ") or None)
        left.set_xlabel("generation" if self.method == "ga" else "batch")
        left.set_ylabel("validation NDCG@10" + (" (bootstrap resample)" if self.rounds else ""))
        left.legend(fontsize=7)
        right.set_xlabel("fitness evaluations")
        right.set_ylabel("best validation NDCG@10 so far")
        if self.rounds:
            right.axhline(self.ndcg, linestyle="--", color="black", label=f"chosen blend, whole pool: {self.ndcg:.4f}")
            right.legend(fontsize=7)
        fig.suptitle(title or f"{self.method}: validation NDCG@10 {self.ndcg:.4f} after {self.evaluations} evaluations")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path


# -- evaluation on the cluster ------------------------------------------------------------------
def _fitness(weights: np.ndarray, pool: CandidatePool, jitter: np.ndarray | None = None,
             users: np.ndarray | None = None) -> float:
    """A Dask task: validation NDCG@k of one weight vector (pool signal order), averaged over
    the jittered copies ``weights * jitter[j]`` when ``jitter`` (J, S) is given, with users
    weighted by ``users`` (bootstrap counts) when given."""
    if jitter is None:
        return pool.ndcg(weights, user_weights=users)
    return float(np.mean([pool.ndcg(w, user_weights=users) for w in (weights, *(weights * row for row in jitter))]))


def jitter_factors(n_signals: int, copies: int, scale: float, seed: int) -> np.ndarray | None:
    """Fixed log-normal weight multipliers for smoothed fitness (None when copies is 0)."""
    if copies == 0:
        return None
    rng = np.random.default_rng([seed, 0x5EED])
    return np.exp(rng.normal(0.0, scale, size=(copies, n_signals)))


class _Evaluator:
    """Scatters the pool once (or reads the ``shared_pool`` of bagging rounds), then evaluates
    batches of weight vectors as named tasks."""

    def __init__(self, pool: CandidatePool, signals: Sequence[str] | None, client: Any,
                 smoothing: int = 0, smoothing_scale: float = 0.3, seed: int = 0,
                 shared_pool: SharedValues | None = None, users: np.ndarray | None = None) -> None:
        self.client = require_client(client, "the blend tuner")
        self.pool = pool
        self.signals = tuple(signals) if signals else pool.signals
        unknown = [s for s in self.signals if s not in pool.signals]
        if unknown:
            raise ValueError(f"signal(s) {unknown} not in the pool ({list(pool.signals)})")
        if len(set(self.signals)) != len(self.signals):
            raise ValueError(f"repeated signal in {list(self.signals)}")
        self._index = np.array([pool.signals.index(s) for s in self.signals])
        self.token = uuid.uuid4().hex[:8]
        self._owns_pool = shared_pool is None
        self._pool = shared_pool if shared_pool is not None else SharedValues(client, [pool])
        self.users = users
        self.jitter = jitter_factors(len(pool.signals), smoothing, smoothing_scale, seed)
        # scattered like the pool: an array argument of client.map becomes a task keyed by the
        # argument's name, which collides between bootstrap rounds on a shared scheduler
        self._args = {name: value for name, value in (("users", users), ("jitter", self.jitter)) if value is not None}
        self._args_shared = SharedValues(client, list(self._args.values()))
        self.trace: list[float] = []
        self.best = -math.inf
        self.best_w: np.ndarray | None = None
        self.start = time.perf_counter()

    def full(self, w: np.ndarray) -> np.ndarray:
        """Tuned-signal weights -> weights over every pool signal (0 for the untuned)."""
        out = np.zeros(len(self.pool.signals), dtype=np.float64)
        out[self._index] = w
        return out

    def evaluate(self, batch: np.ndarray, keys: Sequence[str]) -> np.ndarray:
        weights = [self.full(w) for w in batch]

        def submit(fresh: bool, suffix: str) -> list[Any]:
            [pool_f] = self._pool.get(fresh)
            args = dict(zip(self._args, self._args_shared.get(fresh), strict=True))
            return self.client.map(
                _fitness, weights, pool=pool_f, jitter=args.get("jitter"), users=args.get("users"),
                key=[f"{k}-{self.token}{suffix}" for k in keys], pure=False,
            )

        values = np.asarray(gather_shared(self.client, f"tuner: {keys[0]}-{self.token}", submit), dtype=np.float64)
        for w, v in zip(batch, values, strict=True):
            if v > self.best:
                self.best, self.best_w = float(v), w.copy()
            self.trace.append(self.best)
        return values

    def weights_dict(self, w: np.ndarray) -> dict[str, float]:
        full = self.full(w)
        return {s: float(full[j]) for j, s in enumerate(self.pool.signals)}

    def record(self, index: int, values: np.ndarray, batch: np.ndarray) -> Generation:
        j = int(np.argmax(values))
        return Generation(
            index=index,
            best=float(values[j]),
            mean=float(np.mean(values)),
            best_so_far=self.best,
            weights=self.weights_dict(batch[j]),
            evaluations=len(self.trace),
            seconds=time.perf_counter() - self.start,
        )

    def result(
        self, method: str, history: list[Generation], config: dict[str, Any], stopped: bool = False
    ) -> TuneResult:
        assert self.best_w is not None
        return TuneResult(
            method=method,
            signals=self.pool.signals,
            weights=self.weights_dict(self.best_w),
            fitness=self.best,
            ndcg=self.pool.ndcg(self.full(self.best_w), user_weights=self.users),
            evaluations=len(self.trace),
            history=history,
            trace=list(self.trace),
            stopped_early=stopped,
            seconds=time.perf_counter() - self.start,
            config=config,
        )

    def close(self) -> None:
        if self._owns_pool:
            self._pool.release()
        self._args_shared.release()


def _normalise(w: np.ndarray) -> np.ndarray:
    w = np.clip(w, 0.0, None)
    total = w.sum(axis=-1, keepdims=True)
    uniform = np.full_like(w, 1.0 / w.shape[-1])
    return np.where(total > 0, w / np.where(total > 0, total, 1.0), uniform)


# -- genetic algorithm ----------------------------------------------------------------------------
def _initial_population(n_signals: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Every signal alone, the uniform blend, then Dirichlet(1) draws (truncated to ``size``)."""
    seeds = [np.eye(n_signals), np.full((1, n_signals), 1.0 / n_signals)] if n_signals > 1 else [np.ones((1, 1))]
    fixed = np.concatenate(seeds)[:size]
    rest = rng.dirichlet(np.ones(n_signals), size=size - len(fixed)) if size > len(fixed) else np.zeros((0, n_signals))
    return np.concatenate([fixed, rest])


def _tournament(fitness: np.ndarray, size: int, rng: np.random.Generator) -> int:
    entrants = rng.choice(fitness.size, size=size, replace=False)
    return int(entrants[np.argmax(fitness[entrants])])


def _child(a: np.ndarray, b: np.ndarray, cfg: GAConfig, rng: np.random.Generator) -> np.ndarray:
    child = a.copy()
    if rng.random() < cfg.crossover_rate:
        mix = rng.uniform(-cfg.blend_alpha, 1.0 + cfg.blend_alpha, size=a.size)
        child = mix * a + (1.0 - mix) * b
    child = np.clip(child, 0.0, None)
    mutate = rng.random(a.size) < cfg.mutation_rate
    if mutate.any():
        floor = 1e-3 / a.size  # lets a zero weight come back
        logw = np.log(np.maximum(child, floor))
        logw[mutate] += rng.normal(0.0, cfg.mutation_scale, size=int(mutate.sum()))
        child = np.exp(logw)
        child[mutate & (rng.random(a.size) < cfg.zero_rate)] = 0.0
    child[child < 1e-6] = 0.0
    return _normalise(child)


def tune_ga(
    pool: CandidatePool,
    signals: Sequence[str] | None = None,
    config: GAConfig | None = None,
    client: Any = None,
) -> TuneResult:
    """Blend weights for ``signals`` (default: every signal of the pool) by a genetic algorithm.

    Each generation's new individuals are evaluated in parallel, one Dask task each
    (``ga-gen-{g}-ind-{i}-<run>``; ``ga-round-{b}-gen-{g}-ind-{i}-<run>`` in bootstrap round b).
    Signals of the pool not in ``signals`` get weight 0. With ``config.bagging`` the result holds
    each round under ``rounds``; its own history is that of round 0. ``client``: the Dask client the
    evaluations run on (required: ClientRequiredError without one).
    """
    cfg = config or GAConfig()
    if cfg.bagging == 0:
        return _run_ga(pool, signals, cfg, client)
    client = require_client(client, "tune_ga")
    start = time.perf_counter()
    shared_pool = SharedValues(client, [pool])
    try:
        rounds = []
        for b in range(cfg.bagging):
            draw = np.random.default_rng([cfg.seed, b]).integers(0, pool.n_users, pool.n_users)
            counts = np.bincount(draw, minlength=pool.n_users).astype(np.float64)
            round_cfg = replace(cfg, seed=cfg.seed + b, bagging=0)
            rounds.append(_run_ga(pool, signals, round_cfg, client, shared_pool, counts, prefix=f"ga-round-{b}-"))
        # The rounds' mean, unless a single signal alone does better on the whole validation pool.
        mean = _normalise(np.mean([[r.weights[s] for s in pool.signals] for r in rounds], axis=0))
        tuned = tuple(signals) if signals else pool.signals
        candidates = [mean] + [np.array([float(s == t) for s in pool.signals]) for t in tuned]
        ev = _Evaluator(pool, None, client, cfg.smoothing, cfg.smoothing_scale, cfg.seed, shared_pool)
        values = ev.evaluate(np.array(candidates), [f"ga-final-candidate-{i}" for i in range(len(candidates))])
        pick = 0 if values[0] >= values[1:].max() else 1 + int(np.argmax(values[1:]))
        chosen = candidates[pick]
        return TuneResult(
            method="ga",
            signals=pool.signals,
            weights={s: float(chosen[j]) for j, s in enumerate(pool.signals)},
            fitness=float(values[pick]),
            ndcg=pool.ndcg(chosen),
            evaluations=sum(r.evaluations for r in rounds) + len(candidates),
            history=rounds[0].history,
            trace=rounds[0].trace,
            stopped_early=all(r.stopped_early for r in rounds),
            seconds=time.perf_counter() - start,
            config=asdict(cfg),
            rounds=rounds,
        )
    finally:
        shared_pool.release()


def _run_ga(
    pool: CandidatePool,
    signals: Sequence[str] | None,
    cfg: GAConfig,
    client: Any,
    shared_pool: SharedValues | None = None,
    users: np.ndarray | None = None,
    prefix: str = "ga-",
) -> TuneResult:
    """One GA run (users weighted by ``users`` when given); task keys start with ``prefix``."""
    rng = np.random.default_rng(cfg.seed)
    ev = _Evaluator(pool, signals, client, cfg.smoothing, cfg.smoothing_scale, cfg.seed, shared_pool, users)
    try:
        n = len(ev.signals)
        population = _initial_population(n, cfg.population, rng)
        fitness = ev.evaluate(population, [f"{prefix}gen-0-ind-{i}" for i in range(len(population))])
        history = [ev.record(0, fitness, population)]
        stale, best, stopped = 0, ev.best, False
        for g in range(1, cfg.generations):
            order = np.argsort(-fitness, kind="stable")
            elite = population[order[: cfg.elite]]
            elite_fit = fitness[order[: cfg.elite]]
            children = np.array([
                _child(population[_tournament(fitness, cfg.tournament, rng)],
                       population[_tournament(fitness, cfg.tournament, rng)], cfg, rng)
                for _ in range(cfg.population - cfg.elite)
            ]).reshape(-1, n)
            child_fit = ev.evaluate(children, [f"{prefix}gen-{g}-ind-{i}" for i in range(cfg.elite, cfg.population)])
            population = np.concatenate([elite, children])
            fitness = np.concatenate([elite_fit, child_fit])
            history.append(ev.record(g, fitness, population))
            if ev.best >= best + cfg.min_improvement:
                best, stale = ev.best, 0
            else:
                stale += 1
                if stale >= cfg.patience:
                    stopped = g + 1 < cfg.generations
                    break
        return ev.result("ga", history, asdict(cfg), stopped)
    finally:
        ev.close()


# -- baselines at an equal budget -------------------------------------------------------------
def simplex_grid(n_signals: int, budget: int) -> np.ndarray:
    """The finest regular grid on the weight simplex with at most ``budget`` points.

    Resolution r gives every w with w_s in {0, 1/r, ..., 1} and sum 1: C(r + S - 1, S - 1) points.
    """
    if n_signals < 1 or budget < 1:
        raise ValueError(f"need n_signals >= 1 and budget >= 1, got {n_signals}, {budget}")
    if n_signals == 1:
        return np.ones((1, 1))
    r = 1
    while math.comb(r + 1 + n_signals - 1, n_signals - 1) <= budget:
        r += 1
    if math.comb(r + n_signals - 1, n_signals - 1) > budget:
        return np.eye(n_signals)[:budget]  # not even the corners fit: as many corners as allowed
    points = [c for c in itertools.product(range(r + 1), repeat=n_signals - 1) if sum(c) <= r]
    grid = np.array([[*c, r - sum(c)] for c in points], dtype=np.float64) / r
    return grid


def _tune_batches(
    method: str, candidates: np.ndarray, ev: _Evaluator, batch: int, config: dict[str, Any]
) -> TuneResult:
    history = []
    for b, start in enumerate(range(0, len(candidates), batch)):
        chunk = candidates[start : start + batch]
        values = ev.evaluate(chunk, [f"{method}-eval-{start + i}" for i in range(len(chunk))])
        history.append(ev.record(b, values, chunk))
    return ev.result(method, history, config)


def tune_grid(
    pool: CandidatePool,
    signals: Sequence[str] | None = None,
    budget: int = 200,
    client: Any = None,
    batch: int = 24,
    smoothing: int = 0,
    smoothing_scale: float = 0.3,
) -> TuneResult:
    """The best point of the finest simplex grid that fits ``budget`` evaluations (smoothing as
    in GAConfig), evaluated on ``client``'s cluster (required: ClientRequiredError without one)."""
    ev = _Evaluator(pool, signals, client, smoothing, smoothing_scale)
    try:
        grid = simplex_grid(len(ev.signals), budget)
        return _tune_batches("grid", grid, ev, batch, {"budget": budget, "points": len(grid)})
    finally:
        ev.close()


def tune_random(
    pool: CandidatePool,
    signals: Sequence[str] | None = None,
    budget: int = 200,
    seed: int = 0,
    client: Any = None,
    batch: int = 24,
    smoothing: int = 0,
    smoothing_scale: float = 0.3,
) -> TuneResult:
    """Random search: the GA's first-generation seeds (each signal alone, uniform), then
    Dirichlet(1) draws (smoothing as in GAConfig), evaluated on ``client``'s cluster (required:
    ClientRequiredError without one)."""
    ev = _Evaluator(pool, signals, client, smoothing, smoothing_scale, seed)
    try:
        draws = _initial_population(len(ev.signals), budget, np.random.default_rng(seed))
        return _tune_batches("random", draws, ev, batch, {"budget": budget, "seed": seed})
    finally:
        ev.close()
