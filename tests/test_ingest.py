"""Ingest: validation with counted rejections, de-duplication, vocabularies, the protocol split."""

from __future__ import annotations

from pathlib import Path

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest

from bench.tiny import make_tiny_source
from etl.dataset import Dataset
from etl.errors import DataError
from etl.ingest import assign_splits, ingest
from etl.sources.base import RawSource


@pytest.fixture(autouse=True)
def _sync_scheduler():
    with dask.config.set(scheduler="sync"):
        yield


def _source(rows: list[tuple], *, parts: int = 1, numeric: bool = True) -> RawSource:
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "value", "timestamp"]).astype("string")
    return RawSource("test", dd.from_pandas(frame, npartitions=parts, sort=False), None, (0.5, 5.0), numeric, 1)


def test_split_rule_per_user() -> None:
    frame = pd.DataFrame({"user": [0] * 10 + [1] * 4 + [2] * 5, "timestamp": range(19), "item": range(19)})
    split = assign_splits(frame).tolist()
    # user 0: 10 -> 2 test (ceil 20%), train 8 -> 2 validation (ceil 1.6), 6 fit
    assert split[:10] == ["fit"] * 6 + ["validation"] * 2 + ["test"] * 2
    # user 1: fewer than 5 -> wholly fit
    assert split[10:14] == ["fit"] * 4
    # user 2: 5 -> 1 test; train 4 < 5 -> no validation
    assert split[14:] == ["fit"] * 4 + ["test"]


def test_split_invariants_on_tiny(tiny_dataset: Dataset) -> None:
    train, test = tiny_dataset.load("train"), tiny_dataset.load("test")
    fit, val = tiny_dataset.load("fit"), tiny_dataset.load("validation")
    assert len(fit) + len(val) == len(train)
    m = tiny_dataset.manifest
    assert len(train) + len(test) == m["interactions"] == sum(m["splits"].values())
    last_train = train.groupby("user")["timestamp"].max()
    first_test = test.groupby("user")["timestamp"].min()
    assert (first_test >= last_train.reindex(first_test.index)).all(), "a test interaction precedes train"
    assert set(test["user"]) <= set(train["user"]), "a test user without train history"
    last_fit = fit.groupby("user")["timestamp"].max()
    first_val = val.groupby("user")["timestamp"].min()
    assert (first_val >= last_fit.reindex(first_val.index)).all()
    sizes = (train.groupby("user").size() + test.groupby("user").size().reindex(train["user"].unique(), fill_value=0))
    held = test.groupby("user").size()
    assert (held == np.ceil(sizes.reindex(held.index) * 0.2)).all()


def test_vocabularies_and_items_table(tiny_dataset: Dataset) -> None:
    items = tiny_dataset.items_table
    assert len(items) == tiny_dataset.n_items == 42  # 40 seen + 2 catalogue-only items
    assert (items["row"].to_numpy() == np.arange(42)).all()
    assert items.loc[items["item_id"] == "41", "count"].item() == 0  # cold-start item kept
    assert items["count"].sum() == tiny_dataset.manifest["interactions"]
    assert list(tiny_dataset.users.ids[:3]) == ["1", "2", "3"]  # numeric order, not "1","10",...


def test_rejections_are_counted_with_lines(tmp_path: Path) -> None:
    rows = [
        ("1", "10", "4.0", "100"),
        ("2", "x1", "3.0", "100"),  # line 3: non-numeric item
        ("3", "10", "nan", "100"),  # line 4: NaN value
        ("4", "10", "9.0", "100"),  # line 5: out of range
        ("", "10", "3.0", "100"),  # line 6: missing user
        ("5", "11", "3.0", "abc"),  # line 7: bad timestamp
        ("1", "11", "2.0", "101"),
    ]
    report = ingest(_source(rows, parts=2), tmp_path / "ds")
    assert report.rejected == {
        "non-numeric item_id": 1,
        "non-numeric or NaN value": 1,
        "value outside [0.5, 5]": 1,
        "missing user_id": 1,
        "missing, negative or non-integer timestamp": 1,
    }
    assert report.rejected_lines["non-numeric item_id"] == [3]
    assert report.rejected_lines["value outside [0.5, 5]"] == [5]
    assert report.rejected_lines["missing, negative or non-integer timestamp"] == [7]
    assert report.interactions == 2
    assert Dataset.open(tmp_path / "ds").manifest["rejected"]["missing user_id"] == 1
    assert "missing user_id: 1 (lines 6)" in report.summary()


