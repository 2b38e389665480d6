"""Candidate pools and blend-weight tuners (GA, grid, random) on a real in-process Dask cluster."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import pytest
import scipy.sparse as sp
from distributed import get_task_stream

from etl.errors import ClientRequiredError
from etl.metrics import evaluate, top_k
from etl.topk import topk
from training.candidates import CandidatePool, build_pool, ndcg_at_k
from hybrid.fusion import Fusion
from training.tuner import GAConfig, simplex_grid, tune_ga, tune_grid, tune_random
from models.base import FactorModel, TrainData, TrainingOptions
from models.popularity import Popularity


# -- synthetic pools --------------------------------------------------------------------------
def synthetic_pool(
    true_weights: tuple[float, ...], users: int = 300, width: int = 40, relevant: int = 3, seed: int = 0
) -> CandidatePool:
    """A pool whose labels are each user's top-``relevant`` items under a hidden blend."""
    rng = np.random.default_rng(seed)
    s = len(true_weights)
    scores = rng.standard_normal((s, users, width)).astype(np.float32)
    truth = np.tensordot(np.asarray(true_weights, dtype=np.float32), scores, axes=1)
    labels = np.zeros((users, width), dtype=bool)
    np.put_along_axis(labels, np.argsort(-truth, axis=1)[:, :relevant], True, axis=1)
    return CandidatePool(
        signals=tuple(f"s{j}" for j in range(s)),
        users=np.arange(users),
        items=np.tile(np.arange(width), (users, 1)),
        scores=scores,
        labels=labels,
        n_relevant=np.full(users, relevant),
        scales={f"s{j}": 1.0 for j in range(s)},
        per_signal=width,
    )


def test_pool_ndcg_is_one_for_the_hidden_blend_and_lower_for_a_corner():
    pool = synthetic_pool((0.6, 0.3, 0.1))
    assert pool.ndcg([0.6, 0.3, 0.1]) == pytest.approx(1.0)
    assert pool.ndcg({"s0": 2.0, "s1": 1.0, "s2": 1 / 3}) == pytest.approx(1.0)  # scale-free
    assert pool.ndcg({"s0": 1.0}) < 0.95
    with pytest.raises(ValueError, match="unknown signal"):
        pool.ndcg({"als": 1.0})
    with pytest.raises(ValueError, match=">= 0"):
        pool.ndcg([1.0, -0.1, 0.0])


@pytest.mark.parametrize("levels", [None, 3])
def test_fast_ndcg_equals_the_sorted_reference(levels):
    """The fitness avoids sorting; it must agree with a plain top-k, ties and padding included."""
    rng = np.random.default_rng(5)
    s, u, p = 3, 3000, 60  # > one block of rows
    scores = rng.standard_normal((s, u, p)) if levels is None else rng.integers(0, levels, (s, u, p))
    items = np.tile(np.arange(p), (u, 1))
    items[rng.random(u) < 0.1, 52:] = -1  # some short pools
    labels = (rng.random((u, p)) < 0.1) & (items >= 0)
    labels[:, 0] |= ~labels.any(axis=1)
    pool = CandidatePool(signals=("a", "b", "c"), users=np.arange(u), items=items,
                         scores=np.where(items >= 0, scores, 0).astype(np.float32), labels=labels,
                         n_relevant=labels.sum(axis=1) + rng.integers(0, 3, u), scales={"a": 1.0, "b": 1.0, "c": 1.0})
    for w in ([1, 0, 0], [0.2, 0.5, 0.3], [0.0, 1.0, 1.0], rng.dirichlet(np.ones(3))):
        reference = ndcg_at_k(topk(pool.blend(w), 10)[0], labels, pool.n_relevant, 10)
        assert pool.ndcg(w) == pytest.approx(reference, abs=1e-12)


