"""Tests of the LightGCN signal (models.lightgcn) and its trainer, on a real in-process Dask cluster."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from distributed import Client

from etl.dataset import Dataset
from etl.metrics import evaluate
from models.base import FactorModel, TrainData, TrainingOptions
from models.lightgcn import LightGCN, LightGCNConfig

SMALL = LightGCNConfig(embedding_dim=16, num_layers=2, learning_rate=0.01, batch_size=64, epochs=30, eval_every=5, patience=3)


@pytest.fixture(scope="module")
def fitted(tiny_dataset: Dataset, client: Client) -> LightGCN:
    return LightGCN(SMALL).fit(TrainData(tiny_dataset), TrainingOptions(client=client, device="cpu", seed=1))


def test_fit_gives_finite_factors_of_the_configured_size(fitted: LightGCN, tiny_dataset: Dataset) -> None:
    assert fitted.user_factors_.shape == (tiny_dataset.n_users, 16)
    assert fitted.item_factors_.shape == (tiny_dataset.n_items, 16)
    assert fitted.user_factors_.dtype == fitted.item_factors_.dtype == np.float32
    assert np.isfinite(fitted.user_factors_).all() and np.isfinite(fitted.item_factors_).all()
    assert fitted.epochs_run_ == SMALL.epochs and fitted.best_epoch_ is None  # no validation: no early stop
    train = tiny_dataset.matrix("train")
    np.testing.assert_array_equal(fitted.item_degrees_, np.diff(train.tocsc().indptr))


def test_learns_the_two_tastes(fitted: LightGCN, tiny_dataset: Dataset) -> None:
    """Tiny users like either odd or even item ids: the model must rank their half first."""
    ids = tiny_dataset.items.ids.astype(int)
    users = np.arange(tiny_dataset.n_users)
    taste = (tiny_dataset.users.ids.astype(int) - 1) % 2
    top, _ = fitted.recommend(users, n=3)
    same = (ids[top] - 1) % 2 == taste[:, None]
    assert same.mean() > 0.9


def test_same_seed_same_factors_other_seed_differs(tiny_dataset: Dataset, client: Client) -> None:
    cfg = replace(SMALL, epochs=5)
    fits = [
        LightGCN(cfg).fit(TrainData(tiny_dataset), TrainingOptions(client=client, device="cpu", seed=s))
        for s in (3, 3, 4)
    ]
    np.testing.assert_array_equal(fits[0].user_factors_, fits[1].user_factors_)
    np.testing.assert_array_equal(fits[0].item_factors_, fits[1].item_factors_)
    assert not np.allclose(fits[0].item_factors_, fits[2].item_factors_)


def test_early_stopping_keeps_the_best_evaluated_epoch(tiny_dataset: Dataset, client: Client) -> None:
    data = TrainData(tiny_dataset, split="fit", validation="validation")
    model = LightGCN(replace(SMALL, epochs=40, eval_every=2)).fit(data, TrainingOptions(client=client, device="cpu"))
    epochs, scores = zip(*model.history_)
    assert list(epochs) == list(range(2, model.epochs_run_ + 1, 2))
    assert model.best_epoch_ == epochs[int(np.argmax(scores))]
    assert model.best_ndcg_ == pytest.approx(max(scores))
    # The kept factors are those of the best epoch, not the last one.
    again = evaluate(lambda rows: model.score(rows), data.matrix(), data.matrix("validation"))
    assert again["ndcg@10"] == pytest.approx(model.best_ndcg_)


def test_early_stopping_stops_after_patience(tiny_dataset: Dataset, client: Client) -> None:
    """With a step size too small to change any ranking, no evaluation improves on the first."""
    cfg = replace(SMALL, learning_rate=1e-12, epochs=100, eval_every=2, patience=3)
    data = TrainData(tiny_dataset, split="fit", validation="validation")
    model = LightGCN(cfg).fit(data, TrainingOptions(client=client, device="cpu"))
    assert model.best_epoch_ == 2
    assert model.epochs_run_ == 2 * (1 + cfg.patience)
    assert model.refit_config() == replace(cfg, epochs=2, eval_every=2)


def test_refit_config_is_the_validated_epoch_count() -> None:
    model = LightGCN(LightGCNConfig(epochs=200, eval_every=5))
    assert model.refit_config() == model.config  # not early-stopped: the config as given
    model.best_epoch_ = 35
    assert model.refit_config() == replace(model.config, epochs=35)
    model.best_epoch_ = 3
    assert model.refit_config() == replace(model.config, epochs=3, eval_every=3)
    assert model.config.epochs == 200, "the model's own config is left alone"


def test_time_limit_stops_after_the_epoch_that_crosses_it(tiny_dataset: Dataset) -> None:
    """A limit crossed in epoch 1 stops there, evaluating that epoch though eval_every is larger."""
    from models.lightgcn_trainer import LightGCNTrainer

    data = TrainData(tiny_dataset, split="fit", validation="validation")
    cfg = replace(SMALL, epochs=40, eval_every=10)
    result = LightGCNTrainer(cfg, device="cpu", time_limit=1e-9).fit(data.matrix(), data.matrix("validation"))
    assert result.epochs_run == 1 and [e for e, _ in result.history] == [1] and result.best_epoch == 1
    assert len(result.epoch_seconds) == 1 and result.epoch_seconds[0] > 0 and result.basis_seconds > 0
    assert result.device == "cpu" and result.worker is None  # not run as a Dask task
    unlimited = LightGCNTrainer(replace(cfg, epochs=3, eval_every=3), device="cpu").fit(data.matrix(), data.matrix("validation"))
    assert unlimited.epochs_run == 3 and len(unlimited.epoch_seconds) == 3
    with pytest.raises(ValueError, match="time_limit"):
        LightGCNTrainer(cfg, time_limit=0)


def test_fold_in(fitted: LightGCN, tiny_dataset: Dataset) -> None:
    assert fitted.fold_in(np.array([], dtype=np.int64)).tolist() == [0.0] * 16
    train = tiny_dataset.matrix("train")
    ids = tiny_dataset.items.ids.astype(int)
    for user in range(4):
        history = train[user].indices
        vec = fitted.fold_in(history, np.ones(history.size))
        assert vec.shape == (16,) and vec.dtype == np.float32
        # Folded in from the history alone, the user still prefers items of its own taste.
        scores = fitted.item_factors_ @ vec
        taste = (ids[history[0]] - 1) % 2
        assert scores[(ids - 1) % 2 == taste].mean() > scores[(ids - 1) % 2 != taste].mean()
    # Duplicates count once; values must match items.
    np.testing.assert_allclose(fitted.fold_in(np.array([1, 1, 3])), fitted.fold_in(np.array([3, 1])), rtol=1e-6)
    with pytest.raises(ValueError, match="values"):
        fitted.fold_in(np.array([1, 2]), np.array([1.0]))
    with pytest.raises(ValueError, match="out of range"):
        fitted.fold_in(np.array([tiny_dataset.n_items]))


def test_a_trained_users_history_folds_in_to_its_trained_vector(fitted: LightGCN, tiny_dataset: Dataset) -> None:
    """The fold-in rows are the basis's extension (V S^-1 M): a user's training history gives back
    its trained vector up to the basis residual (one propagation step, the fold-in before them, gave
    0.66 of the norm), so a refold on the same split changes nothing and serving's fold-in of a
    trained user's history starts where training left it."""
    folded = fitted.fold_in_histories(tiny_dataset.matrix("train", ordered=True))
    trained = fitted.user_factors_
    cosine = (folded * trained).sum(1) / np.linalg.norm(folded, axis=1) / np.linalg.norm(trained, axis=1)
    ratio = np.linalg.norm(folded, axis=1) / np.linalg.norm(trained, axis=1)
    assert cosine.min() > 0.99 and np.abs(ratio - 1).max() < 0.05, (cosine.min(), ratio.min(), ratio.max())


