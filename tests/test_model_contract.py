"""The shared contract every signal implements (models/base.py); each model only adds a factory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from etl.dataset import Dataset
from etl.errors import ClientRequiredError, NotFittedError
from models.base import FactorModel, TrainData, TrainingOptions


def _popularity() -> FactorModel:
    from models.popularity import Popularity

    return Popularity()


def _als() -> FactorModel:
    from models.als import ALS, ALSConfig

    return ALS(ALSConfig(factors=8, iterations=3))


def _content() -> FactorModel:
    from models.content import ContentConfig, ContentModel

    return ContentModel(ContentConfig(dim=8))


def _lightgcn() -> FactorModel:
    from models.lightgcn import LightGCN, LightGCNConfig

    return LightGCN(LightGCNConfig(embedding_dim=8, num_layers=2, epochs=3, eval_every=1, batch_size=64))


def _svd() -> FactorModel:
    from models.svd import SVDConfig, SVDItemItem

    return SVDItemItem(SVDConfig(factors=8))


def _sequence() -> FactorModel:
    from models.sequence import SequenceConfig, SequenceModel

    return SequenceModel(SequenceConfig(factors=8))


FACTORIES: dict[str, Callable[[], FactorModel]] = {
    "popularity": _popularity,
    "als": _als,
    "content": _content,
    "lightgcn": _lightgcn,
    "svd": _svd,
    "sequence": _sequence,
}


@pytest.fixture(scope="module", params=sorted(FACTORIES))
def fitted(request: pytest.FixtureRequest, tiny_dataset: Dataset, client) -> FactorModel:
    model = FACTORIES[request.param]()
    return model.fit(TrainData(tiny_dataset, split="train"), TrainingOptions(client=client, seed=0))


@pytest.fixture(scope="module", params=sorted(FACTORIES))
def validated(request: pytest.FixtureRequest, tiny_dataset: Dataset, client) -> FactorModel:
    """Fit on 'fit' with 'validation' beside it, as tuning does (a model may early-stop on it)."""
    model = FACTORIES[request.param]()
    data = TrainData(tiny_dataset, split="fit", validation="validation")
    return model.fit(data, TrainingOptions(client=client, seed=0))


@pytest.mark.parametrize("kind", sorted(set(FACTORIES) - {"popularity"}))
def test_a_fit_on_dask_needs_a_client(kind: str, tiny_dataset: Dataset, client) -> None:
    """The module's client is the default one, yet a model never picks it up nor opens a cluster."""
    with pytest.raises(ClientRequiredError, match=f"{kind} fit"):
        FACTORIES[kind]().fit(TrainData(tiny_dataset, split="train"))


def test_unfitted_model_says_so() -> None:
    with pytest.raises(NotFittedError):
        _popularity().recommend(np.array([0]))


def test_factors_cover_vocabularies(fitted: FactorModel, tiny_dataset: Dataset) -> None:
    assert fitted.user_factors_.shape == (tiny_dataset.n_users, fitted.dim)
    assert fitted.item_factors_.shape == (tiny_dataset.n_items, fitted.dim)
    assert fitted.user_factors_.dtype == np.float32 and fitted.item_factors_.dtype == np.float32
    assert np.isfinite(fitted.user_factors_).all() and np.isfinite(fitted.item_factors_).all()


def test_score_is_inner_product(fitted: FactorModel) -> None:
    users = np.array([0, 3, 7])
    expected = fitted.user_factors_[users] @ fitted.item_factors_.T
    np.testing.assert_allclose(fitted.score(users), expected, rtol=1e-5, atol=1e-6)


def test_recommend_is_batch_first_and_filters_seen(fitted: FactorModel) -> None:
    users = np.arange(10)
    items, scores = fitted.recommend(users, n=5)
    assert items.shape == scores.shape == (10, 5)
    for u, row in zip(users, items, strict=True):
        seen = set(fitted.seen_[u].indices)
        assert not seen & set(row[row >= 0].tolist())
    assert (np.diff(scores, axis=1) <= 1e-6).all(), "scores must be sorted best first"
    unfiltered, _ = fitted.recommend(users, n=5, filter_seen=False)
    assert unfiltered.shape == (10, 5)


def test_recommend_within_candidates(fitted: FactorModel) -> None:
    candidates = np.array([1, 2, 3, 41])
    items, _ = fitted.recommend(np.arange(5), n=10, filter_seen=False, candidates=candidates)
    assert set(items[items >= 0].ravel()) <= set(candidates.tolist())
    assert (items[:, 4:] == -1).all(), "fewer candidates than n pad with -1"


def test_similar_items_excludes_itself(fitted: FactorModel) -> None:
    items, _ = fitted.similar_items(np.array([0, 5]), n=3)
    assert items.shape == (2, 3)
    assert 0 not in items[0] and 5 not in items[1]


