"""Generic interactions (and optional item metadata) from CSV or Parquet, with a column mapping.

Also holds the small helpers every file-based source shares (checking that a file is readable,
checking columns, parsing a year out of a title, splitting list fields, aggregating tags), so
that MovieLens and any other tabular source report structural problems the same way.

CSV values are read as text (pandas "string" dtype): ingest coerces them and counts rejects.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import dask.dataframe as dd
import numpy as np
import pandas as pd

from etl.errors import DataError
from etl.sources.base import INTERACTION_COLUMNS, ITEM_COLUMNS, RawSource

DEFAULT_BLOCKSIZE = "64MB"
_COMPRESSION = {".gz", ".bz2", ".xz", ".zst", ".zip"}
_PARQUET = {".parquet", ".pq", ".parq"}
_CSV = {".csv", ".tsv", ".txt", ".dat"}
#: A trailing "(1995)" or "(2006-2007)" / "(2007– )" in a title: the (first) year.
_YEAR_RE = re.compile(r"\((\d{4})(?:\s*[-\u2013]\s*\d{0,4}\s*)?\)\s*$")


# ---------------------------------------------------------------- shared helpers


def require_file(path: str | Path) -> Path:
    """The path, when it is an existing non-empty file; DataError naming it otherwise."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: file not found")
    if not p.is_file():
        raise DataError(f"{p}: not a file")
    if p.stat().st_size == 0:
        raise DataError(f"{p}: file is empty")
    return p


def check_columns(found: Iterable[str], wanted: Iterable[str], path: str | Path) -> None:
    """DataError naming each wanted column absent from ``found`` (and listing those found)."""
    found = [str(c) for c in found]
    missing = [c for c in wanted if c not in found]
    if missing:
        names = ", ".join(repr(c) for c in missing)
        raise DataError(f"{path}: missing column(s) {names} (columns found: {', '.join(found) or 'none'})")


def csv_header(path: str | Path, *, sep: str = ",", encoding: str = "utf-8") -> list[str]:
    """Column names of a CSV file with a header line; DataError when it is empty or unreadable."""
    p = require_file(path)
    try:
        return [str(c) for c in pd.read_csv(p, sep=sep, nrows=0, encoding=encoding).columns]
    except pd.errors.EmptyDataError:
        raise DataError(f"{p}: file is empty (no header line)") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{p}: cannot read the header line: {exc}") from None


