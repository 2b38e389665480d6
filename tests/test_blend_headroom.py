"""bench/blend_headroom.py: every weight vector scored on validation and test, oracle apart."""

from __future__ import annotations

import numpy as np
from distributed import Client

from bench.blend_headroom import headroom, weight_vectors
from etl.dataset import Dataset
from etl.metrics import evaluate
from models.base import TrainData, TrainingOptions
from models.popularity import Popularity, PopularityConfig
from models.svd import SVDConfig, SVDItemItem


def test_weight_vectors_start_with_each_signal_alone_and_sum_to_one() -> None:
    w = weight_vectors(("a", "b", "c"), samples=20, seed=1)
    assert w.shape == (23, 3)
    np.testing.assert_array_equal(w[:3], np.eye(3))
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-6)
    assert (w >= 0).all()
    assert not np.allclose(w[3:], weight_vectors(("a", "b", "c"), samples=20, seed=2)[3:])


def test_headroom_scores_single_signals_as_the_protocol_does(tiny_dataset: Dataset, client: Client) -> None:
    options = TrainingOptions(client=client)

    def fit(split: str) -> dict:
        data = TrainData(tiny_dataset, split)
        return {"popularity": Popularity(PopularityConfig()).fit(data, options),
                "svd": SVDItemItem(SVDConfig(factors=8)).fit(data, options)}

    fit_models, train_models = fit("fit"), fit("train")
    result = headroom(tiny_dataset, fit_models, train_models, samples=30, seed=0)
    for kind, models, split, seen in (("svd", fit_models, "validation", "fit"), ("popularity", train_models, "test", "train")):
        expected = evaluate(models[kind].score, tiny_dataset.matrix(seen), tiny_dataset.matrix(split))["ndcg@10"]
        assert abs(result["single"][kind][split] - expected) < 1e-9
    best_single = max(r["test"] for r in result["single"].values())
    assert result["best_on_test"]["test"] >= best_single
    assert abs(result["test_headroom"] - (result["best_on_test"]["test"] - best_single)) < 1e-12
    assert result["best_on_validation"]["validation"] >= max(r["validation"] for r in result["single"].values())
    assert set(result["best_on_test"]["weights"]) == {"popularity", "svd"}
