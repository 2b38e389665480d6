"""Fetch, verify and unpack the GroupLens MovieLens archives.

GroupLens publishes ``<name>.zip.md5`` beside every zip; that digest is fetched and checked, as is
an md5/sha256 pinned below where the published value is known (the archives of fixed releases;
ml-latest and ml-latest-small are re-released, so they are checked against the server only).
A download streams to ``<name>.zip.part`` and is renamed only once complete and verified, so an
interrupted run never leaves a zip that looks whole. A verified, unpacked dataset is marked and
not fetched again.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from etl.errors import DownloadError

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://files.grouplens.org/datasets/movielens"
#: Overrides the server (a mirror, or a local test server).
BASE_URL_ENV = "HYBRIDREC_MOVIELENS_URL"
#: Written into the dataset folder once it is unpacked from a verified archive.
MARKER = ".hybridrec-download.json"
_HINT = "(no network? set HYBRIDREC_DATA to a local copy)"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Archive:
    """One GroupLens archive."""

    name: str
    """Registry name and zip stem, e.g. 'ml-25m'."""
    folder: str
    """The folder the zip unpacks to (ml-10m unpacks to ml-10M100K)."""
    md5: str | None = None
    """md5 of the zip as GroupLens publishes it, when pinned; None: only the server's .md5."""
    sha256: str | None = None
    """sha256 of the zip, when known for sure."""

    def url(self, base_url: str) -> str:
        return f"{base_url.rstrip('/')}/{self.name}.zip"


# md5 values: GroupLens's published <name>.zip.md5 files (fixed releases only).
ARCHIVES: dict[str, Archive] = {
    a.name: a
    for a in (
        Archive("ml-latest-small", "ml-latest-small"),
        Archive("ml-100k", "ml-100k", md5="0e33842e24a9c977be4e0107933c0723"),
        Archive("ml-1m", "ml-1m", md5="c4d9eecfca2ab87c1945afe126590906"),
        Archive("ml-10m", "ml-10M100K", md5="ce571fd55effeba0271552578f2648bd"),
        Archive("ml-20m", "ml-20m", md5="cd245b17a1ae2cc31bb14903e1204af3"),
        Archive("ml-25m", "ml-25m", md5="6b51fb2759a8657d3bfcbfc42b592ada"),
        Archive("ml-latest", "ml-latest"),
    )
}


def download_movielens(
    name: str, dest_dir: str | Path, *, base_url: str | None = None, timeout: float = 30
) -> Path:
    """Download, verify and unpack a MovieLens archive into ``dest_dir``; the dataset folder.

    Does nothing (no network) when the folder is already there from a verified download.
    ``base_url`` (else $HYBRIDREC_MOVIELENS_URL, else GroupLens) is the folder holding the zips.
    """
    if name not in ARCHIVES:
        raise ValueError(f"unknown MovieLens archive {name!r}; known: {', '.join(ARCHIVES)}")
    archive = ARCHIVES[name]
    dest = Path(dest_dir)
    folder = dest / archive.folder
    if (folder / MARKER).is_file():
        return folder
    url = archive.url(base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL)
    expected = {"md5": _published_md5(url, archive, timeout)}
    if archive.md5 and archive.md5 != expected["md5"]:
        raise DownloadError(
            f"checksum mismatch for {url}: the server's .md5 says {expected['md5']}, expected {archive.md5}"
        )
    if archive.sha256:
        expected["sha256"] = archive.sha256
    dest.mkdir(parents=True, exist_ok=True)
    zip_path = dest / f"{name}.zip"
    if not (zip_path.is_file() and _matches(_digests(zip_path), expected)):
        _fetch(url, zip_path, expected, timeout)
    _unpack(zip_path, folder)
    (folder / MARKER).write_text(json.dumps({"name": name, "url": url, **expected}, indent=1))
    return folder


def parse_md5_file(text: str, source: str = "md5 file") -> str:
    """The digest in a .md5 file: "MD5 (x.zip) = <hex>" (GroupLens) or "<hex>  x.zip" (md5sum)."""
    match = re.search(r"(?<![0-9a-fA-F])([0-9a-fA-F]{32})(?![0-9a-fA-F])", text)
    if not match:
        raise DownloadError(f"{source} holds no md5 digest: {text[:80]!r}")
    return match.group(1).lower()


