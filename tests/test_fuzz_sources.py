"""Malformed CSV and Parquet, fuzzed with hypothesis, through the readers (etl/sources) and ingest, and
through the CLI (`hybridrec data ingest`).

The contract: a file either ingests, with every raw row accounted for (kept, rejected with a
reason, a duplicate, a repeat), or fails with the project's DataError naming the file; nothing
half-written is left behind; the CLI exits non-zero with one line, never a traceback.
What is lost: nothing silently. A row that is not kept is counted under a reason.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import dask
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etl.errors import DataError
from etl.ingest import IngestReport, ingest
from etl.sources.base import RawSource
from etl.sources.movielens import read_movielens
from etl.sources.tabular import read_interactions

REPO = Path(__file__).resolve().parents[1]
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


# -- the contract ------------------------------------------------------------------------------------

def accounted(report: IngestReport) -> None:
    """Every raw row is kept or counted under a reason."""
    removed = sum(report.rejected.values()) + report.duplicates_dropped + report.repeats_collapsed
    assert report.raw_rows == report.interactions + removed + report.deleted_user_rows, report
    assert report.interactions > 0 and report.interactions == sum(report.splits.values()), report
    for reason, count in report.rejected.items():
        assert count > 0 and report.rejected_lines.get(reason), (reason, report)


def ingest_or_data_error(read: Callable[[], RawSource], named: str, out: Path) -> IngestReport | None:
    """Read and ingest; a DataError must name ``named`` (the file) and leave no dataset behind."""
    try:
        with dask.config.set(scheduler="sync"):
            report = ingest(read(), out)
    except DataError as err:
        message = str(err)
        assert named in message, f"the error does not name {named!r}: {message}"
        assert "Traceback" not in message
        assert not out.exists(), "a failed ingest left a dataset folder"
        return None
    accounted(report)
    return report


# -- CSV ---------------------------------------------------------------------------------------------

def _num_text() -> st.SearchStrategy[str]:
    return st.one_of(
        st.integers(-5, 10**6).map(str),
        st.integers(-(2**70), 2**70).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.sampled_from(["", " ", "nan", "NaN", "inf", "-inf", "1e400", "4.5", "0.5", "5.0", "1,5", "NULL", "N/A",
                         "0x10", "1_000", "٣", "4.5.6", "true"]),
    )


field_text = st.one_of(_num_text(), st.text(max_size=12),
                       st.text(alphabet='",\n\r;:|\t \\x', max_size=6))
HEADERS = [
    "user_id,item_id,value,timestamp",
    "timestamp,value,item_id,user_id",
    "user_id,item_id,value",
    "user_id,value,timestamp",
    "user_id,item_id,value,timestamp,user_id",
    "\ufeffuser_id,item_id,value,timestamp",
    " user_id , item_id ,value,timestamp",
    "",
    "1,2,3.5,100",
]


@st.composite
def csv_bytes(draw: st.DrawFn, header_choices: list[str] = HEADERS) -> bytes:
    header = draw(st.sampled_from(header_choices))
    rows = draw(st.lists(st.lists(field_text, min_size=0, max_size=6), max_size=12))
    sane = draw(st.lists(st.tuples(st.integers(1, 9), st.integers(1, 9), st.sampled_from(["1", "4.5", "5"]),
                                   st.integers(0, 10**9)), max_size=8))
    lines = [",".join(map(str, r)) for r in sane] + [",".join(r) for r in rows]
    lines = draw(st.permutations(lines))
    text = "\n".join([header, *lines]) + draw(st.sampled_from(["", "\n", "\r\n", "\n\n"]))
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "latin-1", "utf-16"]))
    return text.encode(encoding, errors="replace")


@FUZZ
@given(raw=csv_bytes(), suffix=st.sampled_from([".csv", ".tsv", ".csv.gz"]))
def test_fuzzed_csv_ingests_or_fails_clearly(raw: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"events{suffix}"
        if suffix.endswith(".gz"):
            import gzip

            raw = gzip.compress(raw)
        path.write_bytes(raw)
        ingest_or_data_error(lambda: read_interactions(path, value="value", timestamp="timestamp"), str(path),
                             Path(tmp) / "ds")


@FUZZ
@given(ratings=csv_bytes(["userId,movieId,rating,timestamp", "userId,movieId,rating", "userId,movieId,rating,timestamp,x",
                          "", "1,2,3.5,100"]),
       movies=st.one_of(
           st.just(b"movieId,title,genres\n1,Toy Story (1995),Comedy|Drama\n2,\"Heat, The (1995)\",Action\n"),
           st.lists(st.lists(field_text, max_size=4), max_size=6).map(
               lambda rows: ("movieId,title,genres\n" + "\n".join(",".join(r) for r in rows)).encode()),
           st.binary(max_size=60)),
       tags=st.one_of(st.none(), st.binary(max_size=60),
                      st.lists(st.lists(field_text, max_size=5), max_size=6).map(
                          lambda rows: ("userId,movieId,tag,timestamp\n" + "\n".join(",".join(r) for r in rows)).encode())))
def test_fuzzed_movielens_csv_layout_ingests_or_fails_clearly(ratings: bytes, movies: bytes, tags: bytes | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "ml"
        folder.mkdir()
        (folder / "ratings.csv").write_bytes(ratings)
        (folder / "movies.csv").write_bytes(movies)
        if tags is not None:
            (folder / "tags.csv").write_bytes(tags)
        ingest_or_data_error(lambda: read_movielens(folder), str(folder), Path(tmp) / "ds")


dat_field = st.one_of(_num_text(), st.text(alphabet="0123456789:.:x ", max_size=8))


@FUZZ
@given(rows=st.lists(st.lists(dat_field, min_size=0, max_size=5), min_size=0, max_size=10),
       first_ok=st.booleans(), layout=st.sampled_from(["ml-1m", "ml-100k"]))
def test_fuzzed_movielens_dat_layouts_ingest_or_fail_clearly(rows: list[list[str]], first_ok: bool, layout: str) -> None:
    sep = "::" if layout == "ml-1m" else "\t"
    lines = (["1" + sep + "2" + sep + "4" + sep + "978300760"] if first_ok else []) + [sep.join(r) for r in rows]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / layout
        folder.mkdir()
        if layout == "ml-1m":
            (folder / "ratings.dat").write_text("\n".join(lines) + "\n", encoding="latin-1", errors="replace")
            (folder / "movies.dat").write_text("1::Toy Story (1995)::Comedy\n2::Heat (1995)::Action\n", encoding="latin-1")
        else:
            (folder / "u.data").write_text("\n".join(lines) + "\n", encoding="latin-1", errors="replace")
            flags = "|".join(["0"] * 19)
            (folder / "u.item").write_text(f"1|Toy Story (1995)|01-Jan-1995||http://x|{flags}\n", encoding="latin-1")
        ingest_or_data_error(lambda: read_movielens(folder), str(folder), Path(tmp) / "ds")


# -- Parquet -------------------------------------------------------------------------------------------

def column_arrays(n: int) -> st.SearchStrategy[pa.Array]:
    """A column of ``n`` values of one of many Arrow types (nulls, lists, timestamps, decimals, ...)."""

    def of(values: st.SearchStrategy[object]) -> st.SearchStrategy[list[object]]:
        return st.lists(values, min_size=n, max_size=n)

    return st.one_of(
        of(st.one_of(st.none(), st.integers(-(2**62), 2**62))).map(lambda v: pa.array(v, pa.int64())),
        of(st.one_of(st.none(), st.floats())).map(lambda v: pa.array(v, pa.float64())),
        of(st.one_of(st.none(), st.text(max_size=8))).map(lambda v: pa.array(v, pa.string())),
        of(st.one_of(st.none(), st.booleans())).map(lambda v: pa.array(v, pa.bool_())),
        of(st.one_of(st.none(), st.binary(max_size=6))).map(lambda v: pa.array(v, pa.binary())),
        of(st.lists(st.integers(0, 9), max_size=3)).map(lambda v: pa.array(v, pa.list_(pa.int64()))),
        of(st.integers(-(2**40), 2**40)).map(lambda v: pa.array(v, pa.int64()).cast(pa.timestamp("s"))),
        of(st.decimals(allow_nan=False, allow_infinity=False, places=2, min_value=-999, max_value=999)).map(
            lambda v: pa.array(v, pa.decimal128(6, 2))),
        of(st.sampled_from(["a", "b", "1"])).map(lambda v: pa.array(v, pa.string()).dictionary_encode()),
    )


@st.composite
def parquet_tables(draw: st.DrawFn) -> pa.Table:
    names = draw(st.lists(st.sampled_from(["user_id", "item_id", "value", "timestamp", "extra"]), min_size=1,
                          max_size=5, unique=True))
    n = draw(st.integers(1, 8))
    return pa.table({name: draw(column_arrays(n)) for name in names})


@FUZZ
@given(table=parquet_tables(), damage=st.sampled_from(["none", "none", "truncate", "flip", "empty"]))
def test_fuzzed_parquet_ingests_or_fails_clearly(table: pa.Table, damage: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.parquet"
        pq.write_table(table, path)
        raw = path.read_bytes()
        if damage == "truncate":
            path.write_bytes(raw[: len(raw) // 2])
        elif damage == "flip":
            path.write_bytes(raw[:8] + bytes(b ^ 0x5A for b in raw[8:-8]) + raw[-8:])
        elif damage == "empty":
            path.write_bytes(b"")
        ingest_or_data_error(lambda: read_interactions(path, value="value", timestamp="timestamp"), str(path),
                             Path(tmp) / "ds")


# -- exact counts (the fuzzing above only checks that counts add up) -------------------------------------

def test_each_bad_row_is_counted_under_its_reason(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("user_id,item_id,value,timestamp\n"
                    "1,10,4,100\n1,11,4,101\n2,10,3,102\n"  # kept
                    ",10,4,103\n"  # missing user_id (line 5)
                    "3,,4,104\n"  # missing item_id (line 6)
                    "4,10,abc,105\n"  # non-numeric value (line 7)
                    "5,10,inf,106\n"  # infinite value (line 8)
                    "6,10,4,-1\n"  # negative timestamp (line 9)
                    "7,10,4,1.5\n"  # non-integer timestamp (line 10)
                    "1,10,4,100\n")  # exact duplicate
    report = ingest_or_data_error(lambda: read_interactions(path, value="value", timestamp="timestamp"), path.name,
                                  tmp_path / "ds")
    assert report is not None
    assert report.rejected == {"missing user_id": 1, "missing item_id": 1, "non-numeric or NaN value": 2,
                               "missing, negative or non-integer timestamp": 2}
    assert report.rejected_lines["non-numeric or NaN value"] == [7, 8]
    assert report.rejected_lines["missing, negative or non-integer timestamp"] == [9, 10]
    assert report.duplicates_dropped == 1 and report.interactions == 3


# -- the CLI ----------------------------------------------------------------------------------------------

def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HYBRIDREC_DASHBOARD": ":0"}
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "cluster.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf)
    return buf.getvalue()


CLI_CASES = {
    "empty.csv": b"",
    "header-only.csv": b"user_id,item_id\n",
    "no-item.csv": b"user_id,value\n1,2\n",
    "ragged.csv": b"user_id,item_id\n1,2\n3,4,5,6\n",
    "unclosed-quote.csv": b'user_id,item_id\n1,"2\n3,4\n',
    "all-bad.csv": b"user_id,item_id,value\n1,2,x\n3,4,y\n",
    "binary.parquet": bytes(range(256)) * 4,
    "truncated.parquet": _parquet_bytes(pd.DataFrame({"user_id": ["1"] * 50, "item_id": ["2"] * 50}))[:300],
    "no-user.parquet": _parquet_bytes(pd.DataFrame({"item_id": ["2"], "value": [1.0]})),
    "events.xlsx": b"PK\x03\x04 not a table",
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CLI_CASES))
def test_cli_ingest_of_a_malformed_file_exits_nonzero_with_one_line(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(CLI_CASES[name])
    value = ["--value-col", "value"] if b"value" in CLI_CASES[name] else []
    out = _cli("data", "ingest", str(path), "--format", "table", *value, "--out", str(tmp_path / "ds"))
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, (out.returncode, out.stderr[-3000:])
    errors = [line for line in lines if line.startswith("hybridrec data: error: ")]
    assert len(errors) == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert name in errors[0], errors[0]
    assert not (tmp_path / "ds").exists()