def test_ga_finds_the_hidden_weights(client):
    truth = np.array([0.6, 0.3, 0.1])
    pool = synthetic_pool(tuple(truth))
    corner = max(pool.ndcg(np.eye(3)[j]) for j in range(3))
    result = tune_ga(pool, config=GAConfig(population=16, generations=25, seed=1, patience=25, bagging=0), client=client)
    w = np.array([result.weights[s] for s in pool.signals])
    assert w.sum() == pytest.approx(1.0)
    assert result.fitness > corner + 0.05
    assert result.fitness > 0.97
    assert np.abs(w - truth).max() < 0.08, w
    assert result.fitness == pytest.approx(pool.ndcg(w))
    assert [g.index for g in result.history] == list(range(len(result.history)))
    assert all(a.best_so_far <= b.best_so_far for a, b in zip(result.history, result.history[1:]))
    assert result.evaluations == len(result.trace) <= GAConfig(population=16, generations=25, bagging=0).max_evaluations


def test_ga_is_deterministic_for_a_seed(client):
    pool = synthetic_pool((0.5, 0.2, 0.2, 0.1), users=120, seed=3)
    for bagging in (0, 2):
        cfg = GAConfig(population=10, generations=6, seed=7, patience=6, bagging=bagging)
        a, b = tune_ga(pool, config=cfg, client=client), tune_ga(pool, config=cfg, client=client)
        assert a.weights == b.weights and a.trace == b.trace
        assert [g.mean for g in a.history] == [g.mean for g in b.history]
        c = tune_ga(pool, config=replace(cfg, seed=8), client=client)
        assert c.trace != a.trace


def test_ga_stops_early_when_nothing_improves(client):
    base = synthetic_pool((1.0,), users=50)
    # Two copies of one signal: every blend ranks the same, so fitness never moves.
    pool = CandidatePool(
        signals=("a", "b"), users=base.users, items=base.items, scores=np.concatenate([base.scores, base.scores]),
        labels=base.labels, n_relevant=base.n_relevant, scales={"a": 1.0, "b": 1.0}, per_signal=base.per_signal,
    )
    result = tune_ga(pool, config=GAConfig(population=6, generations=50, patience=3, seed=0, bagging=0), client=client)
    assert result.stopped_early
    assert len(result.history) == 4  # generation 0, then 3 without improvement
    assert result.fitness == pytest.approx(1.0)


def test_ga_tunes_a_subset_of_signals(client):
    pool = synthetic_pool((0.7, 0.3, 0.0), users=100)
    result = tune_ga(pool, signals=("s1", "s2"), config=GAConfig(population=8, generations=3, bagging=2), client=client)
    assert result.weights["s0"] == 0.0
    assert result.weights["s1"] + result.weights["s2"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="not in the pool"):
        tune_ga(pool, signals=("als",), client=client)


def test_tuners_need_a_client():
    """No hidden cluster: a tuner given no client says so before any work."""
    pool = synthetic_pool((0.6, 0.4), users=20)
    for tune in (tune_ga, tune_grid, tune_random):
        with pytest.raises(ClientRequiredError, match="client"):
            tune(pool)


def test_grid_and_random_respect_the_budget(client):
    pool = synthetic_pool((0.6, 0.3, 0.1), users=150)
    grid = tune_grid(pool, budget=30, client=client)
    rand = tune_random(pool, budget=30, seed=0, client=client)
    # Resolution 6 on the 3-simplex: C(8, 2) = 28 <= 30 < C(9, 2) = 36 points.
    assert grid.evaluations == 28 == len(simplex_grid(3, 30))
    assert rand.evaluations == 30
    for r in (grid, rand):
        assert sum(r.weights.values()) == pytest.approx(1.0)
        assert r.fitness == pytest.approx(pool.ndcg(r.weights))
        assert r.fitness == max(r.trace) == r.best_after(10_000)
    # The grid holds (0.5, 0.333, 0.167); its best cannot be worse than that point.
    assert grid.fitness >= pool.ndcg([3 / 6, 2 / 6, 1 / 6])
    assert np.allclose(simplex_grid(3, 30).sum(axis=1), 1.0)
    assert len(simplex_grid(5, 3)) == 3  # not even the 5 corners fit


