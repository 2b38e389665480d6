"""The training pipeline: tune on validation, refit on train, evaluate on test, publish."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass

import numpy as np
import pytest

from etl.dataset import Dataset
from etl.metrics import evaluate
from hybrid.fusion import Fusion
from hybrid.index import FusedIndex
from training.pipeline import (
    PipelineConfig,
    default_config,
    evaluate_fusion,
    fit_signals,
    fused_scorer,
    refit_plan,
    refit_signals,
    run_pipeline,
    tune,
)
from training.tuner import GAConfig
from models.base import FactorModel, TrainData, TrainingOptions, register
from models.popularity import Popularity

SMALL_GA = GAConfig(population=8, generations=4, patience=4, seed=0)
TINY_CONFIGS = {
    "als": {"factors": 8, "iterations": 5},
    "lightgcn": {"embedding_dim": 8, "num_layers": 2, "epochs": 20, "eval_every": 5, "patience": 2, "learning_rate": 0.01},
    "svd": {"factors": 8, "shrinkage": 1.0},
    "content": {"dim": 4},
}


@pytest.fixture(scope="module")
def options(client):
    return TrainingOptions(client=client, device="cpu", seed=0)


@pytest.fixture(scope="module")
def tiny_result(tiny_dataset, options, tmp_path_factory):
    root = tmp_path_factory.mktemp("bundles")
    config = PipelineConfig(
        signals=("als", "content", "lightgcn", "popularity", "svd"),
        configs=TINY_CONFIGS,
        per_signal=20,
        ga=SMALL_GA,
        verbose=False,
    )
    return run_pipeline(tiny_dataset, config, options, bundle_root=root, plot=root / "ga.png"), root


def test_pipeline_reports_every_signal_and_the_hybrid(tiny_result, tiny_dataset):
    result, _ = tiny_result
    assert result.signals == ("als", "content", "lightgcn", "popularity", "svd")
    assert set(result.test) == {*result.signals, "hybrid"}
    assert set(result.validation) == {*result.signals, "hybrid"}
    assert sum(result.weights.values()) == pytest.approx(1.0)
    assert all(w >= 0 for w in result.weights.values())
    assert all(np.isfinite(c) and c > 0 for c in result.scales.values())
    assert result.scales == result.tuning_scales == result.fusion.scales  # the weights' units carry over
    assert len(result.tuning.rounds) == SMALL_GA.bagging
    assert result.tuning.history and result.tuning.evaluations <= SMALL_GA.max_evaluations + 1 + len(result.signals)
    # The GA starts from each signal alone (whose smoothed fitness is its plain NDCG), so its
    # objective on validation is never below any single signal's.
    assert result.tuning.fitness >= max(result.validation[s] for s in result.signals)
    assert result.validation["hybrid"] == pytest.approx(result.tuning.ndcg)
    # The hybrid's test figures are etl.metrics.evaluate of the fused scorer of the refit models.
    train, test = tiny_dataset.matrix("train"), tiny_dataset.matrix("test")
    again = evaluate(fused_scorer(result.fusion, result.weights), train, test)
    assert again["ndcg@10"] == pytest.approx(result.test["hybrid"]["ndcg@10"])
    for s in result.signals:
        assert result.test[s]["ndcg@10"] == pytest.approx(evaluate(result.fusion.models[s].score, train, test)["ndcg@10"])
    assert "hybrid" in result.table()
    json.dumps(result.summary())


def test_final_signals_are_refit_on_train(tiny_result, tiny_dataset):
    result, _ = tiny_result
    train = tiny_dataset.matrix("train")
    for s, model in result.fusion.models.items():
        assert model.seen_.nnz == train.nnz, s
    lightgcn = result.fusion.models["lightgcn"]
    assert result.params["lightgcn"]["epochs"] == lightgcn.config.epochs <= TINY_CONFIGS["lightgcn"]["epochs"]
    assert lightgcn.best_epoch_ is None  # no validation in the final fit
    assert result.params["als"]["factors"] == 8


def test_pipeline_publishes_a_loadable_bundle(tiny_result):
    from hybrid.bundle import load

    result, root = tiny_result
    assert result.bundle is not None and result.bundle.parent == root
    bundle = load(result.bundle)
    assert bundle.weights == pytest.approx(result.weights)
    assert bundle.fusion.signals == result.fusion.signals
    assert bundle.fusion.scales == pytest.approx(result.scales)
    assert (root / "ga.png").read_bytes()[:4] == b"\x89PNG"


def test_tuning_never_reads_the_test_split(tiny_dataset, options, tmp_path):
    """Tuning runs on a copy of the dataset without its test split (a read of it would raise)."""
    shutil.copytree(tiny_dataset.path, tmp_path / "dataset")
    shutil.rmtree(tmp_path / "dataset" / "interactions" / "test")
    ds = Dataset.open(tmp_path / "dataset")
    with pytest.raises(FileNotFoundError):
        ds.read("test")
    config = PipelineConfig(
        signals=("als", "popularity", "svd", "content"),
        configs={k: v for k, v in TINY_CONFIGS.items() if k != "lightgcn"},
        per_signal=20, ga=SMALL_GA, verbose=False,
    )
    outcome = tune(ds, config, options)
    assert set(outcome.validation) == {"als", "popularity", "svd", "content", "hybrid"}
    # Each signal's validation NDCG from the pool equals its full-ranking figure.
    fit, val = ds.matrix("fit"), ds.matrix("validation")
    for s, model in outcome.models.items():
        assert outcome.validation[s] == pytest.approx(evaluate(model.score, fit, val)["ndcg@10"], abs=1e-12)


def test_search_keeps_the_best_validation_config(tiny_dataset, options):
    config = PipelineConfig(
        signals=("popularity", "svd"), search={"svd": [{"factors": 2}, {"factors": 8, "shrinkage": 1.0}]},
        per_signal=20, ga=SMALL_GA, verbose=False,
    )
    outcome = tune(tiny_dataset, config, options)
    report = outcome.search["svd"]
    assert [r["config"]["factors"] for r in report] == [2, 8]
    best = max(report, key=lambda r: r["validation_ndcg@10"])
    assert outcome.models["svd"].config.factors == best["config"]["factors"]
    assert outcome.validation["svd"] == pytest.approx(best["validation_ndcg@10"], abs=1e-12)


def test_evaluate_fusion_on_a_user_sample(tiny_dataset, options):
    data = TrainData(tiny_dataset, split="train")
    fusion = Fusion({"popularity": Popularity().fit(data, options)}, {"popularity": 1.0})
    full = evaluate_fusion(fusion, {"popularity": 1.0}, tiny_dataset)
    part = evaluate_fusion(fusion, {"popularity": 1.0}, tiny_dataset, max_users=10, signals=False)
    assert full["hybrid"]["ndcg@10"] == pytest.approx(full["popularity"]["ndcg@10"])
    assert part["hybrid"]["users"] == 10 < full["hybrid"]["users"]


def test_concurrent_fits_equal_one_at_a_time(tiny_dataset, options):
    """Signals fit side by side (one client thread each) give the models fit one after another:
    every fit is seeded and its tasks' results do not depend on where or when they ran."""
    data = TrainData(tiny_dataset, split="fit", validation="validation")
    configs = {s: PipelineConfig(configs=TINY_CONFIGS).config_for(s) for s in ("als", "content", "lightgcn", "svd")}
    apart, _ = fit_signals(data, configs, options, concurrency=1)
    together, seconds = fit_signals(data, configs, options, concurrency=4)
    assert list(together) == list(configs) == list(seconds)
    for kind, model in apart.items():
        np.testing.assert_array_equal(together[kind].item_factors_, model.item_factors_, err_msg=kind)
        np.testing.assert_array_equal(together[kind].user_factors_, model.user_factors_, err_msg=kind)


