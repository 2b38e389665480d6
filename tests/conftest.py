"""Shared fixtures: a tiny synthetic dataset for unit tests and the real ml-latest-small."""

from __future__ import annotations

from pathlib import Path

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest

from etl.dataset import Dataset
from etl.ingest import ingest
from etl.sources.base import RawSource

REPO = Path(__file__).resolve().parents[1]
ML_SMALL = REPO.parent / "shared" / "data" / "ml-latest-small"
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


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    out = tmp_path_factory.mktemp("tiny") / "dataset"
    with dask.config.set(scheduler="sync"):
        ingest(make_tiny_source(), out)
    return Dataset.open(out)


@pytest.fixture(scope="session")
def ml_small_dir() -> Path:
    if not (ML_SMALL / "ratings.csv").exists():
        pytest.skip(f"real data absent: {ML_SMALL} (CI has it beside the repository)")
    return ML_SMALL


@pytest.fixture(scope="session")
def ml_small(ml_small_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """ml-latest-small ingested on the protocol split (once per test session)."""
    from etl.sources.movielens import read_movielens

    out = tmp_path_factory.mktemp("ml_small") / "dataset"
    with dask.config.set(scheduler="threads"):
        ingest(read_movielens(ml_small_dir), out)
    return Dataset.open(out)
