"""The tiny synthetic dataset and the small bundles fit on it: the world of bench/faults.py, and
of the unit and API tests (tests/conftest.py, tests/api_helpers.py)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dask.dataframe as dd
import numpy as np
import pandas as pd

from etl.dataset import Dataset
from etl.sources.base import RawSource
from hybrid.fusion import Fusion
from models.base import FactorModel, TrainData, TrainingOptions

GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi"]


def make_tiny_source(n_users: int = 60, n_items: int = 40, per_user: int = 12, seed: int = 0) -> RawSource:
    """Users with two tastes (genre halves) so that every signal has something to learn."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        taste = u % 2
        pool = np.arange(n_items)[(np.arange(n_items) % 2) == taste]
        chosen = rng.choice(pool, size=min(per_user, len(pool)), replace=False)
        for t, i in enumerate(chosen):
            rows.append((str(u + 1), str(i + 1), float(rng.integers(1, 11)) / 2, 1_000_000 + u * 1000 + t))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "value", "timestamp"])
    items = pd.DataFrame(
        {
            "item_id": [str(i + 1) for i in range(n_items + 2)],  # two items nobody has seen
            "title": [f"Movie {i + 1} ({1990 + i % 20})" for i in range(n_items + 2)],
            "genres": [[GENRES[(i % 2) * 3 + (i // 2) % 3], GENRES[(i % 2) * 3]] for i in range(n_items + 2)],
            "tags": [["dark"] if i % 2 else ["funny"] for i in range(n_items + 2)],
            "year": pd.array([1990 + i % 20 for i in range(n_items + 2)], dtype="Int64"),
        }
    )
    return RawSource(
        name="tiny",
        interactions=dd.from_pandas(frame, npartitions=2),
        items=items,
        value_range=(0.5, 5.0),
        numeric_ids=True,
    )


def fit_models(dataset: Dataset, client: Any) -> dict[str, FactorModel]:
    """Popularity plus every other signal that exists in this checkout, fit small and fast."""
    from models.popularity import Popularity

    data = TrainData(dataset, split="train")
    options = TrainingOptions(client=client, seed=0)
    models: dict[str, FactorModel] = {"popularity": Popularity().fit(data, options)}
    try:
        from models.als import ALS, ALSConfig

        models["als"] = ALS(ALSConfig(factors=8, iterations=3)).fit(data, options)
    except ImportError:  # pragma: no cover - signals land independently
        pass
    try:
        from models.content import ContentConfig, ContentModel

        models["content"] = ContentModel(ContentConfig(dim=8)).fit(data, options)
    except ImportError:  # pragma: no cover
        pass
    return models


def publish_bundle(root: Path, dataset: Dataset, models: Mapping[str, FactorModel], *, version: str,
                   weights: Mapping[str, float] | None = None, traffic: Mapping[str, float] | None = None,
                   extra_variants: Mapping[str, Any] | None = None) -> Path:
    from hybrid.bundle import publish
    from hybrid.variants import Variants

    fusion = Fusion.fit_scales(dict(models), dataset.matrix("train"))
    if weights is None:
        weights = {s: (0.3 if s == "popularity" else 1.0) for s in fusion.signals}
    weights = {s: float(weights.get(s, 0.0)) for s in fusion.signals}
    variants = Variants(fusion.signals, weights, extra_variants, traffic)
    return publish(root, fusion, dataset, weights=weights, variants=variants,
                   metrics={"hybrid": {"ndcg@10": 0.25, "recall@10": 0.2}, "coverage": 0.5},
                   params={"source": "tests"}, version=version)
