"""MovieLens in its published layouts, from a folder or from the GroupLens .zip.

Layouts (detected from the files present):

- ``csv``: ml-latest-small, ml-latest, ml-20m, ml-25m: ratings.csv, movies.csv, tags.csv.
- ``ml-10m``: ratings.dat, movies.dat, tags.dat, '::'-separated, no header.
- ``ml-1m``: ratings.dat, movies.dat (latin-1), '::'-separated, no header, no tags.
- ``ml-100k``: u.data (tab-separated), u.item (pipe-separated, latin-1, genre flags), no tags.

Ratings are read lazily and partitioned (dask), every field as text, so that ingest can count
what it rejects; movies and tags are small and read with pandas. A zip is unpacked once (only
the members needed) into a cache folder, because dask cannot split a compressed member.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

import dask.dataframe as dd
import pandas as pd

from etl.errors import DataError
from etl.sources.base import INTERACTION_COLUMNS, RawSource
from etl.sources.tabular import (
    DEFAULT_BLOCKSIZE,
    aggregate_tags,
    check_columns,
    csv_header,
    lazy_csv,
    make_items,
    require_file,
    split_list,
    year_from_title,
)

#: Files that identify each layout (all must be present), checked in this order.
LAYOUTS: dict[str, tuple[str, ...]] = {
    "csv": ("ratings.csv", "movies.csv"),
    "ml-10m": ("ratings.dat", "movies.dat", "tags.dat"),
    "ml-1m": ("ratings.dat", "movies.dat"),
    "ml-100k": ("u.data", "u.item"),
}
#: Every file a layout may read (the optional ones included); what is taken out of a zip.
_MEMBERS = {"ratings.csv", "movies.csv", "tags.csv", "ratings.dat", "movies.dat", "tags.dat", "u.data", "u.item", "u.genre"}
_VALUE_RANGE = {"csv": (0.5, 5.0), "ml-10m": (0.5, 5.0), "ml-1m": (1.0, 5.0), "ml-100k": (1.0, 5.0)}
_NO_GENRES = ("(no genres listed)",)
#: ml-100k genre order when u.genre is absent (as in its README).
_ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)
#: What each layout reader returns: interactions, items, files read, extra facts.
_Read = tuple[dd.DataFrame, pd.DataFrame, list[str], dict[str, object]]
_CSV_RATINGS = {"userId": "user_id", "movieId": "item_id", "rating": "value", "timestamp": "timestamp"}


def read_movielens(
    path: str | Path,
    *,
    blocksize: str | int | None = DEFAULT_BLOCKSIZE,
    cache_dir: str | Path | None = None,
) -> RawSource:
    """Read a MovieLens folder or .zip as a RawSource.

    ``cache_dir`` is where a zip's members are unpacked (default: $HYBRIDREC_CACHE_DIR, else
    ~/.cache/hybridrec); it must outlive the returned (lazy) interactions.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or folder (expected a MovieLens folder or .zip)")
    if p.is_file() and p.suffix.lower() != ".zip":
        raise DataError(f"{p}: expected a MovieLens folder or .zip archive, not a single file")
    source_name = p.stem if p.is_file() else p.name
    folder = _unpack(p, cache_dir) if p.is_file() else _dataset_folder(p)
    layout = detect_layout(folder)
    reader = {"csv": _read_csv_layout, "ml-10m": _read_dat_layout, "ml-1m": _read_dat_layout, "ml-100k": _read_100k}
    interactions, items, files, extra = reader[layout](folder, layout, blocksize)
    return RawSource(
        name=f"movielens:{source_name}",
        interactions=interactions[list(INTERACTION_COLUMNS)],
        items=items,
        value_range=_VALUE_RANGE[layout],
        numeric_ids=True,
        header_lines=1 if layout == "csv" else 0,
        extra={"layout": layout, "path": str(p), "folder": str(folder), "files": files, **extra},
    )


def detect_layout(folder: Path) -> str:
    """The layout of a MovieLens folder; DataError listing the files found when none matches."""
    present = {f.name for f in folder.iterdir() if f.is_file()}
    for layout, needed in LAYOUTS.items():
        if all(n in present for n in needed):
            return layout
    known = "; ".join(f"{k}: {', '.join(v)}" for k, v in LAYOUTS.items())
    raise DataError(
        f"{folder}: not a known MovieLens layout (files found: {', '.join(sorted(present)) or 'none'}; expected {known})"
    )


