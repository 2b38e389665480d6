"""Load bench of the GraphQL API on loopback: ``hybridrec serve`` (2 uvicorn workers) in one process
group, the load generator (wrk, a C client, or a Python fallback) in another.

The canonical query, over every user of the bundle in turn::

    recommendations(userId, first: 10) { variant items { score item { id title genres } } }

Phases (each reports req/s and p50/p95/p99 latency):

- ``reference``:     the yardstick, not hybridrec: stock Strawberry on Starlette answering a trivial
                     10-item query on one worker (bench/stock_strawberry.py), for which the API issue
                     quotes 680 req/s, p99 62 ms on the machine its targets were set on; the ratio
                     says how this machine, at this moment, compares with that one;
- ``cached``:        answers served from the answer cache (a warm-up pass fills it first);
- ``uncached``:      the cache switched off (HYBRIDREC_CACHE_TTL=0): every request folds, ranks and
                     resolves;
- ``explain``:       the canonical query plus each item's explanation, cache off;
- ``explain-cached`` the same, cached;
- ``explain@C``:     the ``explain`` phase with C connections instead of ``--connections``
                     (``--explain-connections``: how its latency grows with concurrent clients).

Targets on a 2-core machine: cached >= 2000 req/s with p99 <= 25 ms; uncached >= 800 req/s;
explanations p99 <= 50 ms. The loop is closed (each connection sends its next request when the
last is answered), so with the server saturated a latency is the queue in front of it: about
connections x CPU per request / cores. That is why the explain phase is also run at fewer
connections.

The bundle: by default the pipeline's signals (all of them, each with its default config, fit on
ml-latest-small's 'train' split), built once per signal set under ``--work-dir``.

Each phase runs ``--repeat`` times after ``--warmup`` seconds of the same load that are not measured
(the machine is shared: figures are the median of the runs, and
every run is kept in the JSON with the load average before it). Cache hits and misses are reported
apart: the client counts the answers by their ``x-cache`` header, and the server's own latency
histogram (Prometheus, summed over the workers) gives each kind's percentiles.

Writes into ``--results`` (default bench/results/): ``api_load.json`` (figures) and
``api_load_latency.png`` (client latency distribution per phase).

Usage::

    python bench/api_load.py                       # builds a bundle from ml-latest-small (or synthetic)
    python bench/api_load.py --bundle-root ROOT    # an existing bundle root (its latest)
    python bench/api_load.py --scale 25000000 --results bench/results/api_load_scale
                                                   # the bundle bench/scale.py published at 25M
    python bench/api_load.py --duration 10 --repeat 3 --connections 16 --results bench/results

A change's before/after figures come from one paired run: a checkout of the code before (``git
worktree add ../before COMMIT``) serves the same bundle beside this one, their runs interleaved,
each phase's pairs summarised by the median of their ratios with its interval (bench/paired.py;
on a 2-core machine whose speed drifts, 16-24 short pairs gave intervals of about +-5%)::

    python bench/api_load.py --bundle-root ROOT --against ../before --repeat 24 --duration 5 --phases uncached,explain
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.paired import PairedRatio, paired_ratio  # noqa: E402

ML_SMALL = REPO.parent / "shared" / "data" / "ml-latest-small"
CANONICAL = "query($u: ID!) { recommendations(userId: $u, first: 10) { variant items { score item { id title genres } } } }"
EXPLAINED = ("query($u: ID!) { recommendations(userId: $u, first: 10) { variant items { score item { id title genres } "
             "explanation { sentence mainSignal contributions { signal value } drivers { similarity item { id title } } } "
             "} } }")
#: The yardstick's query (bench/stock_strawberry.py) and what the API issue quotes for it there.
STOCK_QUERY = "{ items(first: 10) { id title genres } }"
STOCK_QUOTED = {"rps": 680.0, "p99_ms": 62.0}
TARGETS = {
    "reference": f"none: stock Strawberry, 1 worker (the API issue: {STOCK_QUOTED['rps']:.0f} req/s, "
                 f"p99 {STOCK_QUOTED['p99_ms']:.0f} ms)",
    "cached": "rps >= 2000 and p99 <= 25 ms",
    "uncached": "rps >= 800",
    "explain": "p99 <= 50 ms",
    "explain-cached": "p99 <= 50 ms",
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- the bundle ----------------------------------------------------------------------------------------

def phase_parts(phase: str) -> tuple[str, int | None]:
    """'explain@4' -> ('explain', 4); 'cached' -> ('cached', None)."""
    base, _, conns = phase.partition("@")
    return base, (int(conns) if conns else None)


def build_bundle(root: Path, work: Path, signals: list[str]) -> None:
    """Ingest ml-latest-small (or synthetic data), fit the signals, publish one bundle under ``root``."""
    import dask
    from distributed import Client, LocalCluster

    from etl.dataset import Dataset
    from etl.ingest import ingest
    from hybrid.bundle import publish
    from hybrid.fusion import Fusion
    from hybrid.variants import Variants
    from training.pipeline import default_config, fit_signals
    from models.base import TrainData, TrainingOptions

    dataset_dir = work / "dataset"
    if not (dataset_dir / "manifest.json").exists():
        if (ML_SMALL / "ratings.csv").exists():
            from etl.sources.movielens import read_movielens

            source = read_movielens(ML_SMALL)
            log(f"bench: ingesting {ML_SMALL}")
        else:
            from etl.sources.synthetic import SyntheticConfig, generate

            source = generate(SyntheticConfig(n_interactions=100_000, seed=0))
            log("bench: ml-latest-small absent, ingesting synthetic data (100k interactions)")
        with dask.config.set(scheduler="threads"):
            ingest(source, dataset_dir)
    ds = Dataset.open(dataset_dir)
    data = TrainData(ds, split="train")
    configs: dict[str, Any] = {}
    for name in signals:
        try:
            configs[name] = default_config(name)
        except (ValueError, ImportError) as err:
            log(f"bench: signal {name} unavailable ({err}); skipped")
    with LocalCluster(n_workers=1, threads_per_worker=os.cpu_count() or 2, processes=False,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        models, seconds = fit_signals(data, configs, TrainingOptions(client=client, seed=0))
    for name, fit_seconds in seconds.items():
        log(f"bench: fit {name} in {fit_seconds:.1f}s")
    fusion = Fusion.fit_scales(models, ds.matrix("validation"))
    weights = {s: (0.3 if s == "popularity" else 1.0) for s in fusion.signals}
    publish(root, fusion, ds, weights=weights, variants=Variants(fusion.signals, weights), metrics={},
            params={"source": "bench/api_load.py"}, version="bench")


# -- the server -----------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``python -m MODULE ...`` serving on a free loopback port in its own process group; ready once
    /health has answered often enough that every worker has loaded."""

    def __init__(self, module: list[str], env: dict[str, str], workers: int, log_path: Path,
                 repo: Path = REPO) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *module, "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", str(workers), "--log-level", "warning"],
            cwd=repo, env=env, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
            start_new_session=True,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        self._wait(workers)

    @classmethod
    def hybridrec(cls, root: Path, events: Path, workers: int, cache: bool, log_path: Path,
                  redis_url: str | None = None, plain_executor: bool = True, repo: Path = REPO) -> Server:
        """``hybridrec serve`` over the bundles of ``root``, its answer cache on or off, with
        graphql_api/execution.py's executor or (``plain_executor`` False) graphql-core's own; the
        code of ``repo`` (this checkout, or another, e.g. a worktree of the code before a change)."""
        metrics_dir = log_path.with_suffix(".metrics")
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        env = {**os.environ, "PYTHONPATH": str(repo), "HYBRIDREC_BUNDLE_ROOT": str(root),
               "HYBRIDREC_EVENTS_DIR": str(events), "HYBRIDREC_ACCESS_LOG": "false",
               "HYBRIDREC_CACHE_TTL": "3600" if cache else "0", "HYBRIDREC_RELOAD_INTERVAL": "5",
               # as deployed: keys configured (the load is anonymous reads, which keys leave open)
               "HYBRIDREC_API_KEYS": "api-load-bench-key-0001",
               # as deployed with several workers: /metrics sums them (the bench reads its histograms)
               "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
               "HYBRIDREC_PLAIN_EXECUTOR": "true" if plain_executor else "false"}
        env.pop("HYBRIDREC_REDIS_URL", None)
        if redis_url:
            env["HYBRIDREC_REDIS_URL"] = redis_url
        return cls(["cluster.cli", "serve"], env, workers, log_path, repo)

    @classmethod
    def stock(cls, log_path: Path) -> Server:
        """The yardstick: bench/stock_strawberry.py on one uvicorn worker."""
        return cls(["uvicorn", "stock_strawberry:app", "--app-dir", str(REPO / "bench"), "--no-access-log"],
                   dict(os.environ), 1, log_path)

    def _wait(self, workers: int, timeout: float = 180.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        ok = 0
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"uvicorn exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    ok += 1
                    if ok >= 4 * workers:  # every worker has loaded (connections spread over them)
                        return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise TimeoutError("uvicorn did not become ready")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


# -- load generators -------------------------------------------------------------------------------------

WRK_SCRIPT = """
local bodies = {}
local n = 0
local i = 0
init = function(args)
  for line in io.lines(args[1]) do n = n + 1; bodies[n] = line end
end
request = function()
  i = (i % n) + 1
  return wrk.format("POST", "/graphql", {["Content-Type"] = "application/json"}, bodies[i])
end
errors = 0
hits = 0
misses = 0
response = function(status, headers, body)
  if status ~= 200 or string.find(body, '"errors"', 1, true) then errors = errors + 1 end
  local cache = headers["x-cache"] or headers["X-Cache"]
  if cache == "hit" then hits = hits + 1 elseif cache == "miss" then misses = misses + 1 end
end
done = function(summary, latency, requests)
  -- per-thread counters live in each thread's own Lua state: sum them here
  local e, h, m = 0, 0, 0
  for _, t in ipairs(threads) do
    e = e + t:get("errors"); h = h + t:get("hits"); m = m + t:get("misses")
  end
  local grid = {}
  for k = 1, #GRID do grid[k] = string.format("%d", latency:percentile(GRID[k])) end
  io.write(string.format('RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p95_us": %d, "p99_us": %d, ' ..
    '"max_us": %d, "socket_errors": %d, "non_2xx": %d, "bad_answers": %d, "hits": %d, "misses": %d, ' ..
    '"grid_us": [%s]}\\n', summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, e, h, m, table.concat(grid, ",")))
end
threads = {}
setup = function(thread) table.insert(threads, thread) end
"""
DEFAULT_USERS = 20_000
"""Users the requests cycle over by default: every user of ml-latest-small's bundle; a seeded sample of
a 25M bundle's 162,540 (whose cached warm-up over all of them, one Python client, took over 6 minutes)."""


def sample_users(users: list[str], count: int, seed: int = 0) -> list[str]:
    """``count`` of ``users`` drawn without replacement (seeded, in their bundle order); all when fewer."""
    if len(users) <= count:
        return users
    import numpy as np

    keep = np.sort(np.random.default_rng(seed).choice(len(users), size=count, replace=False))
    return [users[k] for k in keep]


#: Percentiles the client reports (the latency distribution the plot draws).
GRID = [0.5 * k for k in range(1, 199)] + [99.5, 99.9, 99.99]


def bodies_file(folder: Path, query: str, users: list[str] | None, name: str) -> Path:
    """The request bodies the generator cycles through: ``query`` for each user (variable ``u``), or
    once without variables."""
    path = folder / f"{name}.jsonl"
    variables = [{"u": u} for u in users] if users is not None else [None]
    with open(path, "w") as fh:
        for v in variables:
            body = {"query": query, "variables": v} if v is not None else {"query": query}
            fh.write(json.dumps(body, separators=(",", ":")) + "\n")
    return path


def run_wrk(url: str, bodies: Path, duration: int, connections: int, threads: int, folder: Path) -> dict[str, Any]:
    script = folder / "bench.lua"
    script.write_text(f"GRID = {{{', '.join(f'{p:g}' for p in GRID)}}}\n" + WRK_SCRIPT)
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--timeout", "5s",
         "-s", str(script), url, "--", str(bodies)],
        capture_output=True, text=True, check=True,
    ).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("RESULT "))
    raw = json.loads(line[len("RESULT "):])
    seconds = raw["duration_us"] / 1e6
    return {"requests": raw["requests"], "rps": raw["requests"] / seconds, "p50_ms": raw["p50_us"] / 1000,
            "p95_ms": raw["p95_us"] / 1000, "p99_ms": raw["p99_us"] / 1000, "max_ms": raw["max_us"] / 1000,
            "errors": raw["socket_errors"] + raw["non_2xx"] + raw["bad_answers"], "hits": raw["hits"],
            "misses": raw["misses"], "uncached": raw["requests"] - raw["hits"] - raw["misses"],
            "grid_ms": [v / 1000 for v in raw["grid_us"]], "generator": f"wrk -t{threads} -c{connections}"}