@dataclass(frozen=True)
class _NoConfig:
    pass


def _worker_failure() -> None:
    raise RuntimeError("the worker's task failed")


@register
class FailsOnWorker(FactorModel):
    """A signal whose fit submits a task that raises on a worker."""

    kind = "test-fails-on-worker"
    Config = _NoConfig

    def _fit(self, data: TrainData, options: TrainingOptions) -> None:
        options.client.submit(_worker_failure, pure=False).result()

    def fold_in(self, items: np.ndarray, values: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError


def test_a_failing_fit_is_raised_once_the_running_fits_end(tiny_dataset, options):
    data = TrainData(tiny_dataset, split="fit", validation="validation")
    ended: list[str] = []

    def record(kind, model, seconds):
        ended.append(kind)

    configs = {"test-fails-on-worker": _NoConfig(), "svd": PipelineConfig(configs=TINY_CONFIGS).config_for("svd")}
    with pytest.raises(RuntimeError, match="the worker's task failed"):
        fit_signals(data, configs, options, concurrency=2, on_fit=record)
    assert ended == ["svd"]  # the fit running beside the failure finished (and was handed on)


def test_bad_configs_and_concurrency_fail_before_any_fit(tiny_dataset, options):
    data = TrainData(tiny_dataset, split="fit", validation="validation")
    ended: list[str] = []
    configs = {"popularity": default_config("popularity"), "lightgcn": TINY_CONFIGS["lightgcn"]}
    with pytest.raises(TypeError, match="lightgcn: config must be a LightGCNConfig, got dict"):
        fit_signals(data, configs, options, concurrency=2, on_fit=lambda kind, *_: ended.append(kind))
    assert ended == []
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="concurrency"):
            fit_signals(data, {"popularity": default_config("popularity")}, options, concurrency=bad)