def _reason(exc: BaseException) -> str:
    """The informative line of a parser's message (dask wraps pandas' under "Original Message:")."""
    text = str(exc).split("Original Message:", 1)[-1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def lazy_csv(path: str | Path, **kwargs: object) -> dd.DataFrame:
    """``dd.read_csv`` of one file; DataError naming it when the head dask reads eagerly is unreadable."""
    try:
        return dd.read_csv(str(path), **kwargs)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: unreadable line: {_reason(exc)}") from None


def year_from_title(titles: pd.Series) -> pd.Series:
    """Year from a trailing "(YYYY)" in each title, nullable Int64 (<NA> where there is none)."""
    years = titles.astype("string").str.extract(_YEAR_RE, expand=False)
    return pd.to_numeric(years, errors="coerce").astype("Int64")


def split_list(values: pd.Series, sep: str = "|", *, empty: Iterable[str] = ()) -> pd.Series:
    """Each value as a list of stripped, non-empty strings; values listed in ``empty`` give [].

    Values that are already list-like (Parquet list columns) are kept as lists of str.
    """
    drop = set(empty)

    def one(v: object) -> list[str]:
        if isinstance(v, (list, tuple, np.ndarray)):
            parts = [str(x) for x in v]
        elif v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
            return []
        else:
            parts = str(v).split(sep)
        return [s for s in (p.strip() for p in parts) if s and s not in drop]

    return pd.Series([one(v) for v in values], index=values.index, dtype="object")


def aggregate_tags(item_ids: pd.Series, tags: pd.Series) -> dict[str, list[str]]:
    """Per item, its distinct tags (lowercased, stripped), most frequent first, ties by name."""
    frame = pd.DataFrame(
        {"item_id": item_ids.astype("string").str.strip(), "tag": tags.astype("string").str.strip().str.lower()}
    ).dropna()
    frame = frame[(frame["tag"] != "") & (frame["item_id"] != "")]
    if frame.empty:
        return {}
    counts = frame.groupby(["item_id", "tag"], sort=False).size().rename("n").reset_index()
    counts = counts.sort_values(["item_id", "n", "tag"], ascending=[True, False, True], kind="stable")
    return {str(k): [str(t) for t in v] for k, v in counts.groupby("item_id", sort=False)["tag"]}


def make_items(
    item_id: pd.Series,
    title: pd.Series | None = None,
    genres: pd.Series | None = None,
    tags: dict[str, list[str]] | pd.Series | None = None,
    year: pd.Series | None = None,
) -> pd.DataFrame:
    """An items frame with ITEM_COLUMNS: item_id/title "string", genres/tags lists, year Int64.

    ``tags`` is either per row (a Series aligned with item_id) or a mapping item id -> tags.
    ``year`` defaults to the year parsed from the title.
    """
    ids = item_id.astype("string").str.strip().reset_index(drop=True)
    n = len(ids)
    titles = (
        title.astype("string").str.strip().reset_index(drop=True)
        if title is not None
        else pd.Series(pd.NA, index=range(n), dtype="string")
    )
    genre_lists = genres.reset_index(drop=True) if genres is not None else pd.Series([[] for _ in range(n)])
    if isinstance(tags, dict):
        tag_lists = pd.Series([list(tags.get(i, [])) if i is not pd.NA else [] for i in ids], dtype="object")
    elif tags is not None:
        tag_lists = tags.reset_index(drop=True)
    else:
        tag_lists = pd.Series([[] for _ in range(n)], dtype="object")
    years = year.reset_index(drop=True).astype("Int64") if year is not None else year_from_title(titles)
    frame = pd.DataFrame(
        {"item_id": ids, "title": titles, "genres": genre_lists.astype("object"),
         "tags": tag_lists.astype("object"), "year": years}
    )
    return frame[list(ITEM_COLUMNS)]


# ---------------------------------------------------------------- generic tabular source


@dataclass(frozen=True)
class ItemColumns:
    """Where each item field lives in an items file. None: the conventional name, if present."""

    id: str = "item_id"
    """Item id column (required)."""
    title: str | None = None
    """Title column; None uses "title" when the file has one."""
    genres: str | None = None
    """Genres column (list_sep-separated text, or a Parquet list); None uses "genres" if present."""
    tags: str | None = None
    """Tags column (like genres; lowercased and deduplicated); None uses "tags" if present."""
    year: str | None = None
    """Year column; None uses "year" if present, else the year parsed from a trailing "(YYYY)"."""
    list_sep: str = "|"
    """Separator of genres and tags held as text."""


def _format_of(path: Path, fmt: str | None) -> tuple[str, str | None]:
    """(format, compression) of a path: 'csv' or 'parquet', from ``fmt`` or the file suffix."""
    suffixes = [s.lower() for s in path.suffixes]
    compression = suffixes[-1] if suffixes and suffixes[-1] in _COMPRESSION else None
    if fmt is not None:
        if fmt not in ("csv", "parquet"):
            raise ValueError(f"fmt must be 'csv' or 'parquet', not {fmt!r}")
        return fmt, compression
    if path.is_dir():
        return "parquet", None
    core = suffixes[-2] if compression and len(suffixes) > 1 else (suffixes[-1] if suffixes else "")
    if core in _PARQUET:
        return "parquet", None
    if core in _CSV:
        return "csv", compression
    raise DataError(f"{path}: cannot tell the format from the suffix {core or '(none)'!r}; pass fmt='csv' or 'parquet'")


def _read_table(path: Path, fmt: str, sep: str, blocksize: str | int | None, compression: str | None) -> dd.DataFrame:
    """A lazily read table: CSV as text columns, Parquet as stored; DataError when unreadable."""
    if fmt == "csv":
        csv_header(path, sep=sep)  # fails early, with the file name, on an empty/broken file
        # dask reads the head eagerly to infer the layout: lazy_csv turns its failures into DataError
        return lazy_csv(path, sep=sep, dtype="string", blocksize=None if compression else blocksize,
                        compression="infer" if compression else None)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_file() and path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    try:
        return dd.read_parquet(str(path))
    except Exception as exc:  # pyarrow raises several unrelated types for a broken file
        raise DataError(f"{path}: not a readable Parquet file: {exc}") from None


def _row_order(frame: dd.DataFrame) -> dd.Series:
    """0, 1, 2, ... over the whole table in source order (a lazy scan, no full load)."""
    return frame.assign(_one=np.int64(1))["_one"].cumsum() - 1


def read_interactions(
    path: str | Path,
    *,
    user: str = "user_id",
    item: str = "item_id",
    value: str | None = None,
    timestamp: str | None = None,
    fmt: str | None = None,
    sep: str = ",",
    blocksize: str | int | None = DEFAULT_BLOCKSIZE,
    items: str | Path | None = None,
    item_columns: ItemColumns | None = None,
) -> RawSource:
    """Interactions from a CSV or Parquet file (or Parquet folder) with columns mapped by name.

    No ``value`` column: every row is a positive with value 1.0. No ``timestamp`` column: the row
    order stands in for time, so time-based splits stay deterministic. ``items`` optionally
    names an items file read with ``item_columns``.
    """
    p = Path(path)
    fmt, compression = _format_of(p, fmt)
    if fmt == "csv" and sep == "," and ".tsv" in (s.lower() for s in p.suffixes):
        sep = "\t"
    table = _read_table(p, fmt, sep, blocksize, compression)
    mapping = {"user_id": user, "item_id": item, "value": value, "timestamp": timestamp}
    check_columns(table.columns, [c for c in mapping.values() if c is not None], p)
    chosen = {std: src for std, src in mapping.items() if src is not None}
    # Two standard names may map to one source column; select then copy to keep both.
    out = table[list(dict.fromkeys(chosen.values()))]
    out = out.assign(**{std: out[src] for std, src in chosen.items()})
    if value is None:
        out = out.assign(value=np.float64(1.0))
    if timestamp is None:
        out = out.assign(timestamp=_row_order(out))
    out = out[list(INTERACTION_COLUMNS)]
    item_frame = read_items(items, item_columns or ItemColumns(), sep=sep) if items is not None else None
    return RawSource(
        name=f"tabular:{p.name}",
        interactions=out,
        items=item_frame,
        value_range=None,
        numeric_ids=False,
        header_lines=1 if fmt == "csv" else 0,
        extra={
            "format": fmt,
            "path": str(p),
            "columns": mapping,
            "items_path": None if items is None else str(items),
        },
    )


def read_items(
    path: str | Path, columns: ItemColumns = ItemColumns(), *, fmt: str | None = None, sep: str = ","
) -> pd.DataFrame:
    """An items frame (ITEM_COLUMNS) from a small CSV or Parquet file, mapped by ``columns``."""
    p = Path(path)
    fmt, _ = _format_of(p, fmt)
    if fmt == "csv":
        csv_header(p, sep=sep)
        raw = pd.read_csv(p, sep=sep, dtype="string", keep_default_na=False)
    else:
        raw = _read_table(p, fmt, sep, None, None).compute()
    check_columns(raw.columns, [columns.id] + [c for c in (columns.title, columns.genres, columns.tags, columns.year) if c], p)

    def pick(explicit: str | None, default: str) -> pd.Series | None:
        name = explicit or (default if default in raw.columns else None)
        return raw[name] if name else None

    title, genres, tags, year = (
        pick(columns.title, "title"), pick(columns.genres, "genres"),
        pick(columns.tags, "tags"), pick(columns.year, "year"),
    )
    tag_lists = None
    if tags is not None:
        tag_lists = split_list(tags, columns.list_sep).map(lambda ts: list(dict.fromkeys(t.lower() for t in ts)))
    return make_items(
        raw[columns.id],
        title=title,
        genres=split_list(genres, columns.list_sep, empty=("(no genres listed)",)) if genres is not None else None,
        tags=tag_lists,
        year=pd.to_numeric(year, errors="coerce").astype("Int64") if year is not None else None,
    )
