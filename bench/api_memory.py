"""Memory of one API worker: ``hybridrec serve --workers 1`` on a bundle root, after warm-up queries.

Warm-up, per user of the bundle (the first ``--users``): explained recommendations, the similar
items of the top item and the explanation of that item; answers are cached as deployed. Then it
prints the worker's RSS from /proc/PID/smaps_rollup, split into anonymous memory (heaps, arrays
read into memory, interpreter objects) and file-backed pages (shared libraries, the bundle's
memory-mapped files), and the mapped files grouped by package or bundle file, largest first.

``--imports`` also prints what importing each library the server holds adds to a bare interpreter's
RSS, one fresh interpreter per library after numpy (what a replica saves by not importing it).

Usage::

    python bench/api_memory.py --bundle-root ROOT            # ROOT holds a bundle version and latest
    python bench/api_memory.py --bundle-root ROOT --users 610 --imports
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from api_load import Server  # noqa: E402

RECS = ("query($u: ID!) { recommendations(userId: $u, first: 10) { items { score item { id title genres } "
        "explanation { sentence mainSignal contributions { signal value } drivers { similarity item { id } } } } } }")
SIMILAR = "query($i: ID!) { similarItems(itemId: $i, first: 10) { ... on SimilarItems { items { item { id title } } } } }"
EXPLAIN = "query($u: ID!, $i: ID!) { explain(userId: $u, itemId: $i) { ... on Explanation { score sentence } } }"
LIBRARIES = ("scipy.sparse", "pandas", "pyarrow.parquet", "numba", "usearch.index", "strawberry", "torch", "sklearn")
"""Libraries whose import cost ``--imports`` prints (torch and sklearn: what the server no longer loads)."""
_SITE = re.compile(r"/(?:site|dist)-packages/([^/]+)/")


def smaps_rollup(pid: int) -> dict[str, int]:
    """The kB fields of /proc/PID/smaps_rollup (Rss, Anonymous, ...)."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value, *_ = line.split()
        out[name.rstrip(":")] = int(value)
    return out


def mapped_groups(pid: int, bundle: Path) -> dict[str, tuple[int, int]]:
    """RSS and anonymous kB per mapping group: a site-packages package, a bundle file, another
    file, or '[anonymous]' (mappings without a file: heap, arrays, interpreter objects)."""
    groups: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    key = "[anonymous]"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split(maxsplit=5)
        if len(head) >= 5 and "-" in head[0] and not head[0].endswith(":"):
            path = head[5].strip() if len(head) == 6 else ""
            site = _SITE.search(path)
            if site:
                key = site.group(1)
            elif path.startswith(str(bundle)):
                key = f"bundle: {Path(path).relative_to(bundle)}"
            elif path.startswith("/") and not path.startswith("/dev/"):
                key = path
            else:
                key = "[anonymous]"
        elif head and head[0] == "Rss:":
            groups[key][0] += int(head[1])
        elif head and head[0] == "Anonymous:":
            groups[key][1] += int(head[1])
    return {k: (v[0], v[1]) for k, v in groups.items()}


def warm_up(url: str, users: list[str]) -> int:
    """The warm-up queries; returns how many were answered without errors."""
    answered = 0
    with httpx.Client(base_url=url, timeout=60, headers={"x-api-key": "api-load-bench-key-0001"}) as http:
        def ask(query: str, **variables: str) -> dict | None:
            nonlocal answered
            body = http.post("/graphql", json={"query": query, "variables": variables}).json()
            if body.get("errors"):
                print(f"  error: {json.dumps(body['errors'])[:300]}", file=sys.stderr)
                return None
            answered += 1
            return body["data"]

        for user in users:
            data = ask(RECS, u=user)
            items = data["recommendations"]["items"] if data else []
            if items:
                top = items[0]["item"]["id"]
                ask(SIMILAR, i=top)
                ask(EXPLAIN, u=user, i=top)
    return answered


def import_costs(libraries: tuple[str, ...]) -> list[tuple[str, float]]:
    """MiB each library adds to an interpreter that has imported numpy (a fresh one per library),
    with the bare numpy interpreter's RSS first."""
    probe = ("import sys, numpy\n"
             "def rss(): return int(open('/proc/self/status').read().split('VmRSS:')[1].split()[0])\n"
             "before = rss()\n"
             "if sys.argv[1] != 'numpy': __import__(sys.argv[1])\n"
             "print(before, rss())\n")
    out: list[tuple[str, float]] = []
    for name in ("numpy", *libraries):
        run = subprocess.run([sys.executable, "-c", probe, name], capture_output=True, text=True, cwd=REPO,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
        if run.returncode != 0:
            out.append((name, float("nan")))
            continue
        before, after = (int(x) for x in run.stdout.split())
        out.append((name, (after if name == "numpy" else after - before) / 1024))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle-root", type=Path, required=True, help="a bundle root (its latest is served)")
    parser.add_argument("--users", type=int, default=200, help="users whose queries warm the server up")
    parser.add_argument("--top", type=int, default=12, help="mapping groups to list")
    parser.add_argument("--imports", action="store_true", help="also print each library's import cost")
    args = parser.parse_args(argv)

    root = args.bundle_root.resolve()
    bundle = (root / "latest").resolve()
    from etl.vocabulary import Vocabulary, vocabulary_file

    users = Vocabulary.load(vocabulary_file(bundle / "vocab", "users")).ids.tolist()[: args.users]
    with tempfile.TemporaryDirectory(prefix="api-memory-") as work:
        started = time.monotonic()
        server = Server.hybridrec(root, Path(work) / "events", workers=1, cache=True,
                                  log_path=Path(work) / "server.log")
        try:
            ready = time.monotonic() - started
            answered = warm_up(server.url, users)
            rollup = smaps_rollup(server.proc.pid)
            groups = mapped_groups(server.proc.pid, bundle)
        finally:
            server.stop()

    rss, anon = rollup["Rss"] / 1024, rollup["Anonymous"] / 1024
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"server ready in {ready:.1f} s; {answered} warm-up queries answered ({len(users)} users)")
    print(f"worker RSS {rss:.1f} MiB: anonymous {anon:.1f} MiB, file-backed {rss - anon:.1f} MiB "
          f"(PSS {rollup['Pss'] / 1024:.1f} MiB)")
    bundle_mib = sum(g_rss for name, (g_rss, _) in groups.items() if name.startswith("bundle: ")) / 1024
    print(f"of the file-backed pages, the bundle's memory-mapped files: {bundle_mib:.1f} MiB")
    print(f"largest of {len(groups)} mapping groups (RSS MiB, of which anonymous):")
    for name, (g_rss, g_anon) in sorted(groups.items(), key=lambda kv: -kv[1][0])[: args.top]:
        print(f"  {g_rss / 1024:8.1f} {g_anon / 1024:8.1f}  {name}")
    if args.imports:
        print("import cost (MiB of RSS added to an interpreter holding numpy):")
        for name, mib in import_costs(LIBRARIES):
            print(f"  {mib:8.1f}  {name}{'  (bare interpreter + numpy)' if name == 'numpy' else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