def test_a_fold_in_refit_keeps_tunings_item_side(tiny_dataset, options):
    """refit 'fold_in': each final model is the model fit on 'fit' with every user folded in from
    its 'train' history; popularity (a count, cheaper to fit than to fold in) is fit again."""
    kinds = ("als", "lightgcn", "popularity", "svd")
    config = PipelineConfig(signals=kinds, configs={s: c for s, c in TINY_CONFIGS.items() if s in kinds})
    data = TrainData(tiny_dataset, split="fit", validation="validation")
    tuned, _ = fit_signals(data, {s: config.config_for(s) for s in kinds}, options)
    final, seconds = refit_signals(tiny_dataset, tuned, options, refit="fold_in")
    assert list(final) == list(seconds) == list(kinds)
    train, histories = tiny_dataset.matrix("train"), tiny_dataset.matrix("train", ordered=True)
    for s, model in final.items():
        assert model.split_ == "train" and model.seen_.nnz == train.nnz and seconds[s] >= 0, s
        assert tuned[s].split_ == "fit"
    for s in ("als", "lightgcn", "svd"):
        assert final[s].item_factors_ is tuned[s].item_factors_
        np.testing.assert_allclose(final[s].user_factors_, tuned[s].fold_in_histories(histories), rtol=1e-6)
    counts = np.asarray((train > 0).sum(axis=0)).ravel()
    np.testing.assert_allclose(final["popularity"].item_factors_[:, 0], np.log1p(counts), rtol=1e-6)
    assert refit_plan("fold_in", tiny_dataset, kinds) == {"als": "fold_in", "lightgcn": "fold_in",
                                                          "popularity": "fit", "svd": "fold_in"}
    # 'auto' folds in only from REFOLD_MIN_INTERACTIONS 'train' interactions on: the tiny data is fit again
    assert set(refit_plan("auto", tiny_dataset, kinds).values()) == {"fit"}
    with pytest.raises(ValueError, match="refit must be one of"):
        refit_plan("sometimes", tiny_dataset, kinds)


def test_config_validation():
    with pytest.raises(ValueError, match="PipelineConfig.refit"):
        PipelineConfig(refit="fold-in")
    with pytest.raises(ValueError, match="not among signals"):
        PipelineConfig(signals=("als",), configs={"svd": {}})
    with pytest.raises(ValueError, match="repeats"):
        PipelineConfig(signals=("als", "als"))
    with pytest.raises(ValueError, match="per_signal"):
        PipelineConfig(per_signal=5)
    with pytest.raises(ValueError, match="unknown config field"):
        PipelineConfig(signals=("svd",), configs={"svd": {"factorz": 3}}).config_for("svd")
    with pytest.raises(ValueError, match="unknown model kind"):
        default_config("nope")


@pytest.mark.realdata
@pytest.mark.slow
def test_tuned_hybrid_beats_the_reference_table_on_ml_small(ml_small, options):
    """The tuned hybrid beats every row of DESIGN.md's table (EASE's 0.1303 the best) and each
    of its own signals, on the protocol's test split, with every choice made on validation."""
    result = run_pipeline(ml_small, PipelineConfig(), options)
    print("\n" + result.table())
    hybrid = result.test["hybrid"]["ndcg@10"]
    assert result.test["hybrid"]["users"] == 610
    assert hybrid >= 0.135  # the target; EASE's 0.1303 is the best reference row
    # signals' own targets (they are fit here anyway): LightGCN refit with its validated epochs,
    # ALS at least implicit's 0.1081 at the reference settings, content above popularity
    assert result.test["lightgcn"]["ndcg@10"] >= 0.115
    assert result.test["als"]["ndcg@10"] > 0.1081
    assert result.test["content"]["ndcg@10"] > result.test["popularity"]["ndcg@10"]
    # 0.1649 against 0.1510 for 'svd', the best signal alone (the sequential signal made the
    # difference: before it, no blend of the others beat svd on test, bench/blend_headroom.py)
    behind = {s: result.test[s]["ndcg@10"] for s in result.signals if result.test[s]["ndcg@10"] >= hybrid}
    assert not behind, f"tuned hybrid {hybrid:.4f} does not beat its own signal(s) {behind} on test"

    # The index serves these fused vectors: HNSW's top-10 for the tuned query against brute force.
    fusion, seen = result.fusion, ml_small.matrix("train")
    vectors = fusion.item_vectors()
    index = FusedIndex.build(vectors)
    users = np.arange(ml_small.n_users)
    query = fusion.query(fusion.user_parts(users), result.weights)
    rows, _ = index.search(query, 10, exclude=seen)
    scores = query @ vectors.T
    scores[seen.nonzero()] = -np.inf
    reference = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    recall = np.mean([len(set(rows[u]) & set(reference[u])) / 10 for u in users])
    print(f"HNSW recall@10 for the tuned query over {vectors.shape[1]}-dimensional fused vectors: {recall:.4f}")
    assert recall >= 0.99 and index.stats["hnsw"] >= len(users)
