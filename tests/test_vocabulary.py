"""Vocabulary lookups: the dict path (a few ids) and the pandas path (large batches) agree."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from etl.errors import UnknownIdError
from etl.vocabulary import _DICT_BATCH, Vocabulary


@pytest.fixture
def vocab() -> Vocabulary:
    return Vocabulary.from_ids(["10", "2", "33", "2", "7"], kind="user")


def test_order_and_rows(vocab: Vocabulary):
    assert vocab.ids.tolist() == ["2", "7", "10", "33"]
    assert vocab.rows(["33", "2"]).tolist() == [3, 0]
    assert vocab.rows([33, np.int64(7)]).tolist() == [3, 1], "non-string ids are looked up by their text"
    assert vocab.row("10") == 2 and vocab.row(10) == 2
    assert "7" in vocab and 7 in vocab and "8" not in vocab
    assert vocab.rows(iter(["7", "2"])).tolist() == [1, 0], "any iterable"
    assert vocab.rows([]).dtype == np.int64 and len(vocab.rows([])) == 0


def test_unknown_ids(vocab: Vocabulary):
    assert vocab.rows(["7", "nope", "33"], missing="ignore").tolist() == [1, -1, 3]
    with pytest.raises(UnknownIdError) as err:
        vocab.rows(["7", "nope", "other"])
    assert err.value.ids == ["nope", "other"] and err.value.kind == "user"
    with pytest.raises(UnknownIdError, match="unknown user id"):
        vocab.row("nope")
    with pytest.raises(ValueError, match="missing must be"):
        vocab.rows(["7"], missing="skip")


def test_large_batches_agree_with_small_ones():
    ids = [f"i{k}" for k in range(3 * _DICT_BATCH)]
    vocab = Vocabulary(ids)
    rng = np.random.default_rng(0)
    query = [ids[j] if j % 7 else f"missing{j}" for j in rng.integers(0, len(ids), 2 * _DICT_BATCH)]
    big = vocab.rows(query, missing="ignore")
    small = np.concatenate([vocab.rows(query[k : k + 10], missing="ignore") for k in range(0, len(query), 10)])
    assert len(query) > _DICT_BATCH and big.tolist() == small.tolist()
    assert (big >= 0).sum() == sum(1 for q in query if not q.startswith("missing"))
    with pytest.raises(UnknownIdError) as err:
        vocab.rows(query)
    assert err.value.ids == [q for q in query if q.startswith("missing")]


def test_pickle_leaves_the_lookup_behind(vocab: Vocabulary):
    vocab.row("7")  # builds the dict
    copy = pickle.loads(pickle.dumps(vocab))
    assert copy._lookup is None and copy == vocab and copy.row("33") == 3
