"""Faults under load, longer than the tests: what fails and what is lost (it must be nothing).

The scenarios of bench/fault_scenarios.py, on a bundle fit on the tiny synthetic dataset of the
tests, with real redis-server and uvicorn processes on loopback and client threads as load:

- ``redis_killed[redis+log]``: Redis SIGKILLed mid-load and restarted; the API has a local log;
- ``redis_killed[redis-only]``: the same without a local log (mutations refused while Redis is down);
- ``api_restarted[log|redis, SIGKILL|SIGTERM]``: the API killed and started again while recording;
- ``bundle_published``: new bundles published (hot reload, two uvicorn workers) under load.

Per scenario it prints requests sent / failed / unavailable (the API itself restarting) / refused
(SERVICE_UNAVAILABLE, never acknowledged), interactions acknowledged / found afterwards / lost, and
writes them all to RESULTS/faults.json.

Usage::

    python bench/faults.py                      # 20 s of load per scenario
    python bench/faults.py --seconds 60 --results bench/results/
"""

from __future__ import annotations

import argparse
import json
import platform
import signal
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="load per scenario (default 20)")
    parser.add_argument("--down", type=float, default=3.0, help="seconds Redis stays down (default 3)")
    parser.add_argument("--restarts", type=int, default=3, help="API restarts per api_restarted scenario (default 3)")
    parser.add_argument("--threads", type=int, default=4, help="client threads (default 4)")
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "results",
                        help="folder for faults.json (default bench/results/)")
    parser.add_argument("--only", default=None, help="comma-separated scenario prefixes to run")
    args = parser.parse_args(argv)

    import dask
    from distributed import Client, LocalCluster

    from bench.fault_scenarios import (
        api_restarted_under_load,
        bundle_published_under_load,
        describe,
        redis_killed_under_load,
    )
    from bench.tiny import fit_models, make_tiny_source, publish_bundle
    from etl.dataset import Dataset
    from etl.ingest import ingest

    work = Path(tempfile.mkdtemp(prefix="hybridrec-faults-"))
    log(f"work folder {work}")
    with dask.config.set(scheduler="sync"):
        ingest(make_tiny_source(), work / "dataset")
    dataset = Dataset.open(work / "dataset")
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster, set_as_default=False) as client:
        models = fit_models(dataset, client)

    def fresh_root(name: str) -> Path:
        root = work / name / "bundles"
        publish_bundle(root, dataset, models, version="v1")
        return root

    s, t = args.seconds, args.threads
    scenarios = {
        "redis_killed[redis+log]": lambda: redis_killed_under_load(
            work / "r1", fresh_root("r1"), seconds=s, down=args.down, local_log=True, threads=t),
        "redis_killed[redis-only]": lambda: redis_killed_under_load(
            work / "r2", fresh_root("r2"), seconds=s, down=args.down, local_log=False, threads=t),
        "api_restarted[log,SIGKILL]": lambda: api_restarted_under_load(
            work / "a1", fresh_root("a1"), seconds=s, store="log", kill=signal.SIGKILL, restarts=args.restarts,
            threads=t),
        "api_restarted[log,SIGTERM]": lambda: api_restarted_under_load(
            work / "a2", fresh_root("a2"), seconds=s, store="log", kill=signal.SIGTERM, restarts=args.restarts,
            threads=t),
        "api_restarted[redis,SIGKILL]": lambda: api_restarted_under_load(
            work / "a3", fresh_root("a3"), seconds=s, store="redis", kill=signal.SIGKILL, restarts=args.restarts,
            threads=t),
        "bundle_published": lambda: bundle_published_under_load(
            work / "b1", fresh_root("b1"), dataset, models, seconds=s, publishes=3, threads=t),
    }
    chosen = [n for n in scenarios if not args.only or any(n.startswith(p) for p in args.only.split(","))]
    results = []
    for name in chosen:
        log(f"-- {name}")
        result = scenarios[name]()
        results.append(result)
        log(result.line())
    print(describe(results))
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / "faults.json"
    payload = {
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
        "settings": {"seconds": s, "down": args.down, "restarts": args.restarts, "threads": t},
        "scenarios": [r.as_dict() for r in results],
        "lost_total": sum(r.lost for r in results),
        "failed_total": sum(r.failed for r in results),
    }
    out.write_text(json.dumps(payload, indent=2, default=str))
    log(f"wrote {out}")
    return 1 if payload["lost_total"] or payload["failed_total"] else 0


if __name__ == "__main__":
    sys.exit(main())