def test_tasks_are_named_per_generation_and_individual(client):
    pool = synthetic_pool((0.5, 0.5), users=40)
    with get_task_stream(client) as ts:
        tune_ga(pool, config=GAConfig(population=4, generations=2, elite=1, patience=5, bagging=0), client=client)
    keys = {str(t["key"]) for t in ts.data}
    assert any(k.startswith("ga-gen-0-ind-0-") for k in keys), keys
    assert any(k.startswith("ga-gen-1-ind-3-") for k in keys), keys
    assert not any(k.startswith("ga-gen-1-ind-0-") for k in keys)  # the elite is not re-evaluated
    with get_task_stream(client) as ts:
        tune_ga(pool, config=GAConfig(population=4, generations=2, elite=1, patience=5, bagging=2), client=client)
    keys = {str(t["key"]) for t in ts.data}
    assert any(k.startswith("ga-round-1-gen-1-ind-3-") for k in keys), keys
    assert any(k.startswith("ga-final-candidate-0-") for k in keys), keys


def test_bagging_averages_the_bootstrap_rounds(client):
    pool = synthetic_pool((0.6, 0.3, 0.1), users=200, seed=4)
    cfg = GAConfig(population=12, generations=10, patience=10, seed=2, bagging=3)
    result = tune_ga(pool, config=cfg, client=client)
    assert len(result.rounds) == 3
    # Each round saw another resample of users, so they disagree a little.
    assert len({tuple(r.weights.values()) for r in result.rounds}) == 3
    singles = [pool.ndcg(np.eye(3)[j]) for j in range(3)]
    assert result.fitness >= max(singles)
    mean = np.mean([[r.weights[s] for s in pool.signals] for r in result.rounds], axis=0)
    if result.fitness > max(singles):  # the mean won, as expected here
        assert [result.weights[s] for s in pool.signals] == pytest.approx(mean / mean.sum())
    assert result.ndcg == pytest.approx(pool.ndcg(result.weights))
    assert result.evaluations == sum(r.evaluations for r in result.rounds) + 4
    assert result.summary()["rounds"][2]["weights"] == result.rounds[2].weights


