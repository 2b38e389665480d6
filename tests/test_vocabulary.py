"""Vocabularies: lookups of few or many ids, and the JSON file (a Parquet one written before still loads)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from etl.errors import UnknownIdError
from etl.vocabulary import Vocabulary, vocabulary_file


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
    ids = [f"i{k}" for k in range(800)]
    vocab = Vocabulary(ids)
    rng = np.random.default_rng(0)
    query = [ids[j] if j % 7 else f"missing{j}" for j in rng.integers(0, len(ids), 600)]
    big = vocab.rows(query, missing="ignore")
    small = np.concatenate([vocab.rows(query[k : k + 10], missing="ignore") for k in range(0, len(query), 10)])
    assert big.tolist() == small.tolist()
    assert (big >= 0).sum() == sum(1 for q in query if not q.startswith("missing"))
    with pytest.raises(UnknownIdError) as err:
        vocab.rows(query)
    assert err.value.ids == [q for q in query if q.startswith("missing")]


def test_pickle_leaves_the_lookup_behind(vocab: Vocabulary):
    vocab.row("7")  # builds the dict
    copy = pickle.loads(pickle.dumps(vocab))
    assert copy._lookup is None and copy == vocab and copy.row("33") == 3


def test_duplicate_ids_are_refused():
    with pytest.raises(ValueError, match=r"duplicate ids: \['b'\]"):
        Vocabulary(["a", "b", "c", "b"])


def test_saved_as_json_and_parquet_written_before_still_loads(vocab: Vocabulary, tmp_path: Path):
    vocab.save(tmp_path / "users.json")
    back = Vocabulary.load(tmp_path / "users.json", kind="user")
    assert back == vocab and back.kind == "user" and back.ids.tolist() == ["2", "7", "10", "33"]
    with open(tmp_path / "users.json", "rb") as fh:  # a file object, as datasets on fsspec are read
        assert Vocabulary.load(fh) == vocab

    old = tmp_path / "old"
    old.mkdir()
    pd.DataFrame({"id": pd.Series(["b", "a"], dtype="string"), "row": [0, 1]}).to_parquet(old / "users.parquet")
    assert vocabulary_file(old, "users") == old / "users.parquet"
    assert Vocabulary.load(vocabulary_file(old, "users")).ids.tolist() == ["b", "a"]
    assert vocabulary_file(tmp_path, "users") == tmp_path / "users.json"