def test_a_model_without_fold_in_rows_folds_over_its_item_vectors(fitted: LightGCN, tiny_dataset: Dataset) -> None:
    """A model saved before the fold-in rows were kept (and an item added while serving) folds a
    history over the item vectors: one propagation step, sum_j e_j / sqrt(d_j n)."""
    import copy

    old = copy.copy(fitted)
    old.user_projection_ = None
    history = np.array([0, 5, 7, 5])
    items = np.array([0, 5, 7])
    expected = (fitted.item_factors_[items] / np.sqrt(fitted.item_degrees_[items] * 3.0)[:, None]).sum(0)
    np.testing.assert_allclose(old.fold_in(history), expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(fitted.fold_in(history), expected)
    with pytest.raises(ValueError, match="no fold-in rows"):  # its fold-ins are not on the tuned scale
        old.refold(TrainData(tiny_dataset))
    from etl.vocabulary import Vocabulary

    items = Vocabulary([*fitted.items_.ids.tolist(), "added-1"], kind="item")
    added = fitted.with_items(np.ones((1, fitted.dim), np.float32), items)
    n = fitted.item_factors_.shape[0]
    parts = added.history_terms(np.array([0, n]))[1]
    np.testing.assert_allclose(parts[1], np.ones(fitted.dim) / np.sqrt(2.0), rtol=1e-6)  # degree 0 counts as 1
    np.testing.assert_allclose(parts[0], fitted.history_terms(np.array([0, 5]))[1][0], rtol=1e-6)


def test_save_load_roundtrip(fitted: LightGCN, tmp_path: Path) -> None:
    fitted.save(tmp_path / "m")
    loaded = FactorModel.load(tmp_path / "m")
    assert isinstance(loaded, LightGCN) and loaded.config == fitted.config
    np.testing.assert_array_equal(loaded.user_factors_, fitted.user_factors_)
    np.testing.assert_array_equal(loaded.item_degrees_, fitted.item_degrees_)
    np.testing.assert_array_equal(loaded.user_projection_, fitted.user_projection_)
    # a folder whose fold-in rows do not match its items (a torn or foreign file) fails where it loads
    np.save(tmp_path / "m" / "user_projection.npy", fitted.user_projection_[:, :-1])
    with pytest.raises(ValueError, match="user_projection.npy has shape"):
        FactorModel.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.fold_in(np.array([0, 5, 7])), fitted.fold_in(np.array([0, 5, 7])))
    assert loaded.epochs_run_ == fitted.epochs_run_
    users = np.arange(10)
    np.testing.assert_array_equal(loaded.recommend(users)[0], fitted.recommend(users)[0])