def test_plot_writes_a_png(client, tmp_path):
    pool = synthetic_pool((0.5, 0.5), users=40)
    result = tune_ga(pool, config=GAConfig(population=4, generations=3), client=client)
    out = result.plot(tmp_path / "ga.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = result.summary()
    assert summary["generations"] == len(result.history) and summary["weights"] == result.weights


def test_config_validation():
    with pytest.raises(ValueError, match="elite"):
        GAConfig(population=4, elite=4)
    with pytest.raises(ValueError, match="tournament"):
        GAConfig(population=4, tournament=5)
    with pytest.raises(ValueError, match="mutation_rate"):
        GAConfig(mutation_rate=1.5)
    assert GAConfig(population=10, generations=3, elite=2, bagging=0).max_evaluations == 26
    assert GAConfig(population=10, generations=3, elite=2, bagging=2).max_evaluations == 52
    with pytest.raises(ValueError, match="bagging"):
        GAConfig(bagging=-1)


# -- pools built from fitted signals ----------------------------------------------------------
@dataclass
class _NoConfig:
    dim: int = 4


class RandomFactors(FactorModel):
    """Seeded Gaussian factors: continuous scores without learning anything."""

    kind = "test-random-factors"
    Config = _NoConfig

    def _fit(self, data: TrainData, options: TrainingOptions) -> None:
        rng = np.random.default_rng(options.seed)
        self.user_factors_ = rng.standard_normal((len(self.users_), self.config.dim)).astype(np.float32)
        self.item_factors_ = rng.standard_normal((len(self.items_), self.config.dim)).astype(np.float32)

    def fold_in(self, items: np.ndarray, values: np.ndarray | None = None) -> np.ndarray:
        return np.zeros(self.config.dim, dtype=np.float32)


@pytest.fixture(scope="module")
def fitted(tiny_dataset, client):
    data = TrainData(tiny_dataset, split="fit", validation="validation")
    models = {
        "popularity": Popularity().fit(data),
        "random": RandomFactors().fit(data, TrainingOptions(client=client, seed=3)),
    }
    fusion = Fusion.fit_scales(models, data.matrix("validation"))
    return data, models, fusion


@pytest.mark.parametrize(
    "weights",
    [{"popularity": 1.0}, {"random": 1.0}, {"popularity": 0.7, "random": 0.3}, {"popularity": 0.2, "random": 0.8}],
)
def test_pool_over_the_whole_catalogue_equals_full_ranking(fitted, client, weights):
    data, models, fusion = fitted
    fit, val = data.matrix(), data.matrix("validation")
    pool = build_pool(models, fusion.scales, fit, val, per_signal=fit.shape[1], block_users=7, client=client)
    items = fusion.item_vectors()
    parts = fusion.user_parts(np.arange(fit.shape[0]))

    def fused(rows):
        return fusion.query({s: p[rows] for s, p in parts.items()}, weights) @ items.T

    full = evaluate(fused, fit, val)
    assert pool.n_users == full["users"]
    assert pool.coverage() == pytest.approx(1.0)
    assert pool.ndcg(weights) == pytest.approx(full["ndcg@10"], abs=1e-12)
    assert (pool.top_k(weights) == top_k(fused, pool.users, fit)).all()


def test_pool_top_k_matches_full_ranking_where_it_lies_in_the_pool(fitted, client):
    data, models, fusion = fitted
    fit, val = data.matrix(), data.matrix("validation")
    pool = build_pool(models, fusion.scales, fit, val, per_signal=10, client=client)
    assert pool.width < fit.shape[1]
    assert not np.isin(pool.items, fit[pool.users].indices).all()  # sanity: pools are not all seen
    for r, u in enumerate(pool.users):  # fit items never enter a pool
        assert not set(pool.items[r][pool.items[r] >= 0]) & set(fit[u].indices)
    weights = {"popularity": 0.4, "random": 0.6}
    items = fusion.item_vectors()
    parts = fusion.user_parts(np.arange(fit.shape[0]))
    full = top_k(lambda rows: fusion.query({s: p[rows] for s, p in parts.items()}, weights) @ items.T, pool.users, fit)
    inside = np.array([np.isin(full[r], pool.items[r]).all() for r in range(pool.n_users)])
    assert inside.any()
    assert (pool.top_k(weights)[inside] == full[inside]).all()
    # The scores stored are the normalised per-signal scores.
    r, c = 0, 0
    item = pool.items[r, c]
    for j, s in enumerate(pool.signals):
        expect = fusion.scales[s] * models[s].user_factors_[pool.users[r]] @ models[s].item_factors_[item]
        assert pool.scores[j, r, c] == pytest.approx(expect, rel=1e-5)


def test_build_pool_samples_users_and_rejects_bad_input(fitted, client):
    data, models, fusion = fitted
    fit, val = data.matrix(), data.matrix("validation")
    pool = build_pool(models, fusion.scales, fit, val, per_signal=12, max_users=5, seed=1, client=client)
    assert pool.n_users == 5 and (np.diff(pool.users) > 0).all()
    assert (pool.n_relevant == np.diff(val.indptr)[pool.users]).all()
    with pytest.raises(ValueError, match="per_signal"):
        build_pool(models, fusion.scales, fit, val, per_signal=5, client=client)
    with pytest.raises(ValueError, match="scale"):
        build_pool(models, {"popularity": 1.0}, fit, val, client=client)
    with pytest.raises(ValueError, match="no validation users"):
        build_pool(models, fusion.scales, fit, sp.csr_matrix(val.shape), client=client)
    assert math.isclose(sum(pool.scales.values()), sum(fusion.scales.values()))


def test_bagged_rounds_with_a_large_pool(client):
    """Bootstrap weights of 20,000 users travel as scattered data: passed inline, the array
    became a task keyed 'users' that the second round's tasks collided with."""
    pool = synthetic_pool((0.6, 0.4), users=20_000, width=8, seed=5)
    result = tune_ga(pool, config=GAConfig(population=4, generations=2, elite=1, tournament=2, bagging=2, seed=0),
                     client=client)
    assert len(result.rounds) == 2
    assert sum(result.weights.values()) == pytest.approx(1.0)