def _py_worker(url: str, bodies: list[str], duration: float, concurrency: int, offset: int, queue: Any) -> None:
    import asyncio

    import httpx

    async def main() -> tuple[list[tuple[float, str]], int]:
        lat: list[tuple[float, str]] = []
        errors = 0
        end = time.perf_counter() + duration
        async with httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=concurrency)) as client:
            async def loop(k: int) -> None:
                nonlocal errors
                i = offset + k
                while time.perf_counter() < end:
                    body = bodies[i % len(bodies)]
                    i += concurrency
                    t = time.perf_counter()
                    r = await client.post("/graphql", content=body, headers={"content-type": "application/json"})
                    lat.append((time.perf_counter() - t, r.headers.get("x-cache", "")))
                    if r.status_code != 200 or b'"errors"' in r.content:
                        errors += 1
            await asyncio.gather(*(loop(k) for k in range(concurrency)))
        return lat, errors

    queue.put(asyncio.run(main()))


def run_python(url: str, bodies: Path, duration: int, connections: int, processes: int) -> dict[str, Any]:
    import multiprocessing as mp

    import numpy as np

    lines = bodies.read_text().splitlines()
    queue: Any = mp.Queue()
    per = max(1, connections // processes)
    procs = [mp.Process(target=_py_worker, args=(url, lines, duration, per, k * 7919, queue)) for k in range(processes)]
    started = time.perf_counter()
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - started
    lat = np.array([x for r in results for x, _ in r[0]]) * 1000
    kinds = np.array([c for r in results for _, c in r[0]])
    out = {"requests": len(lat), "rps": len(lat) / elapsed, "p50_ms": float(np.percentile(lat, 50)),
           "p95_ms": float(np.percentile(lat, 95)), "p99_ms": float(np.percentile(lat, 99)),
           "max_ms": float(lat.max()), "errors": sum(r[1] for r in results),
           "hits": int((kinds == "hit").sum()), "misses": int((kinds == "miss").sum()),
           "uncached": int((~np.isin(kinds, ["hit", "miss"])).sum()),
           "grid_ms": np.percentile(lat, GRID).tolist(),
           "generator": f"python httpx x{processes} processes, {connections} connections"}
    for kind in ("hit", "miss"):  # the client saw every answer's kind: exact percentiles per kind
        part = lat[kinds == kind]
        if len(part):
            out[f"client_{kind}_p99_ms"] = float(np.percentile(part, 99))
    return out


# -- server-side latency by kind (hit / miss / uncached) -------------------------------------------------

_BUCKET = re.compile(r'^hybridrec_request_seconds_bucket\{(?P<labels>[^}]*)\} (?P<value>\S+)$')


def scrape(url: str) -> tuple[dict[str, dict[float, float]], tuple[float, float]]:
    """One read of the server's /metrics: its latency histogram (``parse_latency``) and its index
    searches so far (``parse_batches``)."""
    import httpx

    text = httpx.get(f"{url}/metrics", timeout=10).text
    return parse_latency(text), parse_batches(text)


def parse_batches(text: str) -> tuple[float, float]:
    """Queries searched and index searches so far (graphql_api.batching's histogram: sum, count)."""
    totals = {"hybridrec_search_batch_size_sum": 0.0, "hybridrec_search_batch_size_count": 0.0}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in totals:
            totals[name] += float(value)
    return totals["hybridrec_search_batch_size_sum"], totals["hybridrec_search_batch_size_count"]


def parse_latency(text: str) -> dict[str, dict[float, float]]:
    """The request-latency histogram of a Prometheus text exposition: cumulative counts per bucket
    bound, by cache kind ('hit' for answers from the cache, 'computed' for the rest), summed over
    operations and workers."""
    out: dict[str, dict[float, float]] = {"hit": {}, "computed": {}}
    for line in text.splitlines():
        m = _BUCKET.match(line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m["labels"]))
        kind = "hit" if labels.get("cached") == "true" else "computed"
        bound = float(labels["le"])
        out[kind][bound] = out[kind].get(bound, 0.0) + float(m["value"])
    return out