def test_recommend_excludes_seen(fitted: LightGCN, tiny_dataset: Dataset) -> None:
    train = tiny_dataset.matrix("train")
    users = np.arange(tiny_dataset.n_users)
    top, _ = fitted.recommend(users, n=10)
    for user in users:
        assert not set(top[user]) & set(train[user].indices)
    unfiltered, _ = fitted.recommend(users, n=10, filter_seen=False)
    assert any(set(unfiltered[u]) & set(train[u].indices) for u in users)


@pytest.mark.parametrize(
    ("field", "value"),
    [("embedding_dim", 0), ("learning_rate", 0.0), ("l2", -1.0), ("validation_users", 0), ("eval_every", 500)],
)
def test_config_validation_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        LightGCNConfig(**{field: value})


# LightGCN's quality target on ml-latest-small (test NDCG@10 >= 0.115, tuned config refit on
# 'train') is asserted in tests/test_pipeline.py's real-data test, which fits it anyway.


def test_spectral_propagation_is_pyg_lightgcn_on_its_layer0_embeddings() -> None:
    """With every singular pair of a small graph in the basis, the closed-form final embeddings equal
    PyG's stock LightGCN (its own normalisation, both edge directions) propagating the model's
    layer-0 embeddings: the spectral model is LightGCN, not an approximation of it."""
    import scipy.sparse as sp
    import torch
    from torch_geometric.nn.models import LightGCN as PygLightGCN

    from models.lightgcn_trainer import SpectralLightGCN, spectral_basis

    rng = np.random.default_rng(3)
    users, items = 40, 30
    interactions = sp.random(users, items, density=0.2, format="csr", random_state=rng, dtype=np.float32)
    torch.manual_seed(0)
    cfg = LightGCNConfig(embedding_dim=8, num_layers=3, rank=items)
    model = SpectralLightGCN(spectral_basis(interactions, cfg.rank, 6, torch.device("cpu")), cfg)
    user0, item0 = model.layer0()
    stock = PygLightGCN(users + items, 8, 3)
    stock.embedding.weight.data.copy_(torch.cat([user0, item0]).detach())
    coo = interactions.tocoo()
    edges = np.vstack([np.r_[coo.row, coo.col + users], np.r_[coo.col + users, coo.row]]).astype(np.int64)
    expected = stock.get_embedding(torch.from_numpy(edges))
    final = torch.cat(model.embeddings()).detach()
    assert final.abs().max() > 0.05  # a real comparison, not of zeros
    torch.testing.assert_close(final, expected, atol=2e-5, rtol=1e-4)


