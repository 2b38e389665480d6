"""`make bench` in miniature: the quality and scale benches at tiny synthetic sizes, then the report.

The benches run as `make bench` runs them (their scripts, in subprocesses) into a temporary
folder; the report must hold the protocol table with every method, the scale table with every
stage at both sizes and its growth slopes, the plots it links, and say which serving results are
missing, then include them once they are there. A second scale run must resume (skip every
finished stage) instead of redoing it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SIZES = (5_000, 10_000)
SCALE_SIGNALS = ("popularity", "als", "content")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]


def run(script: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(REPO / "bench" / script), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=3000)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    cache = out / "cache"
    run("quality.py", "--quick", "--synthetic", "5000", "--out", str(out), "--cache", str(cache))
    run("scale.py", "--quick", "--sizes", *map(str, SIZES), "--signals", *SCALE_SIGNALS, "--eval-users", "500",
        "--queries", "50", "--lightgcn-epochs", "2", "--out", str(out), "--cache", str(cache))
    run("report.py", "--results", str(out))
    return out


def section(text: str, title: str) -> str:
    start = text.index(title)
    end = text.find("\n## ", start + len(title))
    return text[start:] if end < 0 else text[start:end]


def test_quality_table_has_every_method(results: Path) -> None:
    report = (results / "report.md").read_text()
    quality = section(report, "## Quality")
    assert "| method | kind | NDCG@10 | Recall@10 |" in quality and "coverage@10" in quality
    for method in ("popularity", "implicit ALS", "LightFM WARP", "EASE", "als", "content", "lightgcn", "svd",
                   "hybrid (tuned)"):
        assert f"\n| {method} |" in quality, method
    data = json.loads((results / "quality" / "synthetic-5-000.json").read_text())
    hybrid = next(r for r in data["rows"] if r["method"] == "hybrid (tuned)")
    assert 0.0 < hybrid["ndcg"] <= 1.0 and 0.0 < hybrid["coverage"] <= 1.0
    assert hybrid["fit_seconds"] > 0 and hybrid["peak_mib"] > 0
    # the report's figures are the JSON's, not re-measured or typed in
    assert f"| hybrid (tuned) | hybrid | {hybrid['ndcg']:.4f} | {hybrid['recall']:.4f} |" in quality
    ease = next(r for r in data["rows"] if r["method"] == "EASE")
    assert ease["params"]["lambda"] in ease["params"]["lambdas"]


def test_scale_table_has_every_stage_at_every_size(results: Path) -> None:
    report = (results / "report.md").read_text()
    scale = section(report, "## Scale")
    for n in SIZES:
        assert f"{n:,} s" in scale and f"{n:,} peak MiB" in scale
    stages = ["generate", "ingest", "tune", *(f"signal-{s}" for s in SCALE_SIGNALS), "hybrid", "index"]
    for stage in stages:
        line = next((ln for ln in scale.splitlines() if ln.startswith(f"| {stage} |")), None)
        assert line is not None, stage
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert "n/a" not in cells[1 : 1 + 2 * len(SIZES)], line  # seconds and peaks at both sizes
        assert re.fullmatch(r"-?\d+\.\d\d", cells[-2]), line  # a growth slope from two sizes
        stage_json = json.loads((results / "scale" / f"n{SIZES[0]}" / f"{stage}.json").read_text())
        assert stage_json["seconds"] >= 0 and stage_json["peak_mib"] > 0
    assert "bounded epoch budget of 2" in scale


def test_plots_exist_and_are_linked(results: Path) -> None:
    report = (results / "report.md").read_text()
    links = re.findall(r"!\[[^]]*\]\(([^)]+\.png)\)", report)
    assert {"quality_ndcg.png", "scale_time.png", "scale_memory.png"} <= set(links)
    for link in links:
        png = results / link
        assert png.read_bytes()[:8] == PNG_MAGIC, link
        assert png.stat().st_size > 5_000, link


def test_scale_resumes_finished_stages(results: Path) -> None:
    before = {p: p.read_text() for p in (results / "scale").rglob("*.json")}
    out = run("scale.py", "--quick", "--sizes", str(SIZES[0]), "--signals", *SCALE_SIGNALS, "--eval-users", "500",
              "--queries", "50", "--lightgcn-epochs", "2", "--out", str(results), "--cache", str(results / "cache"))
    assert out.count("done before") == 3 + len(SCALE_SIGNALS) + 2
    assert {p: p.read_text() for p in (results / "scale").rglob("*.json")} == before


def test_serving_results_missing_then_included(results: Path, tmp_path: Path) -> None:
    report = (results / "report.md").read_text()
    serving = section(report, "## Serving")
    assert "Missing: no api_load JSON" in serving and "Missing: no faults JSON" in serving

    (results / "api_load.json").write_text(json.dumps({
        "bundle": "v1", "phases": {"cached": {"rps": 2345.0, "p50_ms": 3.1, "p95_ms": 7.0, "p99_ms": 9.5, "errors": 0}},
    }))
    (results / "api_load_latency.png").write_bytes((results / "scale_time.png").read_bytes())
    (results / "faults").mkdir()
    (results / "faults" / "faults.json").write_text(json.dumps([{"fault": "worker killed", "passed": True}]))
    run("report.py", "--results", str(results))
    serving = section((results / "report.md").read_text(), "## Serving")
    assert "| name | rps | p50_ms | p95_ms | p99_ms | errors |" in serving
    assert "| cached | 2,345 | 3.1 | 7 | 9.5 | 0 |" in serving
    assert "](api_load_latency.png)" in serving
    assert "| fault | passed |" in serving and "| worker killed | True |" in serving
    assert "Missing" not in serving
