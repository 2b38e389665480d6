"""The sequential signal (models/sequence.py): transitions, low-rank scores, fold-in, persistence."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp

from etl.dataset import Dataset
from models.base import FactorModel, TrainData, TrainingOptions
from models.sequence import SequenceConfig, SequenceModel, transition_counts

FULL = SequenceConfig(factors=39, window=3, half_life=1.5, power_iterations=10)
"""Rank = the tiny catalogue's size - 1: the low-rank product is (nearly) the full one."""


@pytest.fixture(scope="module")
def fitted(tiny_dataset: Dataset, client) -> SequenceModel:
    return SequenceModel(FULL).fit(TrainData(tiny_dataset, split="train"), TrainingOptions(client=client, seed=0))


def test_transition_counts_follow_each_row_in_order() -> None:
    # user 0: 2 -> 0 -> 3; user 1: 1 -> 2 (order = stored column order, not sorted)
    histories = sp.csr_matrix((np.ones(5), np.array([2, 0, 3, 1, 2]), np.array([0, 3, 5])), shape=(2, 4))
    counts = transition_counts(histories, max_gap=2).toarray()
    expected = np.zeros((4, 4))
    expected[2, 0], expected[0, 3], expected[2, 3], expected[1, 2] = 1.0, 1.0, 0.5, 1.0
    np.testing.assert_allclose(counts, expected)
    assert transition_counts(histories, max_gap=1)[2, 3] == 0  # gap 2 left out


def test_scores_are_the_window_times_the_scaled_transitions(fitted: SequenceModel, tiny_dataset: Dataset) -> None:
    histories = tiny_dataset.matrix("train", ordered=True)
    counts = transition_counts(histories, FULL.max_gap).toarray()
    scaled = counts / np.sqrt(np.maximum(counts.sum(axis=1, keepdims=True), 1.0))
    user = int(np.argmax(np.diff(histories.indptr)))
    items = histories.indices[histories.indptr[user]:histories.indptr[user + 1]]
    q = np.zeros(histories.shape[1])
    q[items[-3:]] = 0.5 ** (np.arange(3)[::-1] / 1.5)
    np.testing.assert_allclose(fitted.score(np.array([user]))[0], q @ scaled, atol=1e-4)


def test_fold_in_of_a_history_equals_the_fitted_user(fitted: SequenceModel, tiny_dataset: Dataset) -> None:
    histories = tiny_dataset.matrix("train", ordered=True)
    for user in (0, 7, 21):
        items = histories.indices[histories.indptr[user]:histories.indptr[user + 1]]
        np.testing.assert_allclose(fitted.fold_in(items), fitted.user_factors_[user], rtol=1e-5, atol=1e-6)
    assert not fitted.fold_in(np.array([], dtype=np.int64)).any()
    with pytest.raises(ValueError, match="out of range"):
        fitted.fold_in(np.array([0, 10_000]))


def test_fit_does_not_depend_on_the_number_of_blocks(tiny_dataset: Dataset, client) -> None:
    one = SequenceModel(replace(FULL, n_blocks=1)).fit(TrainData(tiny_dataset, "train"), TrainingOptions(client=client))
    five = SequenceModel(replace(FULL, n_blocks=5)).fit(TrainData(tiny_dataset, "train"), TrainingOptions(client=client))
    np.testing.assert_allclose(one.score(np.arange(10)), five.score(np.arange(10)), atol=1e-5)


def test_save_and_load_round_trip(fitted: SequenceModel, tmp_path) -> None:
    fitted.save(tmp_path / "m")
    loaded = FactorModel.load(tmp_path / "m")
    assert isinstance(loaded, SequenceModel)
    np.testing.assert_array_equal(loaded.fold_in(np.array([3, 1, 4])), fitted.fold_in(np.array([3, 1, 4])))


@pytest.mark.parametrize("field, value", [("factors", 0), ("max_gap", 0), ("window", 1.5), ("half_life", 0.0),
                                          ("row_exponent", -1.0), ("power_iterations", -1), ("n_blocks", 0)])
def test_config_validation_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        SequenceConfig(**{field: value})