def test_truncated_basis_is_near_exact_singular_triplets() -> None:
    """A basis of a quarter of the spectrum: orthonormal sides, the largest singular values in order
    (against numpy's dense SVD), and a residual |R~ v - s u| / s that is small and reported."""
    import scipy.sparse as sp
    import torch

    from models.lightgcn_trainer import spectral_basis

    rng = np.random.default_rng(4)
    interactions = sp.random(300, 200, density=0.05, format="csr", random_state=rng, dtype=np.float32)
    torch.manual_seed(0)
    basis = spectral_basis(interactions, 50, 6, torch.device("cpu"))
    u, s, v = (t.double().numpy() for t in (basis.users, basis.values, basis.items))
    np.testing.assert_allclose(u.T @ u, np.eye(50), atol=1e-4)
    np.testing.assert_allclose(v.T @ v, np.eye(50), atol=1e-4)
    dense = normalized(interactions)
    exact = np.linalg.svd(dense, compute_uv=False)
    assert s[0] == pytest.approx(1.0, abs=1e-4)  # the top singular value of a normalised graph
    # A random graph's spectrum is flat (s_50 / s_49 ~ 0.99), where subspace iteration converges
    # slowest: the leading half to 1e-3, the rest to 1e-2 (measured: 2e-4 and 3.4e-3).
    np.testing.assert_allclose(s[:25], exact[:25], rtol=1e-3)
    np.testing.assert_allclose(s, exact[:50], rtol=1e-2)
    residual = np.linalg.norm(dense @ v - u * s, axis=0) / s
    assert residual.max() < 0.05 and basis.residual == pytest.approx(residual.max(), rel=1e-2, abs=1e-4)
    # fewer iterations leave the trailing triplets further from exact, and the residual says so
    torch.manual_seed(0)
    assert spectral_basis(interactions, 50, 0, torch.device("cpu")).residual > 2 * basis.residual


def normalized(interactions: object) -> np.ndarray:
    from models.lightgcn_trainer import normalized_interactions

    return normalized_interactions(interactions).toarray()


def test_expected_penalty_is_the_mean_batch_penalty() -> None:
    """The L2 term in closed form is the per-batch term of the official LightGCN (half the squared
    layer-0 norms of the batch's users, positives and negatives at 1/k each, over b) averaged over
    the sampler's batches: exact for users and positives, within the negatives' sampling noise."""
    import scipy.sparse as sp
    import torch

    from models.lightgcn_trainer import BPRSampler, SpectralLightGCN, _ExpectedPenalty, spectral_basis

    rng = np.random.default_rng(5)
    interactions = sp.random(60, 400, density=0.05, format="csr", random_state=rng, dtype=np.float32)
    cfg = LightGCNConfig(embedding_dim=4, num_layers=2, rank=40)
    basis = spectral_basis(interactions, cfg.rank, 6, torch.device("cpu"))
    model = SpectralLightGCN(basis, cfg)
    sampler = BPRSampler(interactions, 4, rng)
    closed = _ExpectedPenalty(basis, sampler)(model).item()
    user0, item0 = (e.detach().double().numpy() for e in model.layer0())
    sq_user, sq_item = (user0**2).sum(1), (item0**2).sum(1)
    per_batch = []
    for _ in range(200):  # every epoch covers each positive once: users and positives are exact
        for users, pos, neg in sampler.epoch(64):
            per_batch.append((users.size, 0.5 * (sq_user[users].sum() + sq_item[pos].sum()
                                                 + sq_item[neg].sum() / neg.shape[1]) / users.size))
    sizes, values = np.array(per_batch).T
    mean = float((sizes * values).sum() / sizes.sum())
    assert mean == pytest.approx(closed, rel=0.01)
    assert closed > 0


def test_sampler_epoch_size_draws_distinct_positives() -> None:
    import scipy.sparse as sp

    from models.lightgcn_trainer import BPRSampler

    interactions = sp.random(50, 40, density=0.25, format="csr", random_state=np.random.default_rng(2))
    sampler = BPRSampler(interactions, 2, np.random.default_rng(0))
    for size, expected in ((None, interactions.nnz), (10 * interactions.nnz, interactions.nnz), (123, 123)):
        batches = list(sampler.epoch(32, size))
        pairs = np.concatenate([u * 40 + i for u, i, _ in batches])
        assert pairs.size == expected and np.unique(pairs).size == expected
        assert all(neg.shape == (u.size, 2) for u, _, neg in batches)
        assert np.isin(pairs, sampler._keys).all()
