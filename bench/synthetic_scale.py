"""Scale bench: synthetic interactions generated partition by partition on a LocalCluster.

    python bench/synthetic_scale.py --interactions 25000000

Each stage prints its wall time, rows/s, the CPU seconds of all processes (a figure that a busy
machine inflates less than wall time) and peak resident memory: of this (client) process, of
the largest worker process, and of all processes together, sampled by a background thread.
Stages run in order and share a BenchContext; adding a stage is one line in STAGES.
"""

from __future__ import annotations

import argparse
import importlib
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from distributed import Client, LocalCluster

from etl.sources.synthetic import SyntheticConfig, write_parquet

MiB = 2**20


@dataclass
class BenchContext:
    """What stages share: the config, the cluster's client, a scratch folder, earlier results."""

    config: SyntheticConfig
    client: Client
    work_dir: Path
    state: dict[str, object] = field(default_factory=dict)


@dataclass
class StageResult:
    name: str
    seconds: float
    rows: int
    cpu_seconds: float
    peak_client_mib: float
    peak_worker_mib: float
    peak_total_mib: float

    def line(self) -> str:
        rate = self.rows / self.seconds if self.seconds > 0 else float("nan")
        return (
            f"{self.name:<10} {self.rows:>12,d} rows {self.seconds:>9.1f} s {rate:>12,.0f} rows/s"
            f" {self.cpu_seconds:>8.1f} CPU s   peak RSS: client {self.peak_client_mib:>7,.0f} MiB,"
            f" largest worker {self.peak_worker_mib:>7,.0f} MiB,"
            f" all processes {self.peak_total_mib:>7,.0f} MiB"
        )


class ProcessSampler:
    """Samples RSS and CPU time of this process and all its descendants (the cluster's workers)."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.me = psutil.Process()
        self.peak_client = self.peak_worker = self.peak_total = 0
        self._children: list[psutil.Process] = []
        self._samples = 0
        self._cpu_first: dict[int, float] = {}
        self._cpu_last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="process-sampler", daemon=True)

    @property
    def cpu_seconds(self) -> float:
        """CPU time used since the first sample (processes born later count from zero)."""
        return sum(last - self._cpu_first[pid] for pid, last in self._cpu_last.items())

    def _cpu(self, proc: psutil.Process, first: bool) -> None:
        times = proc.cpu_times()
        used = times.user + times.system
        self._cpu_first.setdefault(proc.pid, used if first else 0.0)
        self._cpu_last[proc.pid] = used

    def _sample(self, first: bool = False) -> None:
        total = mine = self.me.memory_info().rss
        self._cpu(self.me, first)
        if self._samples % 20 == 0:  # listing processes costs ms; they rarely change
            self._children = self.me.children(recursive=True)
        self._samples += 1
        for child in self._children:
            try:
                rss = child.memory_info().rss
                self._cpu(child, first)
            except psutil.Error:  # exited between listing and reading
                continue
            total += rss
            self.peak_worker = max(self.peak_worker, rss)
        self.peak_client = max(self.peak_client, mine)
        self.peak_total = max(self.peak_total, total)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> ProcessSampler:
        self._sample(first=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def run_stage(name: str, stage: Callable[[BenchContext], int], ctx: BenchContext) -> StageResult:
    """Run one stage (it returns the rows it handled), timing it and recording peak memory."""
    with ProcessSampler() as sampler:
        start = time.perf_counter()
        rows = stage(ctx)
        seconds = time.perf_counter() - start
    return StageResult(
        name, seconds, rows, sampler.cpu_seconds,
        sampler.peak_client / MiB, sampler.peak_worker / MiB, sampler.peak_total / MiB,
    )  # fmt: skip


def stage_generate(ctx: BenchContext) -> int:
    """Generate on the workers and write interactions/ (Parquet per partition) + items.parquet."""
    out = write_parquet(ctx.config, ctx.work_dir / "synthetic", client=ctx.client)
    ctx.state["synthetic_dir"] = out
    size = sum(f.stat().st_size for f in out.rglob("*.parquet"))
    print(f"  wrote {size / MiB:,.0f} MiB of Parquet to {out}")
    return ctx.config.n_interactions


def stage_ingest(ctx: BenchContext) -> int:
    """Validate, de-duplicate, build vocabularies, split and write the dataset folder (etl.ingest)."""
    from etl.ingest import ingest
    from etl.sources.tabular import read_interactions

    raw = ctx.state["synthetic_dir"]
    source = read_interactions(
        Path(raw) / "interactions", fmt="parquet", value="value", timestamp="timestamp", items=Path(raw) / "items.parquet"
    )
    report = ingest(source, ctx.work_dir / "dataset", client=ctx.client)
    print("  " + report.summary().replace("\n", "\n  "))
    ctx.state["dataset_dir"] = report.path
    return report.raw_rows


#: (name, stage) in run order. A stage takes the context and returns how many rows it handled;
#: later stages find earlier outputs in ctx.state (generate leaves "synthetic_dir").
STAGES: list[tuple[str, Callable[[BenchContext], int]]] = [
    ("generate", stage_generate),
    ("ingest", stage_ingest),
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--interactions", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads-per-worker", type=int, default=1)
    parser.add_argument("--partition-size", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stages", nargs="*", help="run only these stages (default: all)")
    parser.add_argument("--keep", type=Path, help="write here and keep it (default: a temp folder)")
    args = parser.parse_args(argv)

    config = SyntheticConfig(
        n_interactions=args.interactions, partition_size=args.partition_size, seed=args.seed
    )
    print(
        f"synthetic: {config.n_interactions:,} interactions, {config.users:,} users, "
        f"{config.items:,} items, {args.workers} workers x {args.threads_per_worker} threads"
    )
    with (
        tempfile.TemporaryDirectory(prefix="hybridrec-bench-") as tmp,
        LocalCluster(
            n_workers=args.workers, threads_per_worker=args.threads_per_worker,
            processes=True, dashboard_address=":0",
        ) as cluster,
        Client(cluster) as client,
    ):  # fmt: skip
        print(f"dashboard: {client.dashboard_link}")
        # Import the project on the workers first, so that stages measure work, not imports.
        for module in ("etl.sources.synthetic", "etl.ingest"):
            client.run(importlib.import_module, module)
        ctx = BenchContext(config, client, args.keep or Path(tmp))
        for name, stage in STAGES:
            if args.stages and name not in args.stages:
                continue
            print(run_stage(name, stage, ctx).line(), flush=True)


if __name__ == "__main__":
    main()