def histogram_quantile(q: float, cumulative: dict[float, float]) -> float | None:
    """Prometheus' histogram_quantile: linear within the bucket that holds the q-th observation."""
    bounds = sorted(cumulative)
    if not bounds or cumulative[bounds[-1]] <= 0:
        return None
    total = cumulative[bounds[-1]]
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for b in bounds:
        c = cumulative[b]
        if c >= rank:
            if math.isinf(b):
                return prev_bound * 1000  # beyond the last finite bound: report that bound
            width = c - prev_count
            frac = (rank - prev_count) / width if width > 0 else 1.0
            return (prev_bound + (b - prev_bound) * frac) * 1000
        prev_bound, prev_count = b, c
    return prev_bound * 1000


def server_kinds(before: dict[str, dict[float, float]], after: dict[str, dict[float, float]]) -> dict[str, Any]:
    """Per kind: answers counted by the server during the run and their server-side p50/p95/p99 (ms)."""
    out: dict[str, Any] = {}
    for kind in ("hit", "computed"):
        delta = {b: after[kind].get(b, 0.0) - before[kind].get(b, 0.0) for b in after[kind]}
        count = max(delta.values(), default=0.0)
        entry: dict[str, Any] = {"count": int(count)}
        if count > 0:
            for q in (50, 95, 99):
                entry[f"p{q}_ms"] = histogram_quantile(q / 100, delta)
        out[kind] = entry
    return out


