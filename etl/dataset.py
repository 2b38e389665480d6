"""The dataset folder written by ingest and read by every training job.

Layout::

    manifest.json                 counts, rejections, content hash, source facts
    vocab/users.json              external user ids in row order (etl.vocabulary; a dataset
    vocab/items.json              ingested before holds Parquet vocabularies, which still load)
    items.parquet                 one row per item row: item_id, title, genres, tags, year,
                                  count, mean_rating
    interactions/<split>/*.parquet  user (int32 row), item (int32 row), value (float32),
                                  timestamp (int64), one folder per split

Splits (../shared/DESIGN.md): ``fit`` and ``validation`` together are the train part; ``test`` is
the held-out tail. ``train`` reads fit and validation together.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fsspec
import numpy as np
import scipy.sparse as sp

from etl.errors import DataError
from etl.vocabulary import Vocabulary

if TYPE_CHECKING:  # dask.dataframe and pandas are imported where they are used: the API imports neither
    import dask.dataframe as dd
    import pandas as pd

STORED_SPLITS: tuple[str, ...] = ("fit", "validation", "test")
SPLITS: tuple[str, ...] = (*STORED_SPLITS, "train")
INTERACTION_DTYPES: dict[str, str] = {
    "user": "int32",
    "item": "int32",
    "value": "float32",
    "timestamp": "int64",
}


def split_parts(split: str) -> tuple[str, ...]:
    """The stored splits that make up ``split``."""
    if split == "train":
        return ("fit", "validation")
    if split not in STORED_SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return (split,)


@dataclass(frozen=True)
class Dataset:
    """A read-only view of a dataset folder (a local path or an fsspec URL)."""

    path: str

    @classmethod
    def open(cls, path: str | Path) -> Dataset:
        ds = cls(str(path).rstrip("/"))
        fs, root = fsspec.core.url_to_fs(ds.path)
        if not fs.exists(f"{root}/manifest.json"):
            raise DataError(f"{path} is not a hybridrec dataset: manifest.json is missing (run `hybridrec data ingest`)")
        return ds

    def _url(self, *parts: str) -> str:
        return "/".join([self.path, *parts])

    @cached_property
    def manifest(self) -> dict[str, Any]:
        with fsspec.open(self._url("manifest.json"), "r") as fh:
            return json.load(fh)

    @cached_property
    def users(self) -> Vocabulary:
        return self._vocabulary("users", "user")

    @cached_property
    def items(self) -> Vocabulary:
        return self._vocabulary("items", "item")

    def _vocabulary(self, name: str, kind: str) -> Vocabulary:
        """vocab/<name>.json, or the Parquet file a dataset ingested before holds."""
        fs, root = fsspec.core.url_to_fs(self._url("vocab"))
        path = f"{root}/{name}.json"
        if not fs.exists(path):
            path = f"{root}/{name}.parquet"
        with fs.open(path, "rb") as fh:
            return Vocabulary.load(fh, kind=kind)

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @cached_property
    def items_table(self) -> pd.DataFrame:
        """Item metadata in item-row order (index = item row)."""
        import pandas as pd

        with fsspec.open(self._url("items.parquet"), "rb") as fh:
            return pd.read_parquet(fh)

    def read(self, split: str) -> dd.DataFrame:
        """Interactions of a split as a partitioned Dask frame (columns of INTERACTION_DTYPES)."""
        import dask.dataframe as dd

        frames = [
            dd.read_parquet(self._url("interactions", part), columns=list(INTERACTION_DTYPES))
            for part in split_parts(split)
        ]
        return frames[0] if len(frames) == 1 else dd.concat(frames)

    def load(self, split: str) -> pd.DataFrame:
        """Interactions of a split in one pandas frame: for small data and tests only."""
        return self.read(split).compute().reset_index(drop=True)

    def matrix(self, split: str, values: str = "value", ordered: bool = False) -> sp.csr_matrix:
        """users x items CSR of a split; ``values='ones'`` gives binary entries.

        ``ordered``: each row's entries stored in time order (timestamp, then item row), the order
        a fold-in reads a history in; such a matrix is not canonical on purpose (never call
        ``sort_indices`` on it). Otherwise rows are canonical (sorted item rows). Built partition by
        partition into COO pieces, so peak memory is the sparse matrix itself (12 bytes per
        interaction, 20 when ordered), never a dense users x items array.
        """
        if values not in ("value", "ones"):
            raise ValueError(f"values must be 'value' or 'ones', not {values!r}")
        cols = ["user", "item"] + (["value"] if values == "value" else []) + (["timestamp"] if ordered else [])
        parts = self.read(split)[cols].to_delayed()
        rows, cols_, data, times = [], [], [], []
        for frame in (p.compute() for p in parts):
            rows.append(frame["user"].to_numpy(np.int32))
            cols_.append(frame["item"].to_numpy(np.int32))
            data.append(frame["value"].to_numpy(np.float32) if values == "value" else np.ones(len(frame), np.float32))
            if ordered:
                times.append(frame["timestamp"].to_numpy(np.int64))
        cat = (lambda xs, dt: np.concatenate(xs) if xs else np.zeros(0, dt))
        u, i, v = cat(rows, np.int32), cat(cols_, np.int32), cat(data, np.float32)
        if ordered:  # ingest leaves one entry per (user, item): no duplicates to sum
            order = np.lexsort((i, cat(times, np.int64), u))
            u, i, v = u[order], i[order], v[order]
            indptr = np.concatenate([[0], np.cumsum(np.bincount(u, minlength=self.n_users))])
            return sp.csr_matrix((v, i, indptr), shape=(self.n_users, self.n_items))
        csr = sp.coo_matrix((v, (u, i)), shape=(self.n_users, self.n_items)).tocsr()
        csr.sum_duplicates()
        return csr

    def newest_timestamp(self, split: str) -> int | None:
        """The timestamp of a split's newest interaction (None when the split is empty), read
        partition by partition."""
        newest = self.read(split)["timestamp"].max().compute()
        return None if newest is None or newest != newest else int(newest)  # NaN: an empty split

    def count(self, split: str) -> int:
        """Interactions in a split, from the manifest."""
        return int(sum(self.manifest["splits"][part] for part in split_parts(split)))
