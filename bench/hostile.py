"""Hostile documents against a real ``hybridrec serve`` (one uvicorn worker) on loopback: what they
cost the server now that documents are priced before validation (graphql_api/cost.py).

Prints, with the load average (the machine may be shared: server CPU per request follows the
code, wall times follow the neighbours):

- ``chain``:   a chain of 30 fragments that each spread the next twice (2^30 fields written out):
               seconds until its refusal, and /health's latency while four clients send it (before
               the analysis, n=20 took 3.1 s and n=30 hours, the worker blocked meanwhile);
- ``largest``: the dearest documents the limits allow, one family each (explanations, similar
               items, title search, histories, id lists, introspection, repeated fields, a batch of
               interactions), each grown to just under ``max_cost``: requested price and server CPU
               per request, every request a new document (no parse or validation cache); the
               largest must stay under 50 ms;
- ``memory``:  the server's RSS before and after N distinct hostile documents;
- ``--calibrate``: server CPU per request of the queries WEIGHTS (graphql_api/cost.py) was set
               from, next to the price the table gives them.

Usage::

    python bench/hostile.py                          # the six-signal ml-latest-small bundle (built once)
    python bench/hostile.py --bundle-root ROOT --calibrate
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from api_load import CpuMeter, Server, build_bundle, log  # noqa: E402

KEY = "hostile-bench-key-000001"
ADMIN = "hostile-bench-admin-0001"
FULL_EXPLANATION = ("explanation { userId score sentence mainSignal driverSignal sharedGenres sharedTags "
                    "shares { signal value } graphPath { kind id label } contributions { signal value } "
                    "drivers { similarity item { id title genres } } item { id title } }")
Doc = tuple[str, dict[str, Any]]


def chain(n: int) -> str:
    body = " ".join(f"fragment F{i} on Query{{...F{i + 1} ...F{i + 1}}}" for i in range(n))
    return f"query{{...F0}} {body} fragment F{n} on Query{{__typename}}"


# -- the dearest documents the limits allow, by family -------------------------------------------------

def _aliases(k: int, tag: str, field: str) -> str:
    return "{ " + " ".join(f"{tag}{i}: {field}" for i in range(k)) + " }"


def families(users: list[str], items: list[str]) -> dict[str, Callable[[int, str], Doc]]:
    """family -> build(k, tag): a document growing with k; ``tag`` makes each one new (aliases)."""
    ids = items[:500]
    return {
        "explanations": lambda k, tag: (
            f'query($u: ID!) {{ {tag}: recommendations(userId: $u, first: {k}) {{ items {{ score item {{ id title }} '
            f"{FULL_EXPLANATION} }} }} }}", {"u": users[0]}),
        "similar items": lambda k, tag: (_aliases(k, tag, 'similarItems(itemId: "%s", first: 100) { ... on SimilarItems '
                                                     '{ items { score contributions { signal value } item { id title } } } }'
                                                     % items[1]), {}),
        "title search": lambda k, tag: (_aliases(k, tag, 'searchItems(title: "a", first: 100) { id title genres }'), {}),
        "histories": lambda k, tag: ("query($u: ID!) " + _aliases(k, tag, "user(id: $u) { known recentHistory(first: 100) "
                                                                         "{ value item { id title } } }"),
                                     {"u": users[0]}),
        "id lists": lambda k, tag: ("query($ids: [ID!]!) " + _aliases(k, tag, "items(ids: $ids) { id title genres }"),
                                    {"ids": ids}),
        "introspection": lambda k, tag: (_introspection(tag), {}),
        "repeated fields": lambda k, tag: (
            "{ " + f"{tag}: model {{ version }} " + " ".join("model { version trainedAt }" for _ in range(k)) + " }", {}),
        "interaction batch": lambda k, tag: (
            "mutation($b: [InteractionInput!]!) { " + f"{tag}: recordInteractions(batch: $b) {{ accepted }} }}",
            {"b": [{"userId": f"bench-{tag}", "itemId": items[j % len(items)]} for j in range(k)]}),
    }


def _introspection(tag: str) -> str:
    from graphql import get_introspection_query

    return get_introspection_query(descriptions=True).replace("__schema {", f"{tag}: __schema {{", 1)


def largest(build: Callable[[int, str], Doc], limits: Any, schema: Any) -> tuple[int, int] | None:
    """(k, price) of the largest document of a family within the limits (None: not even k=1)."""
    from graphql import parse

    from graphql_api.cost import DocumentCost

    best = None
    for k in range(1, 1001):
        query, variables = build(k, "x0")
        try:
            cost = DocumentCost(parse(query, max_tokens=limits.max_tokens), schema)
        except Exception:  # noqa: BLE001 - over the token limit
            break
        price = cost.requested(variables)
        if price > limits.max_cost or cost.aliases > limits.max_aliases or cost.depth > limits.max_depth:
            break
        best = (k, price)
        if build(k + 1, "x0") == (query, variables):
            break  # the family does not grow (introspection)
    return best


def server_cpu_ms(server: Server, http: Any, bodies: Callable[[int], dict[str, Any]], seconds: float,
                  key: str = KEY) -> tuple[float, int, dict[str, Any]]:
    """Server CPU per request (ms) over ``seconds`` of sequential requests; the last answer."""
    answer: dict[str, Any] = {}
    n = 0
    started = time.monotonic()
    with CpuMeter(server.proc.pid) as cpu:
        while n < 3 or time.monotonic() - started < seconds:
            answer = http.post("/graphql", json=bodies(n), headers={"x-api-key": key}).json()
            n += 1
    return cpu.server / n * 1000, n, answer


# -- phases -----------------------------------------------------------------------------------------------

def phase_chain(server: Server, n: int = 30) -> dict[str, Any]:
    import httpx

    times = []
    with httpx.Client(base_url=server.url, timeout=600) as http:
        for _ in range(10):
            t = time.perf_counter()
            body = http.post("/graphql", json={"query": chain(n)}, headers={"x-api-key": KEY}).json()
            times.append(time.perf_counter() - t)
    code = body["errors"][0]["extensions"]["code"]
    stop = threading.Event()

    def attack() -> None:
        with httpx.Client(base_url=server.url, timeout=600) as http:
            while not stop.is_set():
                http.post("/graphql", json={"query": chain(n)}, headers={"x-api-key": KEY})

    threads = [threading.Thread(target=attack) for _ in range(4)]
    for t in threads:
        t.start()
    health = []
    with httpx.Client(base_url=server.url, timeout=600) as http:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            t = time.perf_counter()
            assert http.get("/health").status_code == 200
            health.append((time.perf_counter() - t) * 1000)
            time.sleep(0.02)
    stop.set()
    for t in threads:
        t.join()
    health.sort()
    return {"n": n, "code": code, "refusal_ms_median": statistics.median(times) * 1000,
            "refusal_ms_max": max(times) * 1000, "health_ms_p50": health[len(health) // 2],
            "health_ms_p99": health[min(len(health) - 1, int(len(health) * 0.99))], "health_ms_max": health[-1],
            "health_requests": len(health)}


def phase_largest(server: Server, users: list[str], items: list[str], seconds: float) -> dict[str, Any]:
    import httpx

    from graphql_api.schema import schema
    from graphql_api.settings import Limits

    limits = Limits()
    out: dict[str, Any] = {}
    with httpx.Client(base_url=server.url, timeout=600) as http:
        for name, build in families(users, items).items():
            found = largest(build, limits, schema._schema)
            if found is None:
                continue
            k, price = found
            key = ADMIN if name == "interaction batch" else KEY

            def bodies(i: int, build: Callable[[int, str], Doc] = build, k: int = k) -> dict[str, Any]:
                query, variables = build(k, f"r{i}_")
                return {"query": query, "variables": variables}

            cpu, n, answer = server_cpu_ms(server, http, bodies, seconds, key)
            errors = answer.get("errors")
            out[name] = {"k": k, "requested": price, "server_cpu_ms": cpu, "requests": n,
                         "answer_error": errors[0]["message"][:80] if errors else None,
                         "us_per_point": cpu * 1000 / price}
            log(f"bench: {name}: k={k} price {price} cpu {cpu:.1f} ms/request")
    return out


def phase_memory(server: Server, count: int) -> dict[str, Any]:
    import httpx
    import psutil

    def rss() -> int:
        proc = psutil.Process(server.proc.pid)
        return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])

    attacks = [lambda i: chain(30 + i % 20),
               lambda i: "{" + " ".join(f"m{i}_{j}: model {{ version }}" for j in range(200)) + "}",
               lambda i: "{" + " ".join(f'a{i}_{j}: recommendations(userId: "1", first: 100) {{ items {{ '
                                        f'{FULL_EXPLANATION} }} }}' for j in range(15)) + "}",
               lambda i: "{ " * 40 + f"x{i}" + " }" * 40]
    with httpx.Client(base_url=server.url, timeout=600) as http:
        http.post("/graphql", json={"query": chain(30)}, headers={"x-api-key": KEY})
        before = rss()
        refused = 0
        for i in range(count):
            body = http.post("/graphql", json={"query": attacks[i % len(attacks)](i)}, headers={"x-api-key": KEY}).json()
            refused += bool(body.get("errors"))
        after = rss()
    return {"documents": count, "refused": refused, "rss_mb_before": before / 2**20, "rss_mb_after": after / 2**20}


CALIBRATION: dict[str, str] = {
    "{ __typename }": "{ __typename }",
    "model": "{ model { version } }",
    "recommendations first 1": 'query($u: ID!) { recommendations(userId: $u, first: 1) { items { score } } }',
    "recommendations first 100": 'query($u: ID!) { recommendations(userId: $u, first: 100) { items { score item { id title } } } }',
    "... with contributions": 'query($u: ID!) { recommendations(userId: $u, first: 100) { items { score contributions { signal value } } } }',
    "... with explanation { score }": 'query($u: ID!) { recommendations(userId: $u, first: 100) { items { score explanation { score } } } }',
    "... with explanation { graphPath }": 'query($u: ID!) { recommendations(userId: $u, first: 100) { items { score explanation { graphPath { kind id } } } } }',
    "... with the full explanation": 'query($u: ID!) { recommendations(userId: $u, first: 100) { items { score ' + FULL_EXPLANATION + ' } } }',
    "similarItems first 10": '{ similarItems(itemId: "1", first: 10) { ... on SimilarItems { items { score } } } }',
    "similarItems first 100": '{ similarItems(itemId: "1", first: 100) { ... on SimilarItems { items { score contributions { signal value } item { id } } } } }',
    "explain": 'query($u: ID!) { explain(userId: $u, itemId: "1") { ... on Explanation { sentence graphPath { id } drivers { item { id } } } } }',
    "searchItems first 100": '{ searchItems(title: "a", first: 100) { id title } }',
    "user recentHistory first 100": 'query($u: ID!) { user(id: $u) { known recentHistory(first: 100) { value item { id } } } }',
    "items 100 ids": '{ items(ids: [%s]) { id title } }' % ", ".join(f'"{i}"' for i in range(1, 101)),
    "100 aliased scalars": "{ model { " + " ".join(f"v{i}: version" for i in range(100)) + " } }",
    "50 aliased model fields": "{ " + " ".join(f"m{i}: model {{ version }}" for i in range(50)) + " }",
}


def phase_calibrate(server: Server, users: list[str], seconds: float) -> dict[str, Any]:
    import httpx
    from graphql import parse

    from graphql_api.cost import DocumentCost
    from graphql_api.schema import schema

    out = {}
    with httpx.Client(base_url=server.url, timeout=600) as http:
        for name, query in CALIBRATION.items():
            def bodies(i: int, query: str = query) -> dict[str, Any]:
                new = query.replace("{", f"{{ n{i}: __typename ", 1)  # a new document each time: no cache
                return {"query": new, "variables": {"u": users[i % len(users)]} if "$u" in query else {}}

            cpu, n, answer = server_cpu_ms(server, http, bodies, seconds)
            price = DocumentCost(parse(query), schema._schema).requested({"u": users[0]})
            out[name] = {"server_cpu_ms": cpu, "price": price, "points_by_cpu": cpu * 100,
                         "error": (answer.get("errors") or [{}])[0].get("message")}
            log(f"bench: {name}: cpu {cpu:.2f} ms, price {price}")
    return out


# -- main -------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle-root", type=Path, help="an existing bundle root (default: build one)")
    ap.add_argument("--work-dir", type=Path, default=REPO / "data" / "bench_api")
    ap.add_argument("--seconds", type=float, default=3.0, help="seconds of requests per CPU figure")
    ap.add_argument("--memory-documents", type=int, default=2000)
    ap.add_argument("--phases", default="chain,largest,memory")
    ap.add_argument("--calibrate", action="store_true", help="also measure the queries WEIGHTS was set from")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)
    from training.pipeline import DEFAULT_SIGNALS

    root = args.bundle_root or args.work_dir / f"bundles-{'-'.join(DEFAULT_SIGNALS)}"
    if not (root / "latest").exists():
        if args.bundle_root:
            ap.error(f"{root} has no published bundle (no 'latest')")
        build_bundle(root, args.work_dir, list(DEFAULT_SIGNALS))
    from hybrid.bundle import load

    bundle = load(root)
    users = [str(u) for u in bundle.users.ids[:200]]
    items = [str(i) for i in bundle.items.ids[:500]]
    del bundle
    events = args.work_dir / "hostile-events"
    env = {**os.environ, "PYTHONPATH": str(REPO), "HYBRIDREC_BUNDLE_ROOT": str(root), "HYBRIDREC_EVENTS_DIR": str(events),
           "HYBRIDREC_API_KEYS": KEY, "HYBRIDREC_ADMIN_KEYS": ADMIN, "HYBRIDREC_ACCESS_LOG": "false",
           "HYBRIDREC_CACHE_TTL": "0", "HYBRIDREC_RELOAD_INTERVAL": "5"}
    env.pop("HYBRIDREC_REDIS_URL", None)
    results: dict[str, Any] = {"loadavg_start": os.getloadavg(), "cpus": os.cpu_count()}
    phases = [p for p in args.phases.split(",") if p]
    args.work_dir.mkdir(parents=True, exist_ok=True)
    server = Server(["cluster.cli", "serve"], env, 1, args.work_dir / "hostile-uvicorn.log")
    try:
        if "chain" in phases:
            results["chain"] = phase_chain(server)
        if "largest" in phases:
            results["largest"] = phase_largest(server, users, items, args.seconds)
        if args.calibrate:
            results["calibrate"] = phase_calibrate(server, users, args.seconds)
        if "memory" in phases:
            results["memory"] = phase_memory(server, args.memory_documents)
    finally:
        server.stop()
    results["loadavg_end"] = os.getloadavg()
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


def report(r: dict[str, Any]) -> None:
    print(f"\nhostile documents: load average at start {r['loadavg_start'][0]:.2f}, at end {r['loadavg_end'][0]:.2f} "
          f"({r['cpus']} CPUs; server CPU per request follows the code, wall times the neighbours)")
    if "chain" in r:
        c = r["chain"]
        print(f"fragment chain n={c['n']} (2^{c['n']} fields written out): refused ({c['code']}) in "
              f"{c['refusal_ms_median']:.1f} ms (max {c['refusal_ms_max']:.1f}); /health while 4 clients send it: "
              f"p50 {c['health_ms_p50']:.1f} ms, p99 {c['health_ms_p99']:.1f} ms, max {c['health_ms_max']:.1f} ms "
              f"({c['health_requests']} requests)")
    if "largest" in r:
        print(f"{'largest allowed document':28s} {'k':>5s} {'price':>6s} {'cpu ms':>8s} {'us/point':>9s}  error")
        for name, f in r["largest"].items():
            print(f"{name:28s} {f['k']:5d} {f['requested']:6d} {f['server_cpu_ms']:8.2f} {f['us_per_point']:9.2f}  "
                  f"{f['answer_error'] or ''}")
        worst = max(r["largest"].values(), key=lambda f: f["server_cpu_ms"])
        print(f"largest: {worst['server_cpu_ms']:.1f} ms of server CPU (limit: under 50 ms)")
    if "calibrate" in r:
        print(f"{'calibration query':36s} {'cpu ms':>8s} {'cpu/10us':>9s} {'price':>6s}")
        for name, f in r["calibrate"].items():
            print(f"{name:36s} {f['server_cpu_ms']:8.2f} {f['points_by_cpu']:9.0f} {f['price']:6d}  {f['error'] or ''}")
    if "memory" in r:
        m = r["memory"]
        print(f"RSS before {m['rss_mb_before']:.1f} MB, after {m['documents']} hostile documents ({m['refused']} "
              f"refused) {m['rss_mb_after']:.1f} MB")


if __name__ == "__main__":
    raise SystemExit(main())
