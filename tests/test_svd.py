"""The low-rank item-item signal (models/svd.py): spectrum, fold-in, recency, persistence."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp
from distributed import Client

from etl.dataset import Dataset
from models.base import FactorModel, TrainData, TrainingOptions
from models.svd import SVDConfig, SVDItemItem, recency_weights
from tests.worker_faults import kill_a_worker_during

SMALL = SVDConfig(factors=6, shrinkage=2.0, recency_half_life=3.0, recency_floor=0.1, power_iterations=8)


@pytest.fixture(scope="module")
def fitted(tiny_dataset: Dataset, client) -> SVDItemItem:
    return SVDItemItem(SMALL).fit(TrainData(tiny_dataset, split="train"), TrainingOptions(client=client, seed=0))


def test_spectrum_matches_a_dense_svd(fitted, tiny_dataset):
    x = tiny_dataset.matrix("train", values="ones").toarray()
    counts = np.maximum(x.sum(axis=0), 1.0)
    a = x * counts ** -SMALL.input_exponent
    s = np.linalg.svd(a, compute_uv=False)[: SMALL.factors]
    assert fitted.singular_values_ == pytest.approx(s, rel=1e-3)
    # item vectors = count^gamma V with V orthonormal
    v = fitted.item_factors_ / (counts ** SMALL.output_exponent)[:, None]
    assert v.T @ v == pytest.approx(np.eye(SMALL.factors), abs=1e-3)


def test_score_is_low_rank_ridge_of_the_weighted_history(fitted, tiny_dataset):
    x = tiny_dataset.matrix("train", values="ones").toarray()
    counts = np.maximum(x.sum(axis=0), 1.0)
    a = x * counts ** -SMALL.input_exponent
    _, s, vt = np.linalg.svd(a, full_matrices=False)
    v, s = vt[: SMALL.factors].T, s[: SMALL.factors]
    hist = tiny_dataset.matrix("train", ordered=True)
    u = 3
    items = hist[u].indices  # oldest first
    weighted = np.zeros(x.shape[1])
    weighted[items] = recency_weights(np.arange(items.size)[::-1], SMALL)
    expect = (weighted * counts ** -SMALL.input_exponent) @ v @ np.diag(s**2 / (s**2 + SMALL.shrinkage)) @ v.T
    expect *= counts**SMALL.output_exponent
    got = fitted.score(np.array([u]))[0]
    assert np.corrcoef(got, expect)[0, 1] > 0.9999  # equal up to the signs of singular vectors
    assert got == pytest.approx(expect, abs=1e-3)


def test_fold_in_of_a_history_equals_the_fitted_user(fitted, tiny_dataset):
    hist = tiny_dataset.matrix("train", ordered=True)
    for u in (0, 7, 31):
        items = hist[u].indices
        assert fitted.fold_in(items) == pytest.approx(fitted.user_factors_[u], abs=1e-5)
    # Order matters (recency): the reversed history gives another vector.
    items = hist[7].indices
    assert not np.allclose(fitted.fold_in(items[::-1]), fitted.user_factors_[7], atol=1e-4)
    # A repeated item counts once, at its newest position.
    assert fitted.fold_in(np.r_[items[-1], items]) == pytest.approx(fitted.fold_in(items), abs=1e-6)
    assert not fitted.fold_in(np.r_[items, items[0]]) == pytest.approx(fitted.fold_in(items), abs=1e-6)
    assert (fitted.fold_in(np.array([], dtype=int)) == 0).all()
    with pytest.raises(ValueError, match="out of range"):
        fitted.fold_in(np.array([10_000]))


def test_recency_weights():
    cfg = SVDConfig(recency_half_life=2.0, recency_floor=0.2)
    w = recency_weights(np.array([0, 2, 4, 1000]), cfg)
    assert w == pytest.approx([1.0, 0.6, 0.4, 0.2])
    assert (recency_weights(np.arange(5), replace(cfg, recency_half_life=None)) == 1).all()


def test_fit_does_not_depend_on_the_number_of_blocks(tiny_dataset, client):
    data = TrainData(tiny_dataset, split="train")
    one = SVDItemItem(replace(SMALL, n_blocks=1)).fit(data, TrainingOptions(client=client))
    many = SVDItemItem(replace(SMALL, n_blocks=5)).fit(data, TrainingOptions(client=client))
    assert one.item_factors_ == pytest.approx(many.item_factors_, abs=1e-4)
    assert one.user_factors_ == pytest.approx(many.user_factors_, abs=1e-4)


def test_save_and_load_round_trip(fitted, tmp_path):
    fitted.save(tmp_path / "svd")
    loaded = FactorModel.load(tmp_path / "svd")
    assert isinstance(loaded, SVDItemItem) and loaded.config == fitted.config
    assert (loaded.item_factors_ == fitted.item_factors_).all()
    items = np.array([1, 5, 9])
    assert loaded.fold_in(items) == pytest.approx(fitted.fold_in(items))


def test_more_factors_than_items_are_capped(tiny_dataset, client):
    model = SVDItemItem(replace(SMALL, factors=500)).fit(TrainData(tiny_dataset, split="fit"), TrainingOptions(client=client))
    assert model.dim == tiny_dataset.n_items
    assert np.isfinite(model.user_factors_).all()
    assert sp.issparse(model.seen_)


@pytest.mark.parametrize(("field", "value"), [("factors", 0), ("shrinkage", -1.0), ("recency_half_life", 0.0),
                                              ("recency_floor", 1.5), ("n_blocks", 0), ("oversample", -1)])
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        SVDConfig(**{field: value})


@pytest.mark.slow
def test_spectrum_survives_a_killed_worker(process_client: Client) -> None:
    """A worker killed between passes takes its scattered user blocks with it: the pass is
    submitted again on blocks scattered afresh, and the spectrum is the same."""
    rng = np.random.default_rng(0)
    n_users, n_items, nnz = 20_000, 3_000, 400_000
    a = sp.csr_matrix((np.ones(nnz), (rng.integers(0, n_users, nnz), (rng.pareto(1.0, nnz) * 40).astype(np.int64)
                                      % n_items)), shape=(n_users, n_items))
    a.data[:] = 1.0
    cfg = replace(SMALL, factors=32, power_iterations=12, n_blocks=4)
    options = TrainingOptions(client=process_client, seed=1)
    reference = SVDItemItem(cfg)._top_spectrum(a, options)
    spectrum, killed_mid_fit = kill_a_worker_during(
        process_client, lambda: SVDItemItem(cfg)._top_spectrum(a, options),
        started=lambda: any("-pass-2-" in str(k) for keys in process_client.processing().values() for k in keys))
    assert killed_mid_fit
    (vectors, sigma), (ref_vectors, ref_sigma) = spectrum, reference
    np.testing.assert_allclose(sigma, ref_sigma, rtol=1e-6)
    np.testing.assert_allclose(np.abs(vectors.T @ ref_vectors).diagonal(), 1.0, atol=1e-5)
