"""Load bench of the GraphQL API on loopback: uvicorn (2 workers) in one process group, the load
generator (wrk, a C client, or a Python fallback) in another.

The canonical query, over every user of the bundle in turn::

    recommendations(userId, first: 10) { variant items { score item { id title genres } } }

Phases (each reports req/s and p50/p95/p99 latency):

- ``cached``:        answers served from the answer cache (a warm-up pass fills it first);
- ``uncached``:      the cache switched off (HYBRIDREC_CACHE_TTL=0): every request folds, ranks and
                     resolves;
- ``explain``:       the canonical query plus each item's explanation, cache off;
- ``explain-cached`` the same, cached.

Targets on a 2-core machine: cached >= 2000 req/s with p99 <= 25 ms; uncached >= 800 req/s;
explanations p99 <= 50 ms.

Usage::

    python bench/api_load.py                       # builds a bundle from ml-latest-small (or synthetic)
    python bench/api_load.py --bundle-root ROOT    # an existing bundle root (its latest)
    python bench/api_load.py --duration 20 --connections 16 --json bench/results/api_load.json
"""

from __future__ import annotations

import argparse
import json
import os
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

ML_SMALL = REPO.parent / "shared" / "data" / "ml-latest-small"
CANONICAL = "query($u: ID!) { recommendations(userId: $u, first: 10) { variant items { score item { id title genres } } } }"
EXPLAINED = ("query($u: ID!) { recommendations(userId: $u, first: 10) { variant items { score item { id title genres } "
             "explanation { sentence mainSignal contributions { signal value } drivers { similarity item { id title } } } "
             "} } }")
