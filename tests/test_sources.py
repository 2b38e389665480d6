"""Sources: MovieLens layouts (folder and zip), generic CSV/Parquet, and the archive download."""

from __future__ import annotations

import functools
import hashlib
import http.server
import shutil
import socket
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from etl.errors import DataError, DownloadError
from etl.sources.base import INTERACTION_COLUMNS, ITEM_COLUMNS, RawSource
from etl.sources.download import ARCHIVES, MARKER, download_movielens, parse_md5_file
from etl.sources.movielens import read_movielens
from etl.sources.tabular import ItemColumns, read_interactions

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-latest-small"


# ---------------------------------------------------------------- miniature datasets


def write_latest_small(folder: Path) -> Path:
    """ml-latest-small style: CSV with headers, quoted titles, tags to aggregate."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,964981247\n2,1,abc,964982224\n3,6,,964983815\n"
    )
    (folder / "movies.csv").write_text(
        "movieId,title,genres\n"
        "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
        '3,"American President, The (1995)",Comedy|Drama|Romance\n'
        "6,Pirates of Silicon Valley,(no genres listed)\n"
        "7,Babylon 5 (1994-1998) ,Sci-Fi\n"
    )
    (folder / "tags.csv").write_text(
        "userId,movieId,tag,timestamp\n"
        "2,1,Pixar,1445714994\n3,1,funny,1445714996\n4,1, pixar ,1445714997\n5,1,PIXAR,1445714998\n"
        '6,1,"clever, witty",1445714999\n7,3,politics,1445715000\n8,99,orphan,1445715001\n'
    )
    return folder


def write_ml1m(folder: Path) -> Path:
    """ml-1m style: '::' separated, latin-1 titles, no header, no tags."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.dat").write_text("1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n")
    (folder / "movies.dat").write_bytes(
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
        "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
        "2000::Cité des enfants perdus, La (1995)::Adventure|Sci-Fi\n".encode("latin-1")
    )
    (folder / "users.dat").write_text("1::F::1::10::48067\n")
    return folder