def warm(url: str, bodies: Path, connections: int, max_passes: int = 12) -> float:
    """Fill the answer cache of every worker: passes over all users on fresh connections (the kernel
    spreads connections over the workers) until a pass is all hits; returns its hit share. (A miss
    left for the measured run computes an answer on a worker's event loop, and the hits queued
    behind it wait: the run reports such misses apart.)"""
    import asyncio

    import httpx

    lines = bodies.read_text().splitlines()

    async def one_pass() -> float:
        hits = 0
        queue = list(lines)
        async with httpx.AsyncClient(base_url=url, timeout=120,
                                     limits=httpx.Limits(max_connections=connections)) as client:
            async def loop() -> None:
                nonlocal hits
                while queue:
                    body = queue.pop()
                    for attempt in range(3):  # a kept-alive connection the server closed: ask again
                        try:
                            r = await client.post("/graphql", content=body,
                                                  headers={"content-type": "application/json"})
                            break
                        except httpx.TransportError:
                            if attempt == 2:
                                raise
                    r.raise_for_status()
                    hits += r.headers.get("x-cache") == "hit"
            await asyncio.gather(*(loop() for _ in range(connections)))
        return hits / len(lines)

    share = 0.0
    for _ in range(max_passes):
        share = asyncio.run(one_pass())
        if share >= 1.0:
            break
    return share


class CpuMeter:
    """CPU seconds used by the server's process tree and by this process's children (the client).

    ``busiest_share`` is the busiest server process's part of the server's CPU (0.5 is an even split
    between two workers; 1.0 one worker did all the work). With uvicorn's own ``--workers`` (one
    shared listening socket) one worker sometimes took all of a load generator's connections;
    ``hybridrec serve`` gives each worker a SO_REUSEPORT socket of its own (graphql_api/server.py).
    """

    def __init__(self, server_pid: int) -> None:
        import psutil

        self.root = psutil.Process(server_pid)

    def _server(self) -> dict[int, float]:
        import psutil

        per_pid = {}
        for p in [self.root, *self.root.children(recursive=True)]:
            try:
                t = p.cpu_times()
                per_pid[p.pid] = t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return per_pid

    def __enter__(self) -> CpuMeter:
        import resource

        self.s0 = self._server()
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.c0 = r.ru_utime + r.ru_stime
        return self

    def __exit__(self, *exc: object) -> None:
        import resource

        used = {pid: t - self.s0.get(pid, 0.0) for pid, t in self._server().items()}
        self.server = sum(used.values())
        self.busiest_share = max(used.values(), default=0.0) / self.server if self.server > 0 else 0.0
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.client = r.ru_utime + r.ru_stime - self.c0
        self.rss_mib, self.anon_mib = self._rss()

    def _rss(self) -> tuple[list[float], list[float]]:
        """Resident MiB of each server process (the supervisor first, then the workers), and of it
        the anonymous part (heaps, arrays in memory; the rest is file pages: libraries and the
        bundle's mapped files, shared between the workers through the page cache)."""
        import psutil

        rss, anon = [], []
        for p in [self.root, *self.root.children(recursive=True)]:
            try:
                info = p.memory_info()
            except psutil.NoSuchProcess:
                continue
            rss.append(round(info.rss / 2**20, 1))
            anon.append(round((info.rss - info.shared) / 2**20, 1))
        return rss, anon


def measure(server: Server, bodies: Path, duration: int, connections: int, generator: str, folder: Path,
            metrics: bool = True, cores: int = 2) -> dict[str, Any]:
    """One run of the load generator against ``server``, with the server's CPU per request and, where
    it is hybridrec's (``metrics``), its own latency by cache kind and its index-search batching.
    ``cores``: how many cores the server's workers can use (its capacity figure)."""
    import numpy as np

    if metrics:
        before, batches_before = scrape(server.url)
    with CpuMeter(server.proc.pid) as cpu:
        if generator == "wrk":
            res = run_wrk(server.url, bodies, duration, connections, 1, folder)
        else:
            res = run_python(server.url, bodies, duration, connections, 2)
    if metrics:
        after, batches_after = scrape(server.url)
        res["server"] = server_kinds(before, after)
        queries, searches = np.subtract(batches_after, batches_before)
        res["search_batch_mean"] = float(queries / searches) if searches > 0 else None
    else:
        res["server"] = {"hit": {"count": 0}, "computed": {"count": 0}}
        res["search_batch_mean"] = None
    res["server_cpu_ms_per_req"] = cpu.server / max(res["requests"], 1) * 1000
    res["client_cpu_ms_per_req"] = cpu.client / max(res["requests"], 1) * 1000
    res["busiest_worker_cpu_share"] = round(cpu.busiest_share, 3)
    res["server_rss_mib"], res["server_anon_mib"] = cpu.rss_mib, cpu.anon_mib
    # what its cores (2, or 1 for the one-worker reference) could serve if the server had them to
    # itself (no client, no neighbours)
    res["capacity_rps"] = 1000 * cores / max(res["server_cpu_ms_per_req"], 1e-9)
    return res