TARGETS = {
    "cached": "rps >= 2000 and p99 <= 25 ms",
    "uncached": "rps >= 800",
    "explain": "p99 <= 50 ms",
    "explain-cached": "p99 <= 50 ms",
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- the bundle ----------------------------------------------------------------------------------------

def build_bundle(root: Path, work: Path, signals: list[str]) -> None:
    """Ingest ml-latest-small (or synthetic data), fit the signals, publish one bundle under ``root``."""
    import dask
    from distributed import Client, LocalCluster

    from etl.dataset import Dataset
    from etl.ingest import ingest
    from hybrid.bundle import publish
    from hybrid.fusion import Fusion
    from hybrid.variants import Variants
    from models.base import TrainData, TrainingOptions, model_class

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
    models: dict[str, Any] = {}
    with LocalCluster(n_workers=1, threads_per_worker=os.cpu_count() or 2, processes=False,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        options = TrainingOptions(client=client, seed=0)
        for name in signals:
            started = time.perf_counter()
            try:
                klass = model_class(name)
            except (ValueError, ImportError) as err:
                log(f"bench: signal {name} unavailable ({err}); skipped")
                continue
            config = klass.Config()
            if name == "als":
                config = klass.Config(factors=64, iterations=10)
            models[name] = klass(config).fit(data, options)
            log(f"bench: fit {name} in {time.perf_counter() - started:.1f}s")
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
    def __init__(self, root: Path, events: Path, workers: int, cache: bool, log_path: Path,
                 redis_url: str | None = None) -> None:
        self.port = free_port()
        env = {**os.environ, "PYTHONPATH": str(REPO), "HYBRIDREC_BUNDLE_ROOT": str(root),
               "HYBRIDREC_EVENTS_DIR": str(events), "HYBRIDREC_ACCESS_LOG": "false",
               "HYBRIDREC_CACHE_TTL": "3600" if cache else "0", "HYBRIDREC_RELOAD_INTERVAL": "5"}
        env.pop("HYBRIDREC_REDIS_URL", None)
        if redis_url:
            env["HYBRIDREC_REDIS_URL"] = redis_url
        self.log_path = log_path
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "graphql_api.app:create_app", "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", str(workers), "--no-access-log", "--log-level", "warning",
             "--loop", "uvloop", "--http", "httptools"],
            cwd=REPO, env=env, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
            start_new_session=True,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        self._wait(workers)

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
local errors = 0
response = function(status, headers, body)
  if status ~= 200 or string.find(body, '"errors"', 1, true) then errors = errors + 1 end
end
done = function(summary, latency, requests)
  io.write(string.format('RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p95_us": %d, "p99_us": %d, ' ..
    '"max_us": %d, "socket_errors": %d, "non_2xx": %d}\\n', summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
"""


def bodies_file(folder: Path, query: str, users: list[str], name: str) -> Path:
    path = folder / f"{name}.jsonl"
    with open(path, "w") as fh:
        for u in users:
            fh.write(json.dumps({"query": query, "variables": {"u": u}}, separators=(",", ":")) + "\n")
    return path


def run_wrk(url: str, bodies: Path, duration: int, connections: int, threads: int, folder: Path) -> dict[str, Any]:
    script = folder / "bench.lua"
    script.write_text(WRK_SCRIPT)
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
            "errors": raw["socket_errors"] + raw["non_2xx"], "generator": f"wrk -t{threads} -c{connections}"}


def _py_worker(url: str, bodies: list[str], duration: float, concurrency: int, offset: int, queue: Any) -> None:
    import asyncio

    import httpx

    async def main() -> tuple[list[float], int]:
        lat: list[float] = []
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
                    lat.append(time.perf_counter() - t)
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
    lat = np.array([x for r in results for x in r[0]]) * 1000
    return {"requests": len(lat), "rps": len(lat) / elapsed, "p50_ms": float(np.percentile(lat, 50)),
            "p95_ms": float(np.percentile(lat, 95)), "p99_ms": float(np.percentile(lat, 99)),
            "max_ms": float(lat.max()), "errors": sum(r[1] for r in results),
            "generator": f"python httpx x{processes} processes, {connections} connections"}


def warm(url: str, bodies: Path, connections: int, max_passes: int = 12) -> float:
    """Fill the answer cache of every worker: passes over all users on fresh connections (the kernel
    spreads connections over the workers) until a pass is (almost) all hits; returns its hit share."""
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
                    r = await client.post("/graphql", content=body, headers={"content-type": "application/json"})
                    r.raise_for_status()
                    hits += r.headers.get("x-cache") == "hit"
            await asyncio.gather(*(loop() for _ in range(connections)))
        return hits / len(lines)

    share = 0.0
    for _ in range(max_passes):
        share = asyncio.run(one_pass())
        if share >= 0.995:
            break
    return share


class CpuMeter:
    """CPU seconds used by the server's process tree and by this process's children (the client)."""

    def __init__(self, server_pid: int) -> None:
        import psutil

        self.root = psutil.Process(server_pid)

    def _server(self) -> float:
        import psutil

        total = 0.0
        for p in [self.root, *self.root.children(recursive=True)]:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    def __enter__(self) -> CpuMeter:
        import resource

        self.s0 = self._server()
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.c0 = r.ru_utime + r.ru_stime
        return self

    def __exit__(self, *exc: object) -> None:
        import resource

        self.server = self._server() - self.s0
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.client = r.ru_utime + r.ru_stime - self.c0


# -- main -----------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle-root", type=Path, help="an existing bundle root (default: build one)")
    ap.add_argument("--work-dir", type=Path, default=REPO / "data" / "bench_api")
    ap.add_argument("--signals", default="popularity,als,content", help="signals of a built bundle")
    ap.add_argument("--duration", type=int, default=15, help="seconds per phase")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2, help="uvicorn workers")
    ap.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    ap.add_argument("--phases", default="cached,uncached,explain,explain-cached")
    ap.add_argument("--redis", action="store_true",
                    help="start a redis-server and serve with it (cache and state shared by the workers)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--logs", type=Path, help="keep the uvicorn logs in this folder")
    args = ap.parse_args(argv)

    root = args.bundle_root or args.work_dir / "bundles"
    if not (root / "latest").exists():
        if args.bundle_root:
            ap.error(f"{root} has no published bundle (no 'latest')")
        build_bundle(root, args.work_dir, args.signals.split(","))
    from hybrid.bundle import load

    bundle = load(root)
    users = [str(u) for u in bundle.users.ids]
    log(f"bench: bundle {bundle.version} ({', '.join(bundle.signals)}), {len(users)} users, "
        f"{len(bundle.items)} items")
    generator = args.generator
    if generator == "auto":
        generator = "wrk" if shutil.which("wrk") else "python"
    folder = Path(tempfile.mkdtemp(prefix="api-load-"))
    results: dict[str, Any] = {"bundle": bundle.version, "signals": list(bundle.signals), "users": len(users),
                               "items": len(bundle.items), "workers": args.workers, "cpus": os.cpu_count(),
                               "loadavg": os.getloadavg()[0], "phases": {}}
    del bundle
    phases = args.phases.split(",")
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
    results["redis"] = bool(args.redis)
    try:
        for cache in (True, False):
            wanted = [p for p in phases if (p in ("cached", "explain-cached")) == cache]
            if not wanted:
                continue
            if redis_url:
                import redis

                redis.Redis.from_url(redis_url).flushall()
            server = Server(root, folder / "events", args.workers, cache, folder / f"uvicorn-{cache}.log", redis_url)
            try:
                for phase in wanted:
                    query = EXPLAINED if phase.startswith("explain") else CANONICAL
                    bodies = bodies_file(folder, query, users, phase)
                    hit_share = warm(server.url, bodies, args.connections) if cache else None
                    load_before = os.getloadavg()[0]
                    with CpuMeter(server.proc.pid) as cpu:
                        if generator == "wrk":
                            res = run_wrk(server.url, bodies, args.duration, args.connections, 1, folder)
                        else:
                            res = run_python(server.url, bodies, args.duration, args.connections, 2)
                    res["loadavg_before"] = round(load_before, 2)
                    res["warm_hit_share"] = hit_share
                    res["server_cpu_ms_per_req"] = cpu.server / max(res["requests"], 1) * 1000
                    res["client_cpu_ms_per_req"] = cpu.client / max(res["requests"], 1) * 1000
                    # what 2 cores could serve if the server had them to itself (no client, no neighbours)
                    res["capacity_2_cores_rps"] = 2000 / res["server_cpu_ms_per_req"]
                    res["target"] = TARGETS.get(phase, "")
                    results["phases"][phase] = res
                    log(f"bench: {phase:15s} {res['rps']:8.0f} req/s  p50 {res['p50_ms']:6.2f} ms  "
                        f"p95 {res['p95_ms']:6.2f} ms  p99 {res['p99_ms']:6.2f} ms  errors {res['errors']}  "
                        f"server cpu {res['server_cpu_ms_per_req']:.2f} ms/req  (load avg before {load_before:.1f})")
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

    print(f"\nAPI load bench: bundle {results['bundle']} ({', '.join(results['signals'])}), "
          f"{results['users']} users x {results['items']} items; uvicorn {args.workers} workers on "
          f"{results['cpus']} CPUs{' with Redis' if args.redis else ''}; {generator}, {args.connections} "
          f"connections, {args.duration}s per phase")
    print(f"load average at start {results['loadavg']:.1f} (other processes share these CPUs); 'cpu/req' is "
          "server CPU per request, 'cap' the req/s two otherwise idle cores would give at that cost")
    print(f"{'phase':16s} {'req/s':>8s} {'p50 ms':>8s} {'p95 ms':>8s} {'p99 ms':>8s} {'errors':>7s} "
          f"{'cpu/req':>8s} {'cap':>7s}  target")
    for phase, r in results["phases"].items():
        print(f"{phase:16s} {r['rps']:8.0f} {r['p50_ms']:8.2f} {r['p95_ms']:8.2f} {r['p99_ms']:8.2f} "
              f"{r['errors']:7d} {r['server_cpu_ms_per_req']:8.2f} {r['capacity_2_cores_rps']:7.0f}  {r['target']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