def test_fold_in_gives_a_user_vector(fitted: FactorModel) -> None:
    vec = fitted.fold_in(np.array([0, 2, 4]), np.array([4.0, 5.0, 3.0], dtype=np.float32))
    assert vec.shape == (fitted.dim,) and np.isfinite(vec).all()
    empty = fitted.fold_in(np.array([], dtype=np.int64))
    assert empty.shape == (fitted.dim,) and np.isfinite(empty).all()


def test_save_load_roundtrip(fitted: FactorModel, tmp_path: Path) -> None:
    fitted.save(tmp_path / "m")
    assert not list((tmp_path / "m").glob("*.pkl"))
    loaded = FactorModel.load(tmp_path / "m")
    assert type(loaded) is type(fitted) and loaded.config == fitted.config
    assert loaded.split_ == fitted.split_ == "train", "a model records the split it was fit on, and keeps it"
    np.testing.assert_array_equal(loaded.item_factors_, fitted.item_factors_)
    np.testing.assert_array_equal(loaded.recommend(np.arange(4), n=5)[0], fitted.recommend(np.arange(4), n=5)[0])
    mm = FactorModel.load(tmp_path / "m", mmap=True)
    np.testing.assert_array_equal(mm.user_factors_, fitted.user_factors_)


def test_with_items_appends_items_without_interactions(fitted: FactorModel) -> None:
    from etl.vocabulary import Vocabulary

    n, m = fitted.item_factors_.shape[0], 2
    new_factors = np.full((m, fitted.dim), 0.5, np.float32)
    items = Vocabulary([*fitted.items_.ids.tolist(), "added-1", "added-2"], kind="item")
    extended = fitted.with_items(new_factors, items)
    assert extended.item_factors_.shape == (n + m, fitted.dim) and fitted.item_factors_.shape[0] == n
    np.testing.assert_array_equal(extended.item_factors_[:n], fitted.item_factors_)
    np.testing.assert_array_equal(extended.item_factors_[n:], new_factors)
    assert extended.seen_.shape == (fitted.seen_.shape[0], n + m) and extended.seen_.nnz == fitted.seen_.nnz
    # a history naming an added item folds in; one without it folds in as before
    history = np.array([0, 1, 2])
    np.testing.assert_allclose(extended.fold_in(history), fitted.fold_in(history), rtol=1e-5, atol=1e-6)
    assert np.isfinite(extended.fold_in(np.array([0, n]))).all()
    with pytest.raises(ValueError, match="ids for"):
        fitted.with_items(new_factors, fitted.items_)


def test_history_terms_add_up_to_the_fold_in(fitted: FactorModel) -> None:
    """Every signal the registry gives drivers (every one but popularity) splits its fold-in by
    history item (what explanations rank drivers by); the parts are one per distinct history row
    and add up to the fold-in."""
    from models.signals import SIGNALS

    history = np.array([4, 0, 9, 4, 2])
    values = np.array([4.0, 5.0, 3.0, 1.0, 2.0], dtype=np.float32)
    rows, parts = fitted.history_terms(history, values)
    assert parts.shape == (len(rows), fitted.dim) and parts.dtype == np.float32
    if fitted.kind not in {s.kind for s in SIGNALS if s.driver_rank is not None}:
        assert len(rows) == 0
        return
    assert len(rows) > 0 and rows.tolist() == sorted(set(rows.tolist())) and set(rows.tolist()) <= set(history.tolist())
    np.testing.assert_allclose(parts.astype(np.float64).sum(axis=0), fitted.fold_in(history, values),
                               rtol=1e-4, atol=1e-5)
    assert len(fitted.history_terms(np.array([], dtype=np.int64))[0]) == 0


def test_a_linear_fold_in_is_its_weighted_history_rows(fitted: FactorModel) -> None:
    from models.base import LinearFoldIn

    assert isinstance(fitted, LinearFoldIn) == (fitted.kind in ("content", "lightgcn", "svd", "sequence"))
    if not isinstance(fitted, LinearFoldIn):
        return
    history = np.array([4, 0, 9, 4, 2])
    values = np.array([4.0, 5.0, 3.0, 1.0, 2.0], dtype=np.float32)
    rows, weights = fitted.history_weights(history, values)
    assert rows.tolist() == sorted(set(rows.tolist())) and set(rows.tolist()) <= set(history.tolist())
    expected = sum(w * fitted.projection_rows(np.array([r]))[0] for r, w in zip(rows, weights, strict=True))
    np.testing.assert_allclose(fitted.fold_in(history, values), expected, rtol=1e-5, atol=1e-6)
    assert not fitted.fold_in(np.array([], dtype=np.int64)).any()


def test_fold_in_histories_is_the_fold_in_of_every_row(fitted: FactorModel, tiny_dataset: Dataset) -> None:
    """A vectorised ``fold_in_histories`` (content, lightgcn, svd) gives what ``fold_in`` gives row
    by row (the base class's loop, which the others use)."""
    histories = tiny_dataset.matrix("train", ordered=True)
    order = histories.indices.copy()
    got = fitted.fold_in_histories(histories)
    np.testing.assert_array_equal(histories.indices, order)  # the time order is left as it was
    assert got.shape == (tiny_dataset.n_users, fitted.dim) and got.dtype == np.float32
    np.testing.assert_allclose(got, FactorModel.fold_in_histories(fitted, histories), rtol=1e-4, atol=1e-5)