def serving_groups(phases: list[str]) -> list[tuple[str, list[str]]]:
    """The phases by the server they need, in run order: 'reference' (the stock app), 'cached' and
    'uncached' (hybridrec serve with its answer cache on or off)."""
    def kind(phase: str) -> str:
        base = phase_parts(phase)[0]
        return base if base == "reference" else "cached" if base in ("cached", "explain-cached") else "uncached"

    return [(k, [p for p in phases if kind(p) == k]) for k in ("reference", "cached", "uncached")
            if any(kind(p) == k for p in phases)]


# -- main -----------------------------------------------------------------------------------------------

SUMMARY_KEYS = ("rps", "p50_ms", "p95_ms", "p99_ms", "max_ms", "server_cpu_ms_per_req", "capacity_rps")


def summarise(phase: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median run of a phase (each figure's median over the runs), with hit/miss counts."""
    import numpy as np

    med = {k: float(np.median([r[k] for r in runs])) for k in SUMMARY_KEYS}
    out: dict[str, Any] = {k: med[k] for k in SUMMARY_KEYS[:5]}
    out["errors"] = int(sum(r["errors"] for r in runs))
    out["target"] = TARGETS.get(phase_parts(phase)[0], "")
    out["met"] = target_met(phase, med)
    out["runs"] = len(runs)
    out["connections"] = runs[0].get("connections")
    out["requests"] = int(sum(r["requests"] for r in runs))
    out["hits"] = int(sum(r["hits"] for r in runs))
    out["misses"] = int(sum(r["misses"] for r in runs))
    out["uncached"] = int(sum(r["uncached"] for r in runs))
    for kind in ("hit", "computed"):
        vals = [r["server"][kind].get("p99_ms") for r in runs if r["server"][kind].get("p99_ms") is not None]
        out[f"server_{kind}_p99_ms"] = float(np.median(vals)) if vals else None
    batches = [r["search_batch_mean"] for r in runs if r.get("search_batch_mean") is not None]
    out["search_batch_mean"] = round(float(np.median(batches)), 2) if batches else None
    out["server_cpu_ms_per_req"] = med["server_cpu_ms_per_req"]
    out["capacity_rps"] = med["capacity_rps"]
    out["loadavg_before"] = [r["loadavg_before"] for r in runs]
    out["server_rss_mib"] = runs[-1].get("server_rss_mib")  # each server process's after the last run
    out["server_anon_mib"] = runs[-1].get("server_anon_mib")  # and its anonymous part
    out["rps_runs"] = [round(r["rps"], 1) for r in runs]
    out["p99_ms_runs"] = [round(r["p99_ms"], 2) for r in runs]
    return out


def target_met(phase: str, fig: dict[str, float]) -> bool | None:
    phase = phase_parts(phase)[0]
    if phase == "cached":
        return fig["rps"] >= 2000 and fig["p99_ms"] <= 25
    if phase == "uncached":
        return fig["rps"] >= 800
    if phase.startswith("explain"):
        return fig["p99_ms"] <= 50
    return None


def yardstick(reference: dict[str, Any]) -> dict[str, float]:
    """How the stock app ran here against the API issue's figures for it: > 1 is a faster machine
    (or a quieter moment) than the one the targets were set on."""
    return {"rps_ratio": reference["rps"] / STOCK_QUOTED["rps"],
            "p99_ratio": reference["p99_ms"] / STOCK_QUOTED["p99_ms"]}


def plot(results: dict[str, Any], path: Path) -> None:
    """Client latency per phase: the distribution (a histogram rebuilt from the percentile grid of the
    median run) with p50/p95/p99 marked, log-scaled milliseconds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    phases = [p for p in results["phases"] if phase_parts(p)[1] is None]  # the sweep is in the table
    fig, axes = plt.subplots(len(phases), 1, figsize=(8, 2.4 * len(phases) + 0.6), squeeze=False)
    for ax, phase in zip(axes[:, 0], phases, strict=True):
        summary = results["phases"][phase]
        run = results["latency"][phase]
        grid = np.asarray(run["grid_ms"], dtype=float)
        pct = np.asarray(GRID, dtype=float)
        lo, hi = max(grid.min(), 0.05), max(grid.max(), 0.1)
        edges = np.geomspace(lo * 0.9, hi * 1.1, 40)
        # each step between consecutive percentiles holds that share of the requests
        shares = np.diff(np.concatenate([[0.0], pct])) / 100
        weights, _ = np.histogram(grid, bins=edges, weights=shares)
        ax.bar(edges[:-1], weights * 100, width=np.diff(edges), align="edge", color="#4c72b0", alpha=0.8)
        for q, style in (("p50_ms", ":"), ("p95_ms", "--"), ("p99_ms", "-")):
            ax.axvline(summary[q], color="k", linestyle=style, linewidth=1, label=f"{q[:3]} {summary[q]:.1f} ms")
        ax.set_xscale("log")
        ax.set_ylabel("% of requests")
        ax.set_title(f"{phase}: {summary['rps']:.0f} req/s (median of {summary['runs']}; target {summary['target']})",
                     fontsize=9)
        ax.legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("latency (ms, client side)")
    fig.suptitle(f"API load: bundle {results['bundle']}, {results['workers']} workers, {results['generator']}, "
                 f"load avg {results['loadavg']:.1f} at start", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


EXECUTORS = ("plain", "graphql-core")


def compare_servers(servers: dict[str, Server], users: list[str], phases: list[str], args: argparse.Namespace,
                    generator: str, folder: Path) -> dict[str, Any]:
    """Two servers of the same bundle (cache off) up at once, their runs interleaved (A B B A ...) so
    both sides see the same machine; per phase the medians, the ratios first/second of the medians
    of server CPU per request and of req/s, and (``*_paired``, bench/paired.py) the median of the
    ratios of adjacent runs with its 95% interval (from 6 runs a side; an even ``--repeat`` gives
    each order, A B and B A, as many pairs): the figure to quote on a drifting machine."""
    import numpy as np

    names = list(servers)
    out: dict[str, Any] = {}
    for phase in phases:
        query = EXPLAINED if phase.startswith("explain") else CANONICAL
        bodies = bodies_file(folder, query, users, phase)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
        for name in names:  # one unmeasured pass each: compile, fill the OS caches
            measure(servers[name], bodies, 2, args.connections, generator, folder)
        for k in range(args.repeat):
            for name in (names if k % 2 == 0 else names[::-1]):
                load_before = os.getloadavg()[0]
                res = measure(servers[name], bodies, args.duration, args.connections, generator, folder)
                res["loadavg_before"] = round(load_before, 2)
                runs[name].append({key: v for key, v in res.items() if key != "grid_ms"})
                log(f"bench: {name:12s} {phase:8s} run {k + 1}/{args.repeat} {res['rps']:7.0f} req/s  "
                    f"p99 {res['p99_ms']:6.2f} ms  server cpu {res['server_cpu_ms_per_req']:.2f} ms/req  "
                    f"errors {res['errors']}  (load avg before {load_before:.1f})")
        med = {name: {key: float(np.median([r[key] for r in runs[name]]))
                      for key in ("rps", "p99_ms", "server_cpu_ms_per_req")} for name in names}
        first, second = names
        out[phase] = {"median": med, "runs": runs,
                      "errors": {name: int(sum(r["errors"] for r in runs[name])) for name in names},
                      "cpu_ratio": med[first]["server_cpu_ms_per_req"] / med[second]["server_cpu_ms_per_req"],
                      "rps_ratio": med[first]["rps"] / med[second]["rps"],
                      "cpu_paired": paired_ratio([r["server_cpu_ms_per_req"] for r in runs[first]],
                                                 [r["server_cpu_ms_per_req"] for r in runs[second]]).to_dict(),
                      "rps_paired": paired_ratio([r["rps"] for r in runs[first]],
                                                 [r["rps"] for r in runs[second]]).to_dict()}
    return out


def paired_servers(root: Path, args: argparse.Namespace, folder: Path) -> dict[str, Server]:
    """The two servers of a paired run: this checkout's and ``--against``'s, or (``--compare-executor``)
    graphql_api/execution.py's executor and graphql-core's own path."""
    servers: dict[str, Server] = {}
    try:
        if args.against:
            for name, repo in (("this", REPO), ("against", args.against)):
                servers[name] = Server.hybridrec(root, folder / f"events-{name}", args.workers, False,
                                                 folder / f"uvicorn-{name}.log", repo=repo)
        else:
            for name in EXECUTORS:
                servers[name] = Server.hybridrec(root, folder / f"events-{name}", args.workers, False,
                                                 folder / f"uvicorn-{name}.log", plain_executor=name == "plain")
    except BaseException:
        for server in servers.values():
            server.stop()
        raise
    return servers


def main(argv: list[str] | None = None) -> int:
    from bench.harness import CACHE as SCALE_CACHE

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle-root", type=Path, help="an existing bundle root (default: build one)")
    ap.add_argument("--scale", type=int, metavar="N",
                    help="serve the bundle bench/scale.py published at N interactions (its index stage, under "
                         "--scale-cache), e.g. 25000000")
    ap.add_argument("--scale-cache", type=Path, default=SCALE_CACHE, help="bench/scale.py's --cache (default its default)")
    ap.add_argument("--users", type=int, default=DEFAULT_USERS,
                    help=f"requests cycle over a seeded sample of this many of the bundle's users (all when fewer; "
                         f"default {DEFAULT_USERS:,}): the cached phases' warm-up passes over each of them")
    ap.add_argument("--work-dir", type=Path, default=REPO / "data" / "bench_api")
    ap.add_argument("--signals", help="signals of a built bundle (default: the pipeline's, comma-separated)")
    ap.add_argument("--duration", type=int, default=10, help="seconds per run of a phase")
    ap.add_argument("--repeat", type=int, default=None,
                    help="runs per phase (figures are their medians); default 3, or 8 a side for a paired run "
                         "(--against, --compare-executor), whose interval needs 6 or more, even")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=5,
                    help="seconds of each phase's load run before its measured runs, not measured (0: none): "
                         "a 25M bundle's first requests fault its mapped factors in (p99 2.4 s in the first "
                         "10 s run, 29 ms in the next)")
    ap.add_argument("--workers", type=int, default=2, help="uvicorn workers")
    ap.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    ap.add_argument("--phases", default="reference,cached,uncached,explain,explain-cached")
    ap.add_argument("--explain-connections", default="2,4,8",
                    help="also run the explain phase at these connection counts (phases explain@C); '' for none")
    ap.add_argument("--redis", action="store_true",
                    help="start a redis-server and serve with it (cache and state shared by the workers)")
    ap.add_argument("--results", type=Path, default=REPO / "bench" / "results",
                    help="folder for api_load.json and api_load_latency.png")
    ap.add_argument("--logs", type=Path, help="keep the uvicorn logs in this folder")
    ap.add_argument("--compare-executor", action="store_true",
                    help="only compare graphql_api/execution.py's executor with graphql-core's own path, paired, "
                         "on the uncached phases of --phases (default uncached,explain); writes api_load_executor.json")
    ap.add_argument("--against", type=Path, metavar="CHECKOUT",
                    help="only compare this checkout's server with CHECKOUT's (e.g. a git worktree of the code "
                         "before a change) on the same bundle, paired like --compare-executor; writes "
                         "api_load_against.json")
    args = ap.parse_args(argv)
    if args.repeat is None:
        args.repeat = 8 if args.against or args.compare_executor else 3
    if args.repeat < 1 or args.duration < 1 or args.users < 1:
        ap.error("--repeat, --duration and --users must be >= 1")
    if args.scale is not None:
        if args.bundle_root:
            ap.error("give --scale or --bundle-root, not both")
        args.bundle_root = args.scale_cache / "scale" / f"n{args.scale}" / "bundles"
    import numpy as np

    from training.pipeline import DEFAULT_SIGNALS

    signals = args.signals.split(",") if args.signals else list(DEFAULT_SIGNALS)
    root = args.bundle_root or args.work_dir / f"bundles-{'-'.join(signals)}"
    if not (root / "latest").exists():
        if args.bundle_root:
            ap.error(f"{root} has no published bundle (no 'latest')")
        build_bundle(root, args.work_dir, signals)
    from hybrid.bundle import load

    bundle = load(root)
    users = sample_users([str(u) for u in bundle.users.ids], args.users)
    log(f"bench: bundle {bundle.version} ({', '.join(bundle.signals)}), {len(bundle.users)} users "
        f"({len(users)} in the requests), {len(bundle.items)} items")
    generator = args.generator
    if generator == "auto":
        generator = "wrk" if shutil.which("wrk") else "python"
    folder = Path(tempfile.mkdtemp(prefix="api-load-"))
    results: dict[str, Any] = {"bundle": bundle.version, "signals": list(bundle.signals),
                               "users": len(bundle.users), "users_requested": len(users),
                               "items": len(bundle.items), "workers": args.workers, "cpus": os.cpu_count(),
                               "connections": args.connections, "duration_s": args.duration, "repeat": args.repeat,
                               "warmup_s": args.warmup,
                               "generator": generator, "redis": bool(args.redis),
                               "loadavg": os.getloadavg()[0], "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                               "phases": {}, "all_runs": [], "latency": {}}
    del bundle
    if args.compare_executor or args.against:
        if args.against and not (args.against / "cluster" / "cli.py").exists():
            ap.error(f"--against {args.against}: not a hybridrec checkout (no cluster/cli.py)")
        wanted = [p for p in args.phases.split(",") if p in ("uncached", "explain")] or ["uncached", "explain"]
        loadavg = os.getloadavg()[0]
        servers = paired_servers(root, args, folder)
        try:
            comparison = compare_servers(servers, users, wanted, args, generator, folder)
        finally:
            for server in servers.values():
                server.stop()
            shutil.rmtree(folder, ignore_errors=True)
        names = list(servers)
        label = "checkouts" if args.against else "executors"
        print(f"\n{label}, paired (runs interleaved, {args.repeat} x {args.duration}s each, {args.connections} "
              f"connections, {args.workers} workers, {generator}; load average at start {loadavg:.1f}, before runs "
              f"{min(r['loadavg_before'] for c in comparison.values() for rs in c['runs'].values() for r in rs):.1f}-"
              f"{max(r['loadavg_before'] for c in comparison.values() for rs in c['runs'].values() for r in rs):.1f})")
        if args.against:
            print(f"this: {REPO}; against: {args.against}")
        print(f"{'phase':9s} {'server':13s} {'req/s':>7s} {'p99 ms':>7s} {'cpu/req ms':>10s} {'errors':>6s}")
        for phase, c in comparison.items():
            for name in names:
                m = c["median"][name]
                print(f"{phase:9s} {name:13s} {m['rps']:7.0f} {m['p99_ms']:7.2f} {m['server_cpu_ms_per_req']:10.3f} "
                      f"{c['errors'][name]:6d}")
            print(f"{phase:9s} {names[0]}/{names[1]}: server cpu per request {c['cpu_ratio']:.3f}x, "
                  f"req/s {c['rps_ratio']:.3f}x (ratios of the medians)")
            for key, what in (("cpu_paired", "server cpu per request"), ("rps_paired", "req/s")):
                ratio = PairedRatio.from_dict(c[key])
                print(f"{phase:9s} {names[0]}/{names[1]}: {what}, pair by pair: {ratio.describe()}")
        args.results.mkdir(parents=True, exist_ok=True)
        path = args.results / ("api_load_against.json" if args.against else "api_load_executor.json")
        path.write_text(json.dumps({"bundle_root": str(root), "against": str(args.against or ""),
                                    "loadavg": loadavg, "workers": args.workers,
                                    "connections": args.connections, "generator": generator,
                                    "started": results["started"], "phases": comparison}, indent=2))
        print(f"wrote {path}")
        return 0
    phases = args.phases.split(",")
    phases += [f"explain@{c}" for c in args.explain_connections.split(",") if c.strip()]
    unknown = [p for p in phases if phase_parts(p)[0] not in TARGETS]
    if unknown:
        ap.error(f"unknown phase(s) {unknown}; known: {', '.join(TARGETS)}")
    redis_proc = None
    redis_url = None
    if args.redis:
        redis_port = free_port()
        redis_proc = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
             "--dir", str(folder), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        time.sleep(0.5)
    runs: dict[str, list[dict[str, Any]]] = {p: [] for p in phases}
    try:
        for kind, wanted in serving_groups(phases):
            if kind == "reference":
                server = Server.stock(folder / "uvicorn-reference.log")
            else:
                if redis_url:
                    import redis

                    redis.Redis.from_url(redis_url).flushall()
                server = Server.hybridrec(root, folder / "events", args.workers, kind == "cached",
                                          folder / f"uvicorn-{kind}.log", redis_url)
            try:
                for phase in wanted:
                    connections = phase_parts(phase)[1] or args.connections
                    if kind == "reference":
                        bodies = bodies_file(folder, STOCK_QUERY, None, phase)
                    else:
                        query = EXPLAINED if phase.startswith("explain") else CANONICAL
                        bodies = bodies_file(folder, query, users, phase)
                    hit_share = warm(server.url, bodies, connections) if kind == "cached" else None
                    if args.warmup:  # not measured: the bundle's mapped pages fault in, caches fill
                        measure(server, bodies, args.warmup, connections, generator, folder,
                                metrics=kind != "reference", cores=1 if kind == "reference" else 2)
                    for k in range(args.repeat):
                        load_before = os.getloadavg()[0]
                        res = measure(server, bodies, args.duration, connections, generator, folder,
                                      metrics=kind != "reference", cores=1 if kind == "reference" else 2)
                        res["phase"], res["run"], res["connections"] = phase, k + 1, connections
                        res["loadavg_before"] = round(load_before, 2)
                        res["warm_hit_share"] = hit_share
                        runs[phase].append(res)
                        srv = res["server"]
                        log(f"bench: {phase:15s} run {k + 1}/{args.repeat} {res['rps']:8.0f} req/s  "
                            f"p50 {res['p50_ms']:6.2f} ms  p95 {res['p95_ms']:6.2f} ms  p99 {res['p99_ms']:6.2f} ms  "
                            f"errors {res['errors']}  hits {res['hits']} misses {res['misses']} "
                            f"(server: {srv['hit']['count']} hits, {srv['computed']['count']} computed)  "
                            f"server cpu {res['server_cpu_ms_per_req']:.2f} ms/req, busiest worker {res['busiest_worker_cpu_share']:.0%} of it  "
                            f"(load avg before {load_before:.1f})")
            finally:
                server.stop()
    finally:
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait()
        if args.logs:
            args.logs.mkdir(parents=True, exist_ok=True)
            for log_file in folder.glob("uvicorn-*.log"):
                shutil.copy(log_file, args.logs / log_file.name)
        shutil.rmtree(folder, ignore_errors=True)

    for phase in phases:
        if not runs[phase]:
            continue
        results["phases"][phase] = summarise(phase, runs[phase])
        median_run = sorted(runs[phase], key=lambda r: r["p99_ms"])[len(runs[phase]) // 2]
        results["latency"][phase] = {"run": median_run["run"], "grid_ms": [round(v, 3) for v in median_run["grid_ms"]]}
        for r in runs[phase]:
            results["all_runs"].append({k: v for k, v in r.items() if k != "grid_ms"})
    results["latency_percentiles"] = GRID

    print(f"\nAPI load bench: bundle {results['bundle']} ({', '.join(results['signals'])}), "
          f"{results['users']} users x {results['items']} items (requests for {results['users_requested']} users); uvicorn {args.workers} workers on "
          f"{results['cpus']} CPUs{' with Redis' if args.redis else ''}; {generator}, {args.connections} "
          f"connections, {args.repeat} x {args.duration}s per phase (medians)")
    loads = [r["loadavg_before"] for r in results["all_runs"]]
    print(f"load average at start {results['loadavg']:.1f}, before runs {min(loads, default=0):.1f}-"
          f"{max(loads, default=0):.1f} (other processes share these CPUs); 'cpu/req' is server CPU per request, "
          "'cap' the req/s its otherwise idle cores (two; one for the reference) would give at that cost")
    print(f"{'phase':16s} {'req/s':>8s} {'p50 ms':>8s} {'p95 ms':>8s} {'p99 ms':>8s} {'errors':>7s} "
          f"{'cpu/req':>8s} {'cap':>7s}  {'met':5s} target")
    for phase, r in results["phases"].items():
        met = {True: "yes", False: "NO", None: "-"}[r["met"]]
        print(f"{phase:16s} {r['rps']:8.0f} {r['p50_ms']:8.2f} {r['p95_ms']:8.2f} {r['p99_ms']:8.2f} "
              f"{r['errors']:7d} {r['server_cpu_ms_per_req']:8.2f} {r['capacity_rps']:7.0f}  {met:5s} "
              f"{r['target']}")
    ref = results["phases"].get("reference")
    if ref:
        results["reference"] = {**yardstick(ref), "quoted": STOCK_QUOTED}
        print(f"yardstick: stock Strawberry on Starlette, 1 worker, a trivial 10-item query: {ref['rps']:.0f} req/s, "
              f"p99 {ref['p99_ms']:.1f} ms here against the API issue's {STOCK_QUOTED['rps']:.0f} req/s, p99 "
              f"{STOCK_QUOTED['p99_ms']:.0f} ms: this machine answers it {results['reference']['rps_ratio']:.2f}x as fast")
    batching = [f"{phase} {r['search_batch_mean']}" for phase, r in results["phases"].items()
                if r.get("search_batch_mean") is not None]
    if batching:
        print("mean queries per index search (concurrent requests' searches batched): " + ", ".join(batching))
    rss = [f"{phase} {'/'.join(f'{v:,.0f}' for v in r['server_rss_mib'])} "
           f"({'/'.join(f'{v:,.0f}' for v in r.get('server_anon_mib') or [])})"
           for phase, r in results["phases"].items() if r.get("server_rss_mib")]
    if rss:
        print("server RSS MiB after each phase, supervisor/workers (anonymous part; the rest is file pages: "
              "libraries and the bundle's mapped files, shared between workers in the page cache): " + ", ".join(rss))
    print("cache hits and misses apart (client: answers by x-cache header; server: p99 from its histogram)")
    for phase, r in results["phases"].items():
        hit = r["server_hit_p99_ms"]
        comp = r["server_computed_p99_ms"]
        print(f"{phase:16s} hits {r['hits']:8d}  misses {r['misses']:6d}  uncached {r['uncached']:8d}  "
              f"server p99: hits {'-' if hit is None else f'{hit:.2f} ms':>9s}, computed "
              f"{'-' if comp is None else f'{comp:.2f} ms':>9s}")
    args.results.mkdir(parents=True, exist_ok=True)
    json_path = args.results / "api_load.json"
    json_path.write_text(json.dumps(results, indent=2, default=lambda o: float(o) if isinstance(o, np.floating) else str(o)))
    png_path = args.results / "api_load_latency.png"
    if results["phases"]:
        plot(results, png_path)
    print(f"wrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