def write_ml10m(folder: Path) -> Path:
    """ml-10m style: '::' separated with tags.dat, half-star ratings, titles with ':' in them."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.dat").write_text("1::122::5::838985046\n1::185::4.5::838983525\n2::122::0.5::838983392\n")
    (folder / "movies.dat").write_text(
        "122::Boomerang (1992)::Comedy|Romance\n185::Star Wars: Episode IV - A New Hope (1977)::Action|Sci-Fi\n"
    )
    (folder / "tags.dat").write_text(
        "15::185::classic::1215184630\n20::185::space opera::1188263867\n21::185::Classic::1188263868\n"
    )
    return folder


def write_ml100k(folder: Path) -> Path:
    """ml-100k style: tab-separated u.data, pipe-separated u.item with 19 genre flags."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.data").write_text("196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n")
    flags = {
        242: [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # Comedy
        302: [0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0],  # Crime Drama Film-Noir Mystery Thriller
        377: [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # unknown
    }
    titles = {242: "Kolya (1996)", 302: "L.A. Confidential (1997)", 377: "unknown"}
    dates = {242: "24-Jan-1997", 302: "01-Jan-1997", 377: "01-Jan-1994"}
    lines = [
        "|".join([str(i), titles[i], dates[i], "", "http://us.imdb.com/x", *map(str, f)]) for i, f in flags.items()
    ]
    (folder / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    return folder


def zip_folder(folder: Path, zip_path: Path, top: str | None = None) -> Path:
    """Zip a folder's files, under one top folder (as GroupLens does) or at the root."""
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        if top:
            zf.writestr(f"{top}/", "")
        for f in sorted(folder.iterdir()):
            zf.write(f, f"{top}/{f.name}" if top else f.name)
    return zip_path


def as_pandas(src: RawSource) -> pd.DataFrame:
    return src.interactions.compute().reset_index(drop=True)


def item(src: RawSource, item_id: str) -> pd.Series:
    assert src.items is not None
    rows = src.items[src.items["item_id"] == item_id]
    assert len(rows) == 1, item_id
    return rows.iloc[0]


# ---------------------------------------------------------------- MovieLens layouts


def test_csv_layout_reads_text_and_aggregates_metadata(tmp_path: Path) -> None:
    src = read_movielens(write_latest_small(tmp_path / "ml-latest-small"))
    assert src.name == "movielens:ml-latest-small"
    assert (src.value_range, src.numeric_ids, src.header_lines) == ((0.5, 5.0), True, 1)
    assert src.extra["layout"] == "csv" and src.extra["tag_rows"] == 7
    assert src.extra["files"] == ["ratings.csv", "movies.csv", "tags.csv"]
    frame = as_pandas(src)
    assert list(frame.columns) == list(INTERACTION_COLUMNS)
    assert all(pd.api.types.is_string_dtype(t) for t in frame.dtypes)
    # Values stay as text for ingest to judge: the bad rating and the missing one survive.
    assert frame["value"].tolist()[:3] == ["4.0", "4.5", "abc"]
    assert frame["value"].isna().tolist() == [False, False, False, True]
    assert frame["user_id"].tolist() == ["1", "1", "2", "3"]

    assert list(src.items.columns) == list(ITEM_COLUMNS)
    assert str(src.items["year"].dtype) == "Int64"
    toy = item(src, "1")
    assert toy["title"] == "Toy Story (1995)" and toy["year"] == 1995
    assert toy["genres"] == ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]
    assert toy["tags"] == ["pixar", "clever, witty", "funny"]  # 3x pixar first, ties by name
    president = item(src, "3")
    assert president["title"] == "American President, The (1995)" and president["tags"] == ["politics"]
    pirates = item(src, "6")
    assert pirates["genres"] == [] and pirates["tags"] == [] and pd.isna(pirates["year"])
    assert item(src, "7")["year"] == 1994  # a year range gives its first year
    assert "99" not in set(src.items["item_id"])  # tags of unknown movies do not invent items


def test_ml1m_layout(tmp_path: Path) -> None:
    src = read_movielens(write_ml1m(tmp_path / "ml-1m"))
    assert src.extra["layout"] == "ml-1m" and src.extra["tag_rows"] == 0
    assert (src.value_range, src.header_lines) == ((1.0, 5.0), 0)
    frame = as_pandas(src)
    assert frame.values.tolist() == [
        ["1", "1193", "5", "978300760"], ["1", "661", "3", "978302109"], ["2", "1193", "4", "978298413"]
    ]
    assert item(src, "2000")["title"] == "Cité des enfants perdus, La (1995)"
    assert item(src, "661")["genres"] == ["Animation", "Children's", "Musical"]
    assert all(t == [] for t in src.items["tags"])


def test_ml10m_layout(tmp_path: Path) -> None:
    src = read_movielens(write_ml10m(tmp_path / "ml-10M100K"), blocksize=30)
    assert src.interactions.npartitions > 1  # really partitioned, and still in source order
    assert src.extra["layout"] == "ml-10m" and src.value_range == (0.5, 5.0)
    frame = as_pandas(src)
    assert frame["value"].tolist() == ["5", "4.5", "0.5"]
    assert frame["item_id"].tolist() == ["122", "185", "122"]
    star_wars = item(src, "185")
    assert star_wars["title"] == "Star Wars: Episode IV - A New Hope (1977)" and star_wars["year"] == 1977
    assert star_wars["tags"] == ["classic", "space opera"]
    assert src.extra["tag_rows"] == 3


def test_ml100k_layout(tmp_path: Path) -> None:
    src = read_movielens(write_ml100k(tmp_path / "ml-100k"))
    assert src.extra["layout"] == "ml-100k" and src.value_range == (1.0, 5.0) and src.header_lines == 0
    assert as_pandas(src)["item_id"].tolist() == ["242", "302", "377"]
    assert item(src, "242")["genres"] == ["Comedy"]
    assert item(src, "302")["genres"] == ["Crime", "Drama", "Film-Noir", "Mystery", "Thriller"]
    assert item(src, "302")["year"] == 1997
    unknown = item(src, "377")
    assert unknown["genres"] == [] and unknown["year"] == 1994  # from the release date


@pytest.mark.parametrize("top", ["ml-latest-small", None])
def test_zip_of_a_layout_reads_like_the_folder(tmp_path: Path, top: str | None) -> None:
    folder = write_latest_small(tmp_path / "src")
    zpath = zip_folder(folder, tmp_path / "ml-latest-small.zip", top)
    cache = tmp_path / "cache"
    src = read_movielens(zpath, cache_dir=cache)
    assert src.name == "movielens:ml-latest-small"
    pd.testing.assert_frame_equal(as_pandas(src), as_pandas(read_movielens(folder)))
    assert item(src, "1")["tags"][0] == "pixar"
    assert read_movielens(zpath, cache_dir=cache).extra["folder"] == src.extra["folder"]  # unpacked once


def test_folder_holding_the_unpacked_top_folder(tmp_path: Path) -> None:
    write_ml1m(tmp_path / "download" / "ml-1m")
    assert read_movielens(tmp_path / "download").extra["layout"] == "ml-1m"


def test_truncated_zip_is_a_data_error(tmp_path: Path) -> None:
    zpath = zip_folder(write_latest_small(tmp_path / "src"), tmp_path / "ml-latest-small.zip", "ml-latest-small")
    data = zpath.read_bytes()
    zpath.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"ml-latest-small\.zip.*is not a valid zip archive \(truncated or corrupt\?\)"):
        read_movielens(zpath, cache_dir=tmp_path / "cache")


def test_empty_ratings_file_is_a_data_error(tmp_path: Path) -> None:
    folder = write_latest_small(tmp_path / "ml")
    (folder / "ratings.csv").write_text("")
    with pytest.raises(DataError, match=r"ratings\.csv.*empty"):
        read_movielens(folder)


def test_missing_column_is_named(tmp_path: Path) -> None:
    folder = write_latest_small(tmp_path / "ml")
    (folder / "ratings.csv").write_text("userId,movieId,timestamp\n1,1,964982703\n")
    with pytest.raises(DataError, match=r"ratings\.csv: missing column\(s\) 'rating'.*userId, movieId, timestamp"):
        read_movielens(folder)


def test_wrong_separator_in_dat_file_is_a_data_error(tmp_path: Path) -> None:
    folder = write_ml1m(tmp_path / "ml-1m")
    (folder / "ratings.dat").write_text("1,1193,5,978300760\n")
    with pytest.raises(DataError, match=r"ratings\.dat: line 1 has 1 '::'-separated field\(s\), expected 4"):
        read_movielens(folder)


def test_unknown_layout_and_missing_path(tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match=r"not a known MovieLens layout \(files found: notes\.txt"):
        read_movielens(tmp_path / "other")
    with pytest.raises(DataError, match="no such file or folder"):
        read_movielens(tmp_path / "absent")


# ---------------------------------------------------------------- generic CSV / Parquet


def test_csv_column_mapping_with_defaults(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("who,what,when\nu1,i9,5\nu2,i9,3\nu1,i3,4\nu3,i1,1\n")
    src = read_interactions(path, user="who", item="what", blocksize=20)
    assert src.interactions.npartitions > 1
    frame = as_pandas(src)
    assert list(frame.columns) == list(INTERACTION_COLUMNS)
    assert frame["user_id"].tolist() == ["u1", "u2", "u1", "u3"]
    assert frame["value"].tolist() == [1.0] * 4
    assert frame["timestamp"].tolist() == [0, 1, 2, 3]  # row order across partitions
    assert (src.numeric_ids, src.value_range, src.header_lines) == (False, None, 1)

    timed = as_pandas(read_interactions(path, user="who", item="what", timestamp="when"))
    assert timed["timestamp"].tolist() == ["5", "3", "4", "1"]


def test_missing_mapped_column_lists_found_columns(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("who,what\nu1,i9\n")
    with pytest.raises(DataError, match=r"missing column\(s\) 'rating' \(columns found: who, what\)"):
        read_interactions(path, user="who", item="what", value="rating")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match=r"empty\.csv: file is empty"):
        read_interactions(empty)


def test_parquet_mapping_and_items(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    pd.DataFrame({"u": [10, 11], "i": ["a", "b"], "stars": [4.0, 2.5], "ts": [100, 50]}).to_parquet(path)
    items_path = tmp_path / "items.csv"
    items_path.write_text("id,name,kind,labels\na,Alpha (2001),Drama;Comedy,Good;good;Dark\nb,Beta,,\n")
    src = read_interactions(
        path, user="u", item="i", value="stars", timestamp="ts", items=items_path,
        item_columns=ItemColumns(id="id", title="name", genres="kind", tags="labels", list_sep=";"),
    )
    frame = as_pandas(src)
    assert frame["value"].tolist() == [4.0, 2.5] and frame["timestamp"].tolist() == [100, 50]
    assert src.header_lines == 0 and src.extra["format"] == "parquet"
    alpha = item(src, "a")
    assert alpha["genres"] == ["Drama", "Comedy"] and alpha["tags"] == ["good", "dark"] and alpha["year"] == 2001
    beta = item(src, "b")
    assert beta["genres"] == [] and beta["tags"] == [] and pd.isna(beta["year"])
    with pytest.raises(DataError, match=r"missing column\(s\) 'user'"):
        read_interactions(path, user="user", item="i")


def test_unknown_suffix_asks_for_fmt(tmp_path: Path) -> None:
    path = tmp_path / "events.bin"
    path.write_text("user_id,item_id\n1,2\n")
    with pytest.raises(DataError, match="pass fmt="):
        read_interactions(path)
    assert as_pandas(read_interactions(path, fmt="csv"))["item_id"].tolist() == ["2"]


# ---------------------------------------------------------------- download


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        self.server.requests.append(self.path)  # type: ignore[attr-defined]
        super().do_GET()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    """A real HTTP server on loopback serving tmp_path/www: (base URL, its folder, request log)."""
    root = tmp_path / "www"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(root)))
    httpd.requests = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root, httpd.requests  # type: ignore[attr-defined]
    finally:
        httpd.shutdown()
        httpd.server_close()


def publish(root: Path, tmp_path: Path, md5_text: str | None = None) -> str:
    """Put a miniature ml-latest-small.zip and its .md5 (GroupLens format) on the server."""
    zpath = zip_folder(write_latest_small(tmp_path / "pub"), root / "ml-latest-small.zip", "ml-latest-small")
    digest = hashlib.md5(zpath.read_bytes()).hexdigest()
    (root / "ml-latest-small.zip.md5").write_text(md5_text or f"MD5 (ml-latest-small.zip) = {digest}\n")
    return digest


def test_download_verifies_unpacks_and_is_idempotent(server, tmp_path: Path) -> None:
    base, root, requests = server
    publish(root, tmp_path)
    dest = tmp_path / "data"
    folder = download_movielens("ml-latest-small", dest, base_url=base)
    assert folder == dest / "ml-latest-small" and (folder / MARKER).is_file()
    assert not list(dest.glob("*.part"))
    assert read_movielens(folder).extra["tag_rows"] == 7
    assert requests == ["/ml-latest-small.zip.md5", "/ml-latest-small.zip"]
    assert download_movielens("ml-latest-small", dest, base_url=base) == folder
    assert len(requests) == 2  # already present and verified: no network at all


def test_download_accepts_md5sum_format_and_env_url(server, tmp_path: Path, monkeypatch) -> None:
    base, root, _ = server
    zpath = zip_folder(write_ml1m(tmp_path / "pub"), root / "ml-latest-small.zip", "ml-latest-small")
    digest = hashlib.md5(zpath.read_bytes()).hexdigest()
    (root / "ml-latest-small.zip.md5").write_text(f"{digest.upper()}  ml-latest-small.zip\n")
    monkeypatch.setenv("HYBRIDREC_MOVIELENS_URL", base)
    folder = download_movielens("ml-latest-small", tmp_path / "data")
    assert (folder / "ratings.dat").is_file()


def test_download_checksum_mismatch(server, tmp_path: Path) -> None:
    base, root, _ = server
    actual = publish(root, tmp_path, md5_text="MD5 (ml-latest-small.zip) = " + "0" * 32 + "\n")
    dest = tmp_path / "data"
    with pytest.raises(DownloadError, match=f"checksum mismatch.*expected md5 {'0' * 32}, got {actual}"):
        download_movielens("ml-latest-small", dest, base_url=base)
    assert not (dest / "ml-latest-small").exists() and not list(dest.glob("*.zip*"))


def test_download_bad_zip(server, tmp_path: Path) -> None:
    base, root, _ = server
    (root / "ml-latest-small.zip").write_bytes(b"PK\x03\x04 not really a zip")
    digest = hashlib.md5((root / "ml-latest-small.zip").read_bytes()).hexdigest()
    (root / "ml-latest-small.zip.md5").write_text(f"MD5 (ml-latest-small.zip) = {digest}\n")
    with pytest.raises(DownloadError, match="not a valid zip archive"):
        download_movielens("ml-latest-small", tmp_path / "data", base_url=base)


def test_download_http_404_names_url(server, tmp_path: Path) -> None:
    base, _, _ = server
    with pytest.raises(DownloadError, match=r"could not download http://127\.0\.0\.1:\d+/ml-latest-small\.zip\.md5: HTTP 404"):
        download_movielens("ml-latest-small", tmp_path / "data", base_url=base)


def test_download_unreachable_server(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # The port is closed now: the connection is refused.
    with pytest.raises(DownloadError) as info:
        download_movielens("ml-100k", tmp_path / "data", base_url=f"http://127.0.0.1:{port}/movielens", timeout=5)
    message = str(info.value)
    assert f"could not download http://127.0.0.1:{port}/movielens/ml-100k.zip.md5: " in message
    assert "refused" in message.lower() and "HYBRIDREC_DATA" in message


# ---------------------------------------------------------------- the demo's data, prepared once


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_prepare_data_downloads_once_then_reuses_without_network(server, tmp_path: Path, monkeypatch, capsys) -> None:
    from cluster.jobs import PREPARED_FILE, prepare_data

    base, root, requests = server
    publish(root, tmp_path)
    monkeypatch.delenv("HYBRIDREC_DATA", raising=False)
    monkeypatch.setenv("HYBRIDREC_MOVIELENS_URL", base)
    raw = tmp_path / "raw"
    folder = prepare_data(raw)
    assert folder == raw / "ml-latest-small" and (raw / PREPARED_FILE).is_file()
    assert "data: ml-latest-small downloaded from GroupLens (checksum verified)" in capsys.readouterr().err
    assert prepare_data(raw) == folder
    assert "data: reusing ml-latest-small downloaded" in capsys.readouterr().err
    assert requests == ["/ml-latest-small.zip.md5", "/ml-latest-small.zip"]  # the second call: no network


def test_prepare_data_falls_back_to_synthetic_and_keeps_it(server, tmp_path: Path, monkeypatch, capsys) -> None:
    from cluster.jobs import prepare_data, read_source

    base, root, requests = server
    monkeypatch.delenv("HYBRIDREC_DATA", raising=False)
    monkeypatch.setenv("HYBRIDREC_MOVIELENS_URL", f"http://127.0.0.1:{_closed_port()}/movielens")
    raw = tmp_path / "raw"
    folder = prepare_data(raw, synthetic_interactions=600)
    err = capsys.readouterr().err
    assert "data: download failed (could not download" in err and "using the synthetic generator instead" in err
    source = read_source(folder)
    assert source.name == "synthetic:seed=0,n=600" and len(source.interactions) == 600
    written = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}
    publish(root, tmp_path)  # the network is back: the prepared synthetic data is still what is used
    monkeypatch.setenv("HYBRIDREC_MOVIELENS_URL", base)
    assert prepare_data(raw, synthetic_interactions=900) == folder
    assert "data: reusing synthetic MovieLens-like data (600 interactions, seed 0)" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == written and requests == []
    shutil.rmtree(folder)  # the marker names a folder that is gone: prepared again (now downloaded)
    assert prepare_data(raw) == raw / "ml-latest-small"
    assert "is gone; preparing the data again" in capsys.readouterr().err


def test_prepare_data_uses_the_operators_data(tmp_path: Path, monkeypatch, capsys) -> None:
    from cluster.jobs import prepare_data

    own = write_latest_small(tmp_path / "mounted")
    monkeypatch.setenv("HYBRIDREC_DATA", str(own))
    monkeypatch.setenv("HYBRIDREC_MOVIELENS_URL", f"http://127.0.0.1:{_closed_port()}/movielens")
    raw = tmp_path / "raw"
    assert prepare_data(raw) == own and not raw.exists()
    assert f"data: using HYBRIDREC_DATA={own}" in capsys.readouterr().err
    monkeypatch.setenv("HYBRIDREC_DATA", str(tmp_path / "not-mounted"))
    with pytest.raises(DataError, match="not-mounted: no such file or folder"):
        prepare_data(raw)


def test_download_unknown_name_lists_known() -> None:
    with pytest.raises(ValueError, match=r"unknown MovieLens archive 'ml-5m'; known: ml-latest-small, ml-100k"):
        download_movielens("ml-5m", "/nonexistent")
    assert ARCHIVES["ml-10m"].folder == "ml-10M100K"
    assert ARCHIVES["ml-25m"].url("https://x/y/") == "https://x/y/ml-25m.zip"


@pytest.mark.parametrize(
    "text", ["MD5 (ml-25m.zip) = 6b51fb2759a8657d3bfcbfc42b592ada\n", "6B51FB2759A8657D3BFCBFC42B592ADA  ml-25m.zip"]
)
def test_parse_md5_file_formats(text: str) -> None:
    assert parse_md5_file(text) == "6b51fb2759a8657d3bfcbfc42b592ada"


def test_parse_md5_file_without_digest() -> None:
    with pytest.raises(DownloadError, match="no md5 digest"):
        parse_md5_file("<html>not found</html>")


# ---------------------------------------------------------------- real data


@pytest.mark.realdata
def test_real_ml_latest_small() -> None:
    if not (REAL_DATA / "ratings.csv").is_file():
        pytest.skip(f"real data not found at {REAL_DATA}")
    src = read_movielens(REAL_DATA, blocksize="1MB")
    assert src.interactions.npartitions > 1
    frame = src.interactions.compute()
    assert len(frame) == 100_836
    assert frame["user_id"].nunique() == 610
    assert frame["value"].isna().sum() == 0
    assert len(src.items) == 9_742 and src.items["item_id"].is_unique
    assert src.extra["tag_rows"] == 3_683
    toy = item(src, "1")
    assert toy["year"] == 1995 and "pixar" in toy["tags"]
    assert src.items["year"].isna().sum() < 30
    assert sum(len(t) > 0 for t in src.items["tags"]) > 1_500


def test_single_non_zip_file_is_a_data_error(tmp_path: Path) -> None:
    folder = write_latest_small(tmp_path / "ml")
    with pytest.raises(DataError, match=r"ratings\.csv: expected a MovieLens folder or \.zip"):
        read_movielens(folder / "ratings.csv")


def test_tsv_and_gzip_csv(tmp_path: Path) -> None:
    tsv = tmp_path / "events.tsv"
    tsv.write_text("user_id\titem_id\nu1\ti1\n")
    assert as_pandas(read_interactions(tsv))["item_id"].tolist() == ["i1"]
    gz = tmp_path / "events.csv.gz"
    pd.DataFrame({"user_id": ["u1", "u2"], "item_id": ["a", "b"]}).to_csv(gz, index=False)
    assert as_pandas(read_interactions(gz))["user_id"].tolist() == ["u1", "u2"]