def _failure(url: str, exc: BaseException, timeout: float) -> DownloadError:
    """A DownloadError that says which URL failed, why, and what to do."""
    if isinstance(exc, urllib.error.HTTPError):
        reason = f"HTTP {exc.code} {exc.reason}"
    elif isinstance(exc, urllib.error.URLError):
        reason = str(exc.reason)
    elif isinstance(exc, (TimeoutError, socket.timeout)):
        reason = f"timed out after {timeout:g}s"
    else:
        reason = str(exc) or type(exc).__name__
    return DownloadError(f"could not download {url}: {reason} {_HINT}")


def _open(url: str, timeout: float) -> http.client.HTTPResponse:
    try:
        return urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 - http(s) only, see below
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise _failure(url, exc, timeout) from exc


def _published_md5(url: str, archive: Archive, timeout: float) -> str:
    """The md5 GroupLens publishes beside the zip; the pinned one if only the .md5 is missing."""
    md5_url = url + ".md5"
    if not md5_url.startswith(("http://", "https://", "file://")):
        raise DownloadError(f"could not download {md5_url}: not an http(s) URL {_HINT}")
    try:
        with _open(md5_url, timeout) as resp:
            text = resp.read(4096).decode("ascii", "replace")
    except DownloadError as exc:
        if archive.md5 and isinstance(exc.__cause__, urllib.error.HTTPError):
            log.warning("%s; using the pinned md5 %s", exc, archive.md5)
            return archive.md5
        raise
    except (OSError, http.client.HTTPException) as exc:
        raise _failure(md5_url, exc, timeout) from exc
    return parse_md5_file(text, md5_url)


def _digests(path: Path) -> dict[str, str]:
    md5, sha = hashlib.md5(), hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            md5.update(chunk)
            sha.update(chunk)
    return {"md5": md5.hexdigest(), "sha256": sha.hexdigest()}


def _matches(actual: dict[str, str], expected: dict[str, str]) -> bool:
    return all(actual[k] == v.lower() for k, v in expected.items())


def _fetch(url: str, zip_path: Path, expected: dict[str, str], timeout: float) -> None:
    """Stream the zip to a .part file, verify it, then move it into place."""
    part = zip_path.with_name(zip_path.name + ".part")
    md5, sha = hashlib.md5(), hashlib.sha256()
    size = 0
    log.info("downloading %s", url)
    try:
        with _open(url, timeout) as resp, part.open("wb") as out:
            length = resp.headers.get("Content-Length")
            for chunk in iter(lambda: resp.read(_CHUNK), b""):
                out.write(chunk)
                md5.update(chunk)
                sha.update(chunk)
                size += len(chunk)
        if length is not None and size != int(length):
            raise DownloadError(f"could not download {url}: got {size} of {length} bytes (connection cut?) {_HINT}")
    except (OSError, http.client.HTTPException) as exc:
        part.unlink(missing_ok=True)
        raise _failure(url, exc, timeout) from exc
    except DownloadError:
        part.unlink(missing_ok=True)
        raise
    actual = {"md5": md5.hexdigest(), "sha256": sha.hexdigest()}
    for kind, want in expected.items():
        if actual[kind] != want.lower():
            part.unlink(missing_ok=True)
            raise DownloadError(
                f"checksum mismatch for {url}: expected {kind} {want.lower()}, got {actual[kind]} "
                f"(the download was removed; try again)"
            )
    part.replace(zip_path)


def _unpack(zip_path: Path, folder: Path) -> None:
    """Unpack the zip so that its content ends up as ``folder`` (its one top folder, or all of it)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.unpack.", dir=folder.parent))
    try:
        try:
            with zipfile.ZipFile(zip_path) as zf:
                zf.extractall(tmp)
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise DownloadError(f"{zip_path}: is not a valid zip archive (truncated or corrupt?): {exc}") from None
        top = [p for p in tmp.iterdir() if PurePosixPath(p.name).name != "__MACOSX"]
        root = top[0] if len(top) == 1 and top[0].is_dir() else tmp
        if folder.exists():  # an unverified copy (no marker): replaced by the verified one
            shutil.rmtree(folder)
        root.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
