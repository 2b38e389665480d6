"""Item metadata -> the content signal's unit item rows, with what training fitted: the feature
vocabulary of each field, its IDF, the field weights and the SVD basis.

An item added after training (``upsertItems``) is embedded by the same arithmetic as the trained
items (``ContentVectorizer.embed`` of the training table gives the trained ``embedding_`` back to
float rounding), with numpy and scipy only: serving never needs scikit-learn for it.
Tokens the vocabulary does not know are ignored (a new tag counts once it is in a training run).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from etl.jsonable import is_missing

if TYPE_CHECKING:
    import pandas as pd

    ItemColumns = pd.DataFrame | Mapping[str, Sequence[Any]]
    """An items table: a pandas frame (training's), or a dict of equal-length columns (serving's)."""

__all__ = ["FIELDS", "ContentVectorizer", "item_tokens", "project"]

FIELDS: tuple[str, ...] = ("genres", "tags", "title", "decade")
_YEAR_SUFFIX = re.compile(r"\s*\(\s*\d{4}(?:\s*-\s*\d{0,4})?\s*\)\s*$")
_WORD = re.compile(r"[a-z0-9]{2,}")


def table_rows(items: ItemColumns) -> int:
    """How many items a table holds."""
    return len(next(iter(items.values()), ())) if isinstance(items, Mapping) else len(items)


def item_tokens(items: ItemColumns, field: str, drop_stop_words: bool = True) -> list[list[str]]:
    """The tokens of one field for every item row, e.g. ['genre:Comedy', 'genre:Romance'].

    ``drop_stop_words``: leave out title words in scikit-learn's English stop-word list (which is
    imported for it). A fitted vocabulary never holds them, so ``ContentVectorizer.features``
    passes False: the same features, and a server that embeds added items never imports
    scikit-learn."""
    n = table_rows(items)

    def column(name: str) -> list[Any]:
        return list(items[name]) if name in items else [None] * n

    def as_list(v: Any) -> list[str]:
        return [] if is_missing(v) else [str(x) for x in v]

    if field == "genres":
        return [[f"genre:{g}" for g in as_list(v)] for v in column("genres")]
    if field == "tags":
        return [[f"tag:{t}" for t in as_list(v)] for v in column("tags")]
    if field == "decade":
        return [[] if is_missing(y) else [f"decade:{int(y) // 10 * 10}s"] for y in column("year")]
    if field == "title":
        stop_words: frozenset[str] = frozenset()
        if drop_stop_words:
            # scikit-learn's English stop words, imported only where titles are fit (off by default)
            from models.base import fitting_module

            stop_words = fitting_module("sklearn.feature_extraction.text").ENGLISH_STOP_WORDS
        out = []
        for t in column("title"):
            words = _WORD.findall(_YEAR_SUFFIX.sub("", "" if is_missing(t) else str(t)).lower())
            out.append([f"title:{w}" for w in words if w not in stop_words])
        return out
    raise ValueError(f"unknown field {field!r}; expected one of {', '.join(FIELDS)}")


def project(features: sp.csr_matrix, components: np.ndarray) -> np.ndarray:
    """Unit rows (float32) of a TF-IDF matrix in an embedding basis; a row without features, or
    one the basis does not reach, stays zero."""
    if components.size == 0:
        return np.zeros((features.shape[0], max(components.shape[0], 1)), np.float32)
    dense = np.asarray(features @ components.T, dtype=np.float64)
    norms = np.linalg.norm(dense, axis=1, keepdims=True)
    return np.divide(dense, norms, out=np.zeros_like(dense), where=norms > 0).astype(np.float32)


@dataclass(frozen=True)
class ContentVectorizer:
    """The fitted feature space of the content signal (models/content.py's ``fit_vectorizer``)."""

    names: np.ndarray
    """(n_features,) feature names, e.g. 'genre:Drama', in column order; unique across fields."""
    fields: np.ndarray
    """(n_features,) int8: the index in FIELDS of each feature's field (its block)."""
    idf: np.ndarray
    """(n_features,) float64: each feature's factor on its term frequency (idf ** idf_power)."""
    field_weights: tuple[float, ...]
    """Weight of each field of FIELDS (0: left out)."""
    sublinear_tf: bool
    """1 + log(tf) for repeated tokens."""
    components: np.ndarray
    """(dim, n_features) basis of the item embedding; empty before ``with_components``."""

    def __post_init__(self) -> None:
        n = len(self.names)
        if self.fields.shape != (n,) or self.idf.shape != (n,):
            raise ValueError(f"vectorizer arrays disagree: {n} names, {self.fields.shape} fields, {self.idf.shape} idf")
        if self.components.size and self.components.shape[1] != n:
            raise ValueError(f"components have {self.components.shape[1]} columns for {n} features")

    def with_components(self, components: np.ndarray) -> ContentVectorizer:
        return replace(self, components=np.asarray(components, dtype=np.float64))

    def features(self, items: ItemColumns) -> sp.csr_matrix:
        """Items x features TF-IDF: per field, tf (or 1 + log tf) times the feature's IDF, the row's
        block L2-normalised and scaled by the field's weight (a block without known tokens is 0)."""
        column = {str(name): k for k, name in enumerate(self.names.tolist())}
        rows: list[int] = []
        cols: list[int] = []
        for f, field in enumerate(FIELDS):
            if self.field_weights[f] == 0 or not np.any(self.fields == f):
                continue
            for r, doc in enumerate(item_tokens(items, field, drop_stop_words=False)):
                for token in doc:
                    c = column.get(token)
                    if c is not None:
                        rows.append(r)
                        cols.append(c)
        n_items, n_features = table_rows(items), len(self.names)
        counts = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_items, n_features))
        counts.sum_duplicates()
        coo = counts.tocoo()
        tf = 1.0 + np.log(coo.data) if self.sublinear_tf else coo.data
        values = tf * self.idf[coo.col]
        block = coo.row.astype(np.int64) * len(FIELDS) + self.fields[coo.col]
        norms = np.sqrt(np.bincount(block, weights=values**2, minlength=n_items * len(FIELDS)))
        weights = np.asarray(self.field_weights, dtype=np.float64)[self.fields[coo.col]]
        values = values / norms[block] * weights
        return sp.csr_matrix((values, (coo.row, coo.col)), shape=(n_items, n_features))

    def embed(self, items: ItemColumns) -> np.ndarray:
        """Unit embedding rows (float32) of an items table (columns genres, tags, title, year as in
        the dataset's items.parquet; a missing column counts as empty)."""
        return project(self.features(items), self.components)

    # -- persistence as plain arrays (no pickle) ------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        return {"vocab_names": self.names, "vocab_fields": self.fields, "vocab_idf": self.idf,
                "components": self.components}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], field_weights: tuple[float, ...],
                    sublinear_tf: bool) -> ContentVectorizer | None:
        """The vectorizer saved by ``arrays``; None for a model saved before it was kept."""
        if not all(k in arrays for k in ("vocab_names", "vocab_fields", "vocab_idf", "components")):
            return None
        return cls(names=np.asarray(arrays["vocab_names"]), fields=np.asarray(arrays["vocab_fields"], np.int8),
                   idf=np.asarray(arrays["vocab_idf"], np.float64), field_weights=tuple(field_weights),
                   sublinear_tf=bool(sublinear_tf), components=np.asarray(arrays["components"], np.float64))