def test_refold_keeps_the_item_side_and_folds_every_user_in(validated: FactorModel, tiny_dataset: Dataset) -> None:
    """The pipeline's fold-in refit: the model fit on 'fit', its users folded in from 'train'."""
    import copy

    data = TrainData(tiny_dataset, split="train")
    before = validated.user_factors_.copy()
    refolded = validated.refold(data)
    assert refolded.split_ == "train" and validated.split_ == "fit"
    assert refolded.seen_.nnz == data.matrix().nnz > validated.seen_.nnz
    assert refolded.item_factors_ is validated.item_factors_ and refolded.config == validated.config
    np.testing.assert_array_equal(validated.user_factors_, before)  # the fitted model is unchanged
    np.testing.assert_allclose(refolded.user_factors_,
                               validated.fold_in_histories(tiny_dataset.matrix("train", ordered=True)), rtol=1e-6)
    np.testing.assert_allclose(refolded.score(np.arange(3)), refolded.user_factors_[:3] @ validated.item_factors_.T,
                               rtol=1e-5, atol=1e-6)
    fewer = copy.copy(validated)
    fewer.item_factors_ = validated.item_factors_[:-1]
    with pytest.raises(ValueError, match="model was fit on"):
        fewer.refold(data)


def test_a_refit_config_reproduces_the_validated_fit(validated: FactorModel, tiny_dataset: Dataset, client) -> None:
    """The final fit on 'train' uses ``refit_config()``: a config of the model's own type that holds
    what the validated fit learned of it (an early-stopped model's best epoch count), so a refit with
    it runs that many epochs and has nothing left to learn."""
    assert validated.split_ == "fit"
    config = validated.refit_config()
    assert type(config) is type(validated.config)
    refit = type(validated)(config).fit(TrainData(tiny_dataset, split="train"), TrainingOptions(client=client, seed=0))
    assert refit.refit_config() == config
    best = getattr(validated, "best_epoch_", None)
    if best is None:
        assert config == validated.config
    else:
        assert config.epochs == best and refit.epochs_run_ == best


def test_fold_ins_read_item_vectors_from_scaled_columns_alike(fitted: FactorModel) -> None:
    """A served bundle points item_rows at the model's columns of the fused vectors (c * item
    factors, float32); fold-ins and their terms come out the same up to that rounding."""
    import copy

    history = np.array([4, 0, 9, 4, 2])
    before, (rows, parts) = fitted.fold_in(history), fitted.history_terms(history)
    served = copy.copy(fitted)
    scale = 3.7
    fused = np.hstack([np.ones((fitted.item_factors_.shape[0], 2), np.float32),
                       (fitted.item_factors_ * np.float32(scale)).astype(np.float32)])
    served.read_items_from(fused[:, 2:], scale)  # a strided view, as FusedIndex.columns gives
    np.testing.assert_allclose(served.item_rows(np.arange(5)), fitted.item_factors_[:5], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(served.fold_in(history), before, rtol=1e-4, atol=1e-6)
    served_rows, served_parts = served.history_terms(history)
    assert served_rows.tolist() == rows.tolist()
    np.testing.assert_allclose(served_parts, parts, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        served.read_items_from(fused[:-1, 2:], scale)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="scale"):
            served.read_items_from(fused[:, 2:], bad)
    assert fitted._item_source is None  # the copy's binding is its own


def test_pull_operands_multiply_out_to_the_history_terms(fitted: FactorModel) -> None:
    """<a_j, b_i> is history item j's term of item i's score however the model splits it (ALS:
    c_j y_j and A^-1 y_i instead of c_j A^-1 y_j and y_i)."""
    history = np.array([4, 0, 9, 4, 2])
    targets = np.array([1, 9, 3, 0])
    rows, parts = fitted.history_terms(history)
    got_rows, a, b = fitted.pull_operands(history, targets)
    assert got_rows.tolist() == rows.tolist()
    assert a.dtype == b.dtype == np.float32 and a.flags.c_contiguous and b.flags.c_contiguous
    assert a.shape == (len(rows), fitted.dim) and b.shape == (len(targets), fitted.dim)
    expected = parts.astype(np.float64) @ np.asarray(fitted.item_factors_[targets], np.float64).T
    scale = np.abs(expected).max(initial=0.0) + 1e-12
    np.testing.assert_allclose(a.astype(np.float64) @ b.astype(np.float64).T, expected, atol=1e-5 * scale)
    empty_rows, empty_a, empty_b = fitted.pull_operands(np.zeros(0, np.int64), targets)
    assert len(empty_rows) == len(empty_a) == 0 and empty_b.shape == (len(targets), fitted.dim)