def test_strict_makes_rejections_fatal_and_writes_nothing(tmp_path: Path) -> None:
    rows = [("1", "10", "4.0", "100"), ("2", "10", "7.5", "100")]
    with pytest.raises(DataError, match=r"value outside \[0.5, 5\]: 1 \(lines 3\)"):
        ingest(_source(rows), tmp_path / "ds", strict=True)
    assert not (tmp_path / "ds").exists()


def test_duplicates_dropped_and_counted(tmp_path: Path) -> None:
    rows = [("1", "10", "4.0", "100"), ("1", "10", "4.0", "100"), ("1", "10", "5.0", "200"), ("1", "11", "1.0", "150")]
    report = ingest(_source(rows), tmp_path / "ds")
    assert report.duplicates_dropped == 1
    assert report.repeats_collapsed == 1
    kept = Dataset.open(tmp_path / "ds").load("train")
    assert sorted(kept["value"].tolist()) == [1.0, 5.0]  # the latest of the repeated pair


def test_all_rejected_and_empty_inputs(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="all 1 rows were rejected"):
        ingest(_source([("a", "b", "1", "1")]), tmp_path / "a")
    empty = RawSource("empty", dd.from_pandas(pd.DataFrame(columns=["user_id", "item_id", "value", "timestamp"], dtype="string"), npartitions=1))
    with pytest.raises(DataError, match="empty input"):
        ingest(empty, tmp_path / "b")


def test_missing_column(tmp_path: Path) -> None:
    frame = pd.DataFrame({"user_id": ["1"], "item_id": ["2"], "value": ["3"]})
    with pytest.raises(DataError, match=r"lack column\(s\) \['timestamp'\]"):
        ingest(RawSource("nots", dd.from_pandas(frame, npartitions=1)), tmp_path / "ds")


def test_string_ids_allowed_when_not_numeric(tmp_path: Path) -> None:
    report = ingest(_source([("alice", "m1", "1", "1"), ("bob", "m2", "1", "2")], numeric=False), tmp_path / "ds")
    assert report.rejected == {} and report.users == 2


def test_content_hash_is_deterministic(tmp_path: Path) -> None:
    a = ingest(make_tiny_source(), tmp_path / "a")
    b = ingest(make_tiny_source(), tmp_path / "b", rows_per_partition=100)
    ha = Dataset.open(a.path).manifest["content_hash"]
    assert ha == Dataset.open(b.path).manifest["content_hash"]
    c = ingest(make_tiny_source(seed=1), tmp_path / "c")
    assert Dataset.open(c.path).manifest["content_hash"] != ha


def test_real_movielens_protocol_counts(ml_small: Dataset) -> None:
    m = ml_small.manifest
    assert m["raw_rows"] == 100_836 and m["interactions"] == 100_836
    assert ml_small.n_users == 610 and ml_small.n_items == 9_742
    assert m["items_with_interactions"] == 9_724
    assert ml_small.count("train") == 80_419 and ml_small.count("test") == 20_417


def test_malformed_csv_line_is_a_clear_error(tmp_path: Path) -> None:
    from etl.sources.tabular import read_interactions

    path = tmp_path / "events.csv"
    path.write_text("user_id,item_id\n1,2\n3,4,5,6\n")
    with pytest.raises(DataError, match="unreadable line"):
        ingest(read_interactions(path), tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_deleted_users_are_left_out_and_counted(tmp_path: Path) -> None:
    rows = [("1", "10", "4.0", "100"), ("2", "10", "3.0", "100"), ("2", "11", "3.0", "101"), ("3", "11", "1.0", "5")]
    report = ingest(_source(rows), tmp_path / "ds", exclude_users={"2"})
    assert report.deleted_user_rows == 2 and report.users == 2
    ds = Dataset.open(tmp_path / "ds")
    assert "2" not in ds.users and ds.manifest["deleted_user_rows"] == 2
    assert report.rejected == {}


def test_an_ordered_matrix_holds_each_history_in_time_order(tiny_dataset: Dataset) -> None:
    """Dataset.matrix(split, ordered=True): the same pairs and values as the canonical matrix, each
    row's entries by (timestamp, item row), the order a fold-in reads a history in."""
    plain = tiny_dataset.matrix("train")
    ordered = tiny_dataset.matrix("train", ordered=True)
    assert (plain != ordered).nnz == 0 and ordered.nnz == plain.nnz
    frame = tiny_dataset.load("train")
    checked = 0
    for user, rows in frame.groupby("user"):
        expected = rows.sort_values(["timestamp", "item"])["item"].to_numpy()
        got = ordered.indices[ordered.indptr[user]: ordered.indptr[user + 1]]
        np.testing.assert_array_equal(got, expected)
        checked += not np.array_equal(np.sort(got), got)  # a row whose time order is not its item order
    assert checked > 0, "the fixture has histories where time order differs from item order"