def _dataset_folder(p: Path) -> Path:
    """The folder itself, or its single sub-folder when the data sits one level down."""
    if any((p / n).is_file() for n in _MEMBERS):
        return p
    subs = [d for d in p.iterdir() if d.is_dir() and any((d / n).is_file() for n in _MEMBERS)]
    return subs[0] if len(subs) == 1 else p


# ---------------------------------------------------------------- zip archives


def _cache_root(cache_dir: str | Path | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("HYBRIDREC_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "hybridrec"


def _unpack(zip_path: Path, cache_dir: str | Path | None) -> Path:
    """Extract the data members of a MovieLens zip (flattened) into a cache folder, once."""
    stat = zip_path.stat()
    key = hashlib.sha1(f"{zip_path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = _cache_root(cache_dir) / "movielens" / f"{zip_path.stem}-{key}"
    if (target / ".complete").is_file():
        return target
    bad = f"{zip_path}: is not a valid zip archive (truncated or corrupt?)"
    try:
        with zipfile.ZipFile(zip_path) as zf:
            members = _data_members(zf, zip_path)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
            try:
                for info in members:
                    with zf.open(info) as src, open(tmp / PurePosixPath(info.filename).name, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                (tmp / ".complete").write_text(str(zip_path.resolve()))
                try:
                    tmp.rename(target)
                except OSError:  # a concurrent reader finished first, or a stale partial copy
                    if not (target / ".complete").is_file():
                        shutil.rmtree(target, ignore_errors=True)
                        tmp.rename(target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise DataError(f"{bad} ({exc})") from None
    return target


def _data_members(zf: zipfile.ZipFile, zip_path: Path) -> list[zipfile.ZipInfo]:
    """The data files of the one folder of the archive that holds a MovieLens layout."""
    by_dir: dict[str, dict[str, zipfile.ZipInfo]] = {}
    for info in zf.infolist():
        pp = PurePosixPath(info.filename)
        if info.is_dir() or pp.parts[:1] == ("__MACOSX",) or pp.name not in _MEMBERS:
            continue
        by_dir.setdefault(str(pp.parent), {})[pp.name] = info
    for directory in sorted(by_dir, key=lambda d: (d.count("/"), d)):
        files = by_dir[directory]
        if any(all(n in files for n in needed) for needed in LAYOUTS.values()):
            return list(files.values())
    names = ", ".join(zf.namelist()[:20]) or "none"
    raise DataError(f"{zip_path}: archive holds no known MovieLens layout (members: {names})")


# ---------------------------------------------------------------- layouts


def _read_small_csv(path: Path, *, sep: str = ",", encoding: str = "utf-8", header: bool = True,
                    names: list[str] | None = None) -> pd.DataFrame:
    """A small metadata file as text columns; DataError naming the file when it cannot be parsed."""
    require_file(path)
    kwargs: dict[str, object] = {"dtype": "string", "keep_default_na": False}
    if not header:
        kwargs.update(header=None, names=names, quoting=csv.QUOTE_NONE)
    try:
        if len(sep) > 1:  # '::': decode ourselves (utf-8, else latin-1), then the python engine
            raw = path.read_bytes()
            try:
                text = raw.decode(encoding)
            except UnicodeDecodeError:
                text = raw.decode("latin-1")
            return pd.read_csv(io.StringIO(text), sep=sep, engine="python", **kwargs)
        return pd.read_csv(path, sep=sep, encoding=encoding, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: cannot parse: {exc}") from None


def _check_first_line(path: Path, sep: str, fields: int) -> None:
    """DataError when the first record of a headerless ratings file does not have ``fields`` fields."""
    with require_file(path).open("rb") as f:
        first = f.readline().decode("latin-1").rstrip("\r\n")
    found = len(first.split(sep))
    if found != fields:
        shown = "tab" if sep == "\t" else repr(sep)
        raise DataError(f"{path}: line 1 has {found} {shown}-separated field(s), expected {fields} ({first[:80]!r})")


def _read_tags(path: Path, item_col: str, tag_col: str, **kwargs: object) -> tuple[dict[str, list[str]], int]:
    """Aggregated tags per item and the raw tag-row count; empty when the file is absent."""
    if not path.is_file():
        return {}, 0
    frame = _read_small_csv(path, **kwargs)  # type: ignore[arg-type]
    check_columns(frame.columns, [item_col, tag_col], path)
    return aggregate_tags(frame[item_col], frame[tag_col]), len(frame)


def _read_csv_layout(folder: Path, layout: str, blocksize: str | int | None) -> _Read:
    ratings, movies, tags_path = folder / "ratings.csv", folder / "movies.csv", folder / "tags.csv"
    check_columns(csv_header(ratings), _CSV_RATINGS, ratings)
    interactions = lazy_csv(ratings, dtype="string", usecols=list(_CSV_RATINGS), blocksize=blocksize).rename(
        columns=_CSV_RATINGS
    )
    check_columns(csv_header(movies), ["movieId", "title", "genres"], movies)
    frame = _read_small_csv(movies)
    tags, tag_rows = _read_tags(tags_path, "movieId", "tag")
    items = make_items(frame["movieId"], frame["title"], split_list(frame["genres"], empty=_NO_GENRES), tags)
    files = [f.name for f in (ratings, movies, tags_path) if f.is_file()]
    return interactions, items, files, {"tag_rows": tag_rows}


def _read_dat_layout(folder: Path, layout: str, blocksize: str | int | None) -> _Read:
    ratings, movies, tags_path = folder / "ratings.dat", folder / "movies.dat", folder / "tags.dat"
    _check_first_line(ratings, "::", 4)
    # '::' split on ':' leaves an empty field between each pair: the fast C parser still applies.
    interactions = lazy_csv(
        ratings, sep=":", header=None, names=["user_id", "_1", "item_id", "_2", "value", "_3", "timestamp"],
        usecols=list(INTERACTION_COLUMNS), dtype="string", quoting=csv.QUOTE_NONE, encoding="latin-1",
        blocksize=blocksize,
    )
    encoding = "latin-1" if layout == "ml-1m" else "utf-8"
    frame = _read_small_csv(movies, sep="::", encoding=encoding, header=False, names=["item_id", "title", "genres"])
    tags, tag_rows = _read_tags(tags_path, "item_id", "tag", sep="::", header=False,
                                names=["user_id", "item_id", "tag", "timestamp"])
    items = make_items(frame["item_id"], frame["title"], split_list(frame["genres"], empty=_NO_GENRES), tags)
    files = [f.name for f in (ratings, movies, tags_path) if f.is_file()]
    return interactions, items, files, {"tag_rows": tag_rows}


def _read_100k(folder: Path, layout: str, blocksize: str | int | None) -> _Read:
    ratings, movies, genre_file = folder / "u.data", folder / "u.item", folder / "u.genre"
    _check_first_line(ratings, "\t", 4)
    interactions = lazy_csv(
        ratings, sep="\t", header=None, names=list(INTERACTION_COLUMNS), dtype="string",
        quoting=csv.QUOTE_NONE, blocksize=blocksize,
    )
    genres = list(_ML100K_GENRES)
    if genre_file.is_file() and genre_file.stat().st_size:
        table = _read_small_csv(genre_file, sep="|", encoding="latin-1", header=False, names=["genre", "index"])
        table = table[table["genre"].str.strip() != ""]
        genres = table.sort_values("index", key=lambda s: pd.to_numeric(s, errors="coerce"))["genre"].tolist()
    names = ["item_id", "title", "release_date", "video_release_date", "imdb_url", *genres]
    frame = _read_small_csv(movies, sep="|", encoding="latin-1", header=False, names=names)
    # "unknown" is ml-100k's flag for "no genre": the same as "(no genres listed)" elsewhere.
    flags = frame[[g for g in genres if g != "unknown"]].apply(lambda col: col.str.strip() == "1")
    genre_lists = flags.apply(lambda row: [str(g) for g in row.index[row.to_numpy(bool)]], axis=1)
    year = year_from_title(frame["title"])
    from_date = pd.to_numeric(frame["release_date"].str.strip().str[-4:], errors="coerce").astype("Int64")
    items = make_items(frame["item_id"], frame["title"], genre_lists, None, year.fillna(from_date))
    files = [f.name for f in (ratings, movies, genre_file) if f.is_file()]
    return interactions, items, files, {"tag_rows": 0}
