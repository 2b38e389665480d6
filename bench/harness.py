"""What the quality and scale benches share: datasets, the cluster, measuring a step, JSON files.

Measurement reuses bench/synthetic_scale.py's ProcessSampler (RSS and CPU time of this process
and of its descendants, the LocalCluster's workers, sampled by a background thread), so every
bench reports memory the same way: the peak RSS of all processes together during the step, and
that peak less the RSS they held when the step began (what the step itself added).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import scipy.sparse as sp

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.synthetic_scale import MiB, ProcessSampler  # noqa: E402
from etl.dataset import Dataset  # noqa: E402
from etl.jsonable import jsonable  # noqa: E402

ML_SMALL = REPO.parent / "shared" / "data" / "ml-latest-small"
DESIGN = REPO.parent / "shared" / "DESIGN.md"
RESULTS = REPO / "bench" / "results"
CACHE = RESULTS / "tmp"

T = TypeVar("T")


@dataclass
class Measure:
    """Wall and CPU seconds of a step and the memory of all processes (this one and the workers)."""

    seconds: float
    cpu_seconds: float
    peak_mib: float
    """Peak RSS of all processes together during the step."""
    added_mib: float
    """peak_mib less the RSS of all processes when the step began."""
    peak_client_mib: float
    peak_worker_mib: float

    def line(self) -> str:
        return (f"{self.seconds:8.1f} s ({self.cpu_seconds:7.1f} CPU s), peak RSS {self.peak_mib:8,.0f} MiB "
                f"(+{self.added_mib:,.0f} MiB; largest worker {self.peak_worker_mib:,.0f} MiB)")


def measure(step: Callable[[], T]) -> tuple[T, Measure]:
    """Run ``step()`` under a ProcessSampler; returns its result and what it cost."""
    with ProcessSampler() as sampler:
        start_total = sampler.peak_total  # the first sample, taken on entering
        start = time.perf_counter()
        out = step()
        seconds = time.perf_counter() - start
    return out, Measure(
        seconds, sampler.cpu_seconds, sampler.peak_total / MiB, (sampler.peak_total - start_total) / MiB,
        sampler.peak_client / MiB, sampler.peak_worker / MiB,
    )  # fmt: skip


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the cluster ----------------------------------------------------------------------------------
def start_cluster(workers: int = 2, threads_per_worker: int = 1) -> tuple[Any, Any]:
    """A LocalCluster of worker processes (children of this one, so the sampler sees them) and its client."""
    import importlib

    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker, processes=True,
                           dashboard_address=":0")
    client = Client(cluster)
    # Import the project on the workers first, so that steps measure work, not imports.
    for module in ("etl.ingest", "etl.sources.synthetic", "models.als", "models.svd", "models.content",
                   "models.lightgcn", "models.popularity"):
        client.run(importlib.import_module, module)
    log(f"Dask dashboard {client.dashboard_link}; {workers} workers x {threads_per_worker} threads; "
        f"load average {os.getloadavg()[0]:.1f}")
    return cluster, client


# -- datasets -------------------------------------------------------------------------------------
def ml_small_dataset(src: Path = ML_SMALL, cache: Path = CACHE) -> Dataset:
    """ml-latest-small ingested on the protocol split (cached under ``cache``)."""
    import dask

    from etl.ingest import ingest
    from etl.sources.movielens import read_movielens

    out = cache / "ml-latest-small"
    if not (out / "manifest.json").exists():
        with dask.config.set(scheduler="threads"):
            ingest(read_movielens(src), out)
    return Dataset.open(out)


def synthetic_dataset(n: int, cache: Path = CACHE, client: Any = None) -> Dataset:
    """etl.sources.synthetic's data (seed 0, MovieLens-shaped) of n interactions, ingested (cached)."""
    from etl.ingest import ingest
    from etl.sources.synthetic import SyntheticConfig, generate

    out = cache / f"synthetic-{n}"
    if not (out / "manifest.json").exists():
        if client is not None:
            ingest(generate(SyntheticConfig(n_interactions=n, seed=0)), out, client=client)
        else:
            import dask

            with dask.config.set(scheduler="threads"):
                ingest(generate(SyntheticConfig(n_interactions=n, seed=0)), out)
    return Dataset.open(out)


def dataset_sizes(ds: Dataset) -> dict[str, int]:
    return {"users": ds.n_users, "items": ds.n_items, **{s: ds.count(s) for s in ("fit", "validation", "test")},
            "train": ds.count("train")}


def genre_features(ds: Dataset) -> sp.csr_matrix:
    """items x genres one-hot (for intra-list diversity, as the protocol lists it)."""
    genres = ds.items_table["genres"]
    vocab: dict[str, int] = {}
    rows, cols = [], []
    for row, values in enumerate(genres):
        for g in (values if values is not None else []):
            rows.append(row)
            cols.append(vocab.setdefault(str(g), len(vocab)))
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(genres), max(len(vocab), 1)))


def sample_test(truth: sp.csr_matrix, max_users: int | None, seed: int = 0) -> sp.csr_matrix:
    """``truth`` with only a seeded sample of its non-empty rows (all when max_users is None)."""
    users = np.flatnonzero(np.diff(truth.indptr) > 0)
    if max_users is None or users.size <= max_users:
        return truth
    keep = np.zeros(truth.shape[0], dtype=bool)
    keep[np.random.default_rng(seed).choice(users, size=max_users, replace=False)] = True
    out = truth.tocoo()
    mask = keep[out.row]
    return sp.csr_matrix((out.data[mask], (out.row[mask], out.col[mask])), shape=truth.shape)


# -- files ----------------------------------------------------------------------------------------
def write_json(path: Path, data: Any) -> None:
    """Write atomically (temp file, then rename): a stage's JSON exists only once it finished."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp-write")
    tmp.write_text(json.dumps(jsonable(data), indent=2))
    tmp.replace(path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def same_json(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` are equal as ``write_json`` writes them: a value read back from a
    result file compares equal to the one written (tuples become lists, numpy scalars numbers)."""
    return json.dumps(jsonable(a), sort_keys=True) == json.dumps(jsonable(b), sort_keys=True)


def kept_result(path: Path, force: bool, same: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
    """The result at ``path`` when it was measured with the settings asked for (``same``), unless
    ``force``: benches keep such results instead of measuring them again."""
    if force or not path.exists():
        return None
    record = read_json(path)
    if not same(record):
        print(f"{path} was measured with other settings: running again", file=sys.stderr)
        return None
    print(f"done before with the same settings ({path}; --force reruns)", file=sys.stderr)
    return record


def environment() -> dict[str, Any]:
    """Facts that make wall times comparable: cores, memory, load."""
    import platform

    import psutil

    return {"cpus": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "load_average": round(os.getloadavg()[0], 2), "python": platform.python_version(),
            "machine": platform.machine(), "time": time.strftime("%Y-%m-%d %H:%M:%S")}
