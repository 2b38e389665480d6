"""Content signal: TF-IDF of item metadata, a truncated-SVD item embedding, user = weighted mean.

Item directions come from metadata alone (genres, tags, title words, decade): ``embedding_`` holds
one unit row per item, so an item nobody has interacted with still gets one (cold start); an item
without metadata gets a zero row. The scored item vector is that row scaled by a popularity lift,
(1 + count)^beta with count the item's interactions in the fitted split (as models/svd.py's
output_exponent): among items whose metadata match a profile equally, the ones more people chose
rank first, and an item without interactions keeps its unit row. A user vector is a weighted mean
of the unit rows of the user's history, so score(u, i) = <u, (1 + count_i)^beta e_i>, an inner
product as every signal's (../shared/DESIGN.md, "The fused-embedding identity"), and a new
interaction updates it at once through ``fold_in``. Item-to-item similarity (a cosine) ignores
the lift.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from etl.dataset import Dataset
from models.base import LinearFoldIn, TrainData, TrainingOptions, fitting_module, register, require_client
from models.content_features import FIELDS, ContentVectorizer, item_tokens, project, table_rows

if TYPE_CHECKING:
    import pandas as pd

    from models.content_features import ItemColumns

Profile = Literal["uniform", "value", "recency"]
PROFILES: tuple[str, ...] = ("uniform", "value", "recency")
_WEIGHT_OF: dict[str, str] = {
    "genres": "genre_weight", "tags": "tag_weight", "title": "title_weight", "decade": "decade_weight",
}


@dataclass
class ContentConfig:
    """Hyperparameters of the content signal.

    Defaults were chosen on ml-latest-small's validation split (fit on 'fit', NDCG@10 on
    'validation' with the fit items excluded; "few" = the third of validation users with the
    shortest fit histories), never on test. Popularity scores 0.0934 there (few: 0.0815). The
    unlifted signal (popularity_exponent 0, decade_weight 0.5) scored 0.0258 (few: 0.0179); the
    lift (1 + count)^beta took it to 0.0972 / 0.1045 / 0.1066 / 0.1073 / 0.1072 for beta 0.25 /
    0.5 / 0.75 / 1 / 1.5 (few: 0.0756 / 0.0863 / 0.0922 / 0.0956 / 0.0961). With beta 1, a
    decade_weight of 0 / 0.5 / 1 / 1.5 / 2 / 3 scored 0.1011 / 0.1073 / 0.1079 / 0.1049 / 0.1010 /
    0.0986 (few: 0.0850 / 0.0956 / 0.1013 / 0.0982 / 0.0950 / 0.0900): the defaults, 0.1079 (few:
    0.1013), picked for the few-interaction users (the issue's target), then overall. Also tried,
    none better for the few-interaction users: at decade_weight 0.5, recency half-life 1 / 4 / 8 /
    16 / none (0.1056 / 0.1088 / 0.1059 / 0.1045 / 0.1018; few 0.0956 / 0.0924 / 0.0866 / 0.0836 /
    0.0817), dim 16 / 64 / 128 (0.1054 / 0.1058 / 0.1048), tag weight 0.5 / 2, title words 0.5,
    idf_power 0 / 0.5 / 2, min_df 1 / 5 (0.1043-0.1079); at decade_weight 1, half-life 3, dim 24 /
    48, rating-weighted recency (0.1058-0.1074), and a prior count added in the lift, (n0 + count)
    with n0 10 / 30 / 100 (0.1073 / 0.1082 / 0.1101, few 0.1002 / 0.0993 / 0.0993).
    The lift costs the full ranking its cold items (validation hit rate of the items without fit
    interactions, for the 182 users with one: 0.0165 unlifted, 0 lifted); ranked among the cold
    items alone (a catalogue filtered to them) the lifted signal finds them (0.121, against 0.038
    for popularity's order), and popularity_exponent=0 restores the unlifted full ranking.
    """

    dim: int = 32
    """Dimension of the item embedding (truncated SVD of the TF-IDF matrix); when the matrix has
    rank below dim (fewer features or items), the exact embedding of that smaller rank is used."""
    genre_weight: float = 1.0
    """Weight of the genre block ('genre:Action'); 0 leaves the field out."""
    tag_weight: float = 1.0
    """Weight of the tag block ('tag:dark comedy'); 0 leaves the field out."""
    title_weight: float = 0.0
    """Weight of the title-word block ('title:toy', English stop words dropped); 0 leaves it out."""
    decade_weight: float = 1.0
    """Weight of the release-decade block ('decade:1990s'); 0 leaves it out."""
    min_df: int = 2
    """A token becomes a feature only when at least this many items carry it (drops one-off tags)."""
    sublinear_tf: bool = True
    """Use 1 + log(tf) for repeated tokens (title words); genres, tags and decades occur once."""
    idf_power: float = 1.0
    """Feature weight tf * idf**idf_power: 0 turns IDF off, > 1 stresses rare tokens further."""
    profile: Profile = "recency"
    """Weights of history items in the user mean: 'uniform', 'value' (the interaction value, e.g.
    the rating) or 'recency' (halving every ``half_life`` interactions back from the newest)."""
    half_life: float = 2.0
    """For profile='recency': how many interactions back an item's weight halves."""
    shrink: float = 0.0
    """Added to the sum of weights in the mean: a short history gives a shorter user vector, so
    the blend trusts the content signal less for it. 0 gives the plain weighted mean."""
    svd_iter: int = 7
    """Power iterations of the randomised SVD."""
    popularity_exponent: float = 1.0
    """beta: an item's vector is its unit metadata row times (1 + count)^beta, count = its
    interactions in the fitted split (a popularity lift); 0 scores by metadata alone."""

    def __post_init__(self) -> None:
        if not isinstance(self.dim, int | np.integer) or self.dim < 1:
            raise ValueError(f"dim must be a positive integer, got {self.dim!r}")
        for name in _WEIGHT_OF.values():
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if all(getattr(self, name) == 0 for name in _WEIGHT_OF.values()):
            raise ValueError("genre_weight, tag_weight, title_weight and decade_weight are all 0: no field to use")
        if not isinstance(self.min_df, int | np.integer) or self.min_df < 1:
            raise ValueError(f"min_df must be an integer >= 1, got {self.min_df!r}")
        if not np.isfinite(self.idf_power) or self.idf_power < 0:
            raise ValueError(f"idf_power must be a finite number >= 0, got {self.idf_power!r}")
        if self.profile not in PROFILES:
            raise ValueError(f"profile must be one of {', '.join(PROFILES)}, got {self.profile!r}")
        if not self.half_life > 0:
            raise ValueError(f"half_life must be > 0, got {self.half_life!r}")
        if not np.isfinite(self.shrink) or self.shrink < 0:
            raise ValueError(f"shrink must be a finite number >= 0, got {self.shrink!r}")
        if not isinstance(self.svd_iter, int | np.integer) or self.svd_iter < 1:
            raise ValueError(f"svd_iter must be a positive integer, got {self.svd_iter!r}")
        if not np.isfinite(self.popularity_exponent) or self.popularity_exponent < 0:
            raise ValueError(f"popularity_exponent must be a finite number >= 0, got {self.popularity_exponent!r}")

    def field_weights(self) -> dict[str, float]:
        """Weight of each field of FIELDS (0: left out)."""
        return {f: float(getattr(self, _WEIGHT_OF[f])) for f in FIELDS}


# ------------------------------------------------------------------------------ item features
def fit_vectorizer(items: pd.DataFrame, config: ContentConfig) -> ContentVectorizer:
    """The features of the content signal, fitted on an items table: per field (its own block), the
    tokens at least ``min_df`` items carry and their IDF (scikit-learn's smoothed IDF), with the
    field weights of ``config``. Its ``features`` gives the TF-IDF matrix; ``components`` is
    empty until ``fit_embedding``'s basis is attached (``with_components``)."""
    TfidfVectorizer = fitting_module("sklearn.feature_extraction.text").TfidfVectorizer  # noqa: N806 - a class

    names: list[str] = []
    fields: list[int] = []
    idf: list[np.ndarray] = []
    for k, (field, weight) in enumerate(config.field_weights().items()):
        if weight == 0:
            continue
        docs = item_tokens(items, field)
        df = Counter(t for doc in docs for t in set(doc))
        if not any(c >= config.min_df for c in df.values()):
            continue  # nothing in this field (no tags in ml-1m, say)
        vec = TfidfVectorizer(analyzer=_identity, lowercase=False, min_df=config.min_df, smooth_idf=True,
                              use_idf=config.idf_power > 0, norm=None, dtype=np.float64)
        vec.fit(docs)
        block = vec.get_feature_names_out().tolist()
        names.extend(block)
        fields.extend([k] * len(block))
        idf.append(vec.idf_ ** config.idf_power if config.idf_power > 0 else np.ones(len(block)))
    return ContentVectorizer(
        names=np.asarray(names, dtype=str),
        fields=np.asarray(fields, dtype=np.int8),
        idf=np.concatenate(idf) if idf else np.zeros(0),
        field_weights=tuple(config.field_weights().values()),
        sublinear_tf=config.sublinear_tf,
        components=np.zeros((0, len(names))),
    )


def _identity(tokens: list[str]) -> list[str]:
    return tokens


def tfidf_features(items: pd.DataFrame, config: ContentConfig) -> tuple[sp.csr_matrix, list[str]]:
    """Items x features TF-IDF matrix and its feature names (``fit_vectorizer`` on ``items``, then
    its ``features`` of the same items).

    Each field is its own block (its own IDF), rows L2-normalised within the block and scaled by
    the field's weight, so a weight says how much a field counts whatever its vocabulary size.
    """
    vectorizer = fit_vectorizer(items, config)
    return vectorizer.features(items), vectorizer.names.tolist()


def fit_embedding(features: sp.csr_matrix, dim: int, seed: int = 0, n_iter: int = 7) -> tuple[np.ndarray, float]:
    """The basis of the item embedding (rows: components over the features) of a TF-IDF matrix, and
    the share of the matrix's squared norm the embedding keeps."""
    n_items, n_features = features.shape
    if n_features == 0:
        return np.zeros((0, 0)), 0.0
    if min(n_items, n_features) <= dim:
        # Exact: the rows in the basis of their own span, so every inner product is kept.
        _, s, vt = np.linalg.svd(features.toarray(), full_matrices=False)
        components = vt[s > s[0] * 1e-10]
    else:
        truncated_svd = fitting_module("sklearn.decomposition").TruncatedSVD
        svd = truncated_svd(dim, algorithm="randomized", n_iter=n_iter, random_state=seed)
        components = svd.fit(features).components_
    dense = np.asarray(features @ components.T)
    total = float(features.multiply(features).sum())
    kept = float((dense**2).sum() / total) if total > 0 else 0.0
    return components, kept


def embed_items(features: sp.csr_matrix, dim: int, seed: int = 0, n_iter: int = 7) -> tuple[np.ndarray, float]:
    """L2-normalised dense item rows (float32) from a TF-IDF matrix, and the share of its squared
    norm the embedding keeps. Rows without features stay zero."""
    components, kept = fit_embedding(features, dim, seed=seed, n_iter=n_iter)
    return project(features, components), kept


def _fit_item_vectors(dataset_path: str, config: ContentConfig, seed: int) -> dict[str, Any]:
    """The worker-side fit: read the items table, TF-IDF, SVD.

    scikit-learn in one task is enough here: the items table has 62k rows at most (MovieLens
    25M), its TF-IDF matrix a few hundred thousand non-zeros, and the randomised SVD takes
    seconds; partitioning it would only add overhead. Keeping a real vocabulary (not hashing)
    lets the feature names travel with the model.
    """
    items = Dataset.open(dataset_path).items_table
    vectorizer = fit_vectorizer(items, config)
    features = vectorizer.features(items)
    # One BLAS thread, as Dask's nanny sets for worker processes: a task shares the worker's
    # cores with other tasks, and an oversubscribed OpenBLAS QR runs ~40x slower.
    with threadpool_limits(limits=1):
        components, kept = fit_embedding(features, config.dim, seed=seed, n_iter=config.svd_iter)
    vectors = project(features, components)
    return {"item_factors": vectors, "vectorizer": vectorizer.with_components(components), "explained": kept}


def popularity_lift(counts: np.ndarray, config: ContentConfig) -> np.ndarray:
    """(1 + count)^beta per item: the scale of its scored vector (1 for an item without
    interactions, and for every item when beta is 0)."""
    return np.power(1.0 + np.asarray(counts, dtype=np.float64), config.popularity_exponent)


# ------------------------------------------------------------------------------ user profiles
def position_weights(
    lengths: np.ndarray, positions: np.ndarray, values: np.ndarray | None, config: ContentConfig
) -> np.ndarray:
    """Weight of each history entry: ``positions`` counts from 0 (oldest) within a history of
    ``lengths`` entries (per entry); ``values`` are interaction values (None: all 1)."""
    if config.profile == "recency":
        age = (lengths - 1 - positions).astype(np.float64)
        return np.power(0.5, age / config.half_life)
    if config.profile == "value" and values is not None:
        return np.asarray(values, dtype=np.float64)
    return np.ones(len(positions), dtype=np.float64)


# ------------------------------------------------------------------------------ the model
@register
class ContentModel(LinearFoldIn):
    """TF-IDF over item metadata -> truncated SVD unit rows (``embedding_``), scaled by the
    popularity lift into ``item_factors_``; user = weighted mean of the history's unit rows."""

    kind = "content"
    Config = ContentConfig

    def _fit(self, data: TrainData, options: TrainingOptions) -> None:
        from dask.base import tokenize

        client = require_client(options.client, "content fit")
        # A unique suffix: Dask reuses a live future with the same key, and two fits with
        # different configs must never share a result. The dashboard groups by the prefix.
        token = tokenize(data.dataset.path, data.dataset.manifest.get("content_hash"), self.config, options.seed)
        key = f"content-tfidf-svd-{token}"
        result = client.submit(_fit_item_vectors, data.dataset.path, self.config, options.seed, key=key).result()
        self.embedding_ = np.ascontiguousarray(result["item_factors"], dtype=np.float32)
        self.vectorizer_: ContentVectorizer | None = result["vectorizer"]
        self.n_features_ = len(result["vectorizer"].names)
        self.explained_ = float(result["explained"])
        if self.n_features_ == 0:
            warnings.warn("content: the items table has no metadata tokens; every item vector is zero", stacklevel=3)
        self.item_counts_ = np.asarray((self.seen_ > 0).sum(axis=0), dtype=np.float32).ravel()
        lift = popularity_lift(self.item_counts_, self.config)
        self.item_factors_ = (self.embedding_ * lift[:, None]).astype(np.float32)
        self.user_factors_ = self.fold_in_histories(data.histories())

    def fold_in_histories(self, histories: sp.csr_matrix) -> np.ndarray:
        """``fold_in`` of every row of a time-ordered history matrix (Dataset.matrix(split, ordered=True)),
        vectorised: the fit's user vectors and a refold's (``FactorModel.fold_in_histories``)."""
        lengths = np.diff(histories.indptr)
        positions = np.arange(histories.nnz) - np.repeat(histories.indptr[:-1], lengths)
        w = position_weights(np.repeat(lengths, lengths), positions, histories.data, self.config)
        weights = sp.csr_matrix((w, histories.indices, histories.indptr), shape=histories.shape)
        denom = np.asarray(weights.sum(axis=1)).ravel() + self.config.shrink
        scale = np.divide(1.0, denom, out=np.zeros_like(denom), where=denom > 0)
        return np.asarray(sp.diags(scale) @ weights @ self.embedding_.astype(np.float64), dtype=np.float32)

    def history_weights(self, items: np.ndarray, values: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The distinct rows of a history (oldest first) and their weights, normalised by the
        profile's denominator: ``fold_in`` is weights @ projection_[rows], so
        w_j <projection_[j], item_factors_[i]> is item j's part of the user's score for item i
        (what explanations rank drivers by). An item seen twice counts at both positions. No rows
        for an empty history or one whose weights sum to 0."""
        items, values = self._history(items, values)
        n = len(items)
        w = position_weights(np.full(n, n), np.arange(n), values, self.config)
        denom = w.sum() + self.config.shrink
        if n == 0 or denom <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        rows, at = np.unique(items, return_inverse=True)
        return rows, np.bincount(at, weights=w / denom, minlength=rows.size)

    @property
    def projection_(self) -> np.ndarray:
        """The rows a history is folded over (``fold_in``): the unit TF-IDF rows, ``embedding_``;
        ``item_factors_`` are those rows times the popularity lift."""
        return self.embedding_

    def embed_new(self, items: ItemColumns) -> np.ndarray:
        """Unit metadata rows (``embedding_``'s kind) of items this model was not fit on, e.g. items
        added while serving: the fitted vocabulary, IDF and basis, unknown tokens ignored. A model
        saved before the vectorizer was kept gives zero rows."""
        if self.vectorizer_ is None:
            return np.zeros((table_rows(items), self.embedding_.shape[1]), np.float32)
        return self.vectorizer_.embed(items)

    def _extend_items(self, item_factors: np.ndarray) -> None:
        # an added item has no interactions: lift 1, so its scored vector is its unit metadata row
        self.embedding_ = np.concatenate([self.embedding_, item_factors.astype(np.float32)])
        self.item_counts_ = np.concatenate([self.item_counts_, np.zeros(len(item_factors), np.float32)])

    def _extra_state(self) -> dict[str, Any]:
        return {"n_features": self.n_features_, "explained": self.explained_}

    def _extra_arrays(self) -> dict[str, np.ndarray]:
        vectorizer = self.vectorizer_.arrays() if self.vectorizer_ is not None else {}
        return {"embedding": self.embedding_, "item_counts": self.item_counts_, **vectorizer}

    def _restore(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.n_features_ = int(state.get("n_features", 0))
        self.explained_ = float(state.get("explained", 0.0))
        # A model saved before the lift existed: its item factors are the unit metadata rows.
        self.embedding_ = arrays.get("embedding", self.item_factors_)
        self.vectorizer_ = ContentVectorizer.from_arrays(arrays, tuple(self.config.field_weights().values()),
                                                         self.config.sublinear_tf)
        counts = arrays.get("item_counts")
        self.item_counts_ = (
            np.asarray((self.seen_ > 0).sum(axis=0), dtype=np.float32).ravel() if counts is None else counts
        )
