"""Shared fixtures: a tiny synthetic dataset for unit tests, the real ml-latest-small, and a Dask cluster."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dask
import pytest
from distributed import Client, LocalCluster

from bench.tiny import make_tiny_source
from etl.dataset import Dataset
from etl.ingest import ingest
from graphql_api.engine import serving_threads
from tests.hang_guard import pytest_addoption, pytest_configure, pytest_runtest_protocol  # noqa: F401 - hooks

REPO = Path(__file__).resolve().parents[1]
ML_SMALL = REPO.parent / "shared" / "data" / "ml-latest-small"

# One BLAS thread in the test process, set once before any test runs BLAS: what Dask's nanny gives
# every worker process (OPENBLAS_NUM_THREADS=1) and what a serving process sets at start
# (serving_threads: numpy's and scipy's OpenBLAS). The session's cluster runs its workers as
# threads of this process, where the fits' scoped `threadpool_limits` would otherwise resize the
# one process-wide OpenBLAS pool while another thread is inside a threaded BLAS call, a pattern
# OpenBLAS's tracker knows as a source of hangs (in C, where no Python timeout reaches them).
serving_threads()


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


@pytest.fixture(scope="session")
def client() -> Iterator[Client]:
    """A client of one LocalCluster shared by the whole session: two in-process workers of one
    thread each, so tasks and data move between workers. Fits take it explicitly; it is not the
    default client, since the ingest fixtures pick their own schedulers. A test that kills workers
    or needs a topology of its own starts its own cluster."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster, set_as_default=False) as c:
        yield c


@pytest.fixture
def process_client() -> Iterator[Client]:
    """A client of a fresh LocalCluster of two worker processes, for a test that kills one of them
    (the shared cluster must keep its workers)."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster, set_as_default=False) as c:
        yield c
