"""`make bench` in miniature: the quality and scale benches at tiny synthetic sizes, then the report.

The benches run as `make bench` runs them (their scripts, in subprocesses) into a temporary
folder; the report must hold the protocol table with every method, the scale table with every
stage at both sizes and its growth slopes, the plots it links, and say which serving results are
missing, then include them once they are there. A second scale run must resume (skip every
finished stage) instead of redoing it. The ALS-against-implicit and tuner benches run at tiny
sizes into a folder of their own: the report's tables must carry their JSON's figures, its
plot and the verdicts on issue 3's targets, and name their results when missing.
"""

from __future__ import annotations

import json
import re
import shutil
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


def test_scale_keeps_signal_fits_when_a_signal_is_added(results: Path, tmp_path: Path) -> None:
    """One more signal reruns tuning, the hybrid and the index, and fits the new signal; the fits
    of the signals that were there (same config from tuning) are kept."""
    out_dir = tmp_path / "out"
    shutil.copytree(results / "scale", out_dir / "scale")
    before = {p.name: p.read_text() for p in (out_dir / "scale" / f"n{SIZES[0]}").glob("signal-*.json")}
    out = run("scale.py", "--quick", "--sizes", str(SIZES[0]), "--signals", *SCALE_SIGNALS, "svd",
              "--eval-users", "500", "--queries", "50", "--lightgcn-epochs", "2", "--out", str(out_dir),
              "--cache", str(results / "cache"))
    assert out.count("done before with the same settings") == 2 + len(SCALE_SIGNALS), out[-3000:]
    folder = out_dir / "scale" / f"n{SIZES[0]}"
    assert {name: (folder / name).read_text() for name in before} == before
    tune = json.loads((folder / "tune.json").read_text())
    assert sorted(tune["weights"]) == sorted([*SCALE_SIGNALS, "svd"])
    hybrid = json.loads((folder / "hybrid.json").read_text())
    assert hybrid["settings"]["signals"] == [*SCALE_SIGNALS, "svd"] and (folder / "signal-svd.json").exists()
    run("report.py", "--results", str(out_dir))
    scale = section((out_dir / "report.md").read_text(), "## Scale")
    assert (f"**The sizes blend different signal sets** (tune, hybrid and index ran with these): "
            f"{SIZES[0]:,}: {', '.join(sorted([*SCALE_SIGNALS, 'svd']))}; {SIZES[1]:,}: "
            f"{', '.join(sorted(SCALE_SIGNALS))}.") in scale


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


# -- ALS against implicit, blend tuners -------------------------------------------------------------
ALS_SIZE = 5_000
TUNER_SIZE = 20_000


@pytest.fixture(scope="module")
def more_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench-more")
    cache = out / "cache"
    run("als_vs_implicit.py", "--no-ml-small", "--interactions", str(ALS_SIZE), "--out", str(out),
        "--cache", str(cache))
    run("tuner.py", "--dataset", str(cache / f"synthetic-{ALS_SIZE}"), "--signals", "popularity", "als",
        "--budgets", "10", "20", "--seeds", "2", "--test", "--out", str(out))
    run("tuner.py", "--synthetic", str(TUNER_SIZE), "--max-users", "300", "--out", str(out))
    run("report.py", "--results", str(out))
    return out


def test_als_section_carries_the_json(more_results: Path) -> None:
    r = json.loads((more_results / "als_vs_implicit" / f"synthetic-{ALS_SIZE}.json").read_text())
    ours, imp = r["ours"], r["implicit"]
    assert 0.0 < ours["ndcg"] <= 1.0 and 0.0 < imp["ndcg"] <= 1.0 and ours["seconds"] > 0 and imp["seconds"] > 0
    assert r["quality_ratio"] == pytest.approx(ours["ndcg"] / imp["ndcg"])
    assert r["time_ratio"] == pytest.approx(ours["seconds"] / imp["seconds"])
    assert r["target"]["met"] == (r["time_ratio"] <= 1.5)  # a synthetic size: its stated target is time
    assert r["target"]["quality_met"] == (r["quality_ratio"] >= 1.0)
    assert r["settings"]["factors"] == 64 and r["workers"] == 2 and "load_average" in r["environment"]
    als = section((more_results / "report.md").read_text(), "## ALS")
    assert ("| dataset | train interactions | our NDCG@10 | implicit NDCG@10 | quality ratio | our Recall@10 "
            "| implicit Recall@10 | our s | implicit s | time ratio |") in als
    assert (f"| synthetic-{ALS_SIZE} | {r['train_nnz']:,} | {ours['ndcg']:.4f} | {imp['ndcg']:.4f} "
            f"| {r['quality_ratio']:.5f} | {ours['recall']:.4f} | {imp['recall']:.4f} |") in als
    assert f"| {r['time_ratio']:.2f} |" in als
    assert "no run at 25M with 2 workers yet" in als


def test_als_and_tuner_runs_resume(more_results: Path) -> None:
    """`make bench` again: results measured with the same settings are kept, not measured again."""
    cache = more_results / "cache"
    files = [more_results / "als_vs_implicit" / f"synthetic-{ALS_SIZE}.json",
             more_results / "tuner" / f"synthetic-{ALS_SIZE}.json", more_results / "tuner" / f"synthetic-{TUNER_SIZE}.json"]
    before = {f: f.stat().st_mtime_ns for f in files}
    kept = files[2].read_bytes()
    log = run("als_vs_implicit.py", "--no-ml-small", "--interactions", str(ALS_SIZE), "--out", str(more_results),
              "--cache", str(cache))
    log += run("tuner.py", "--dataset", str(cache / f"synthetic-{ALS_SIZE}"), "--signals", "popularity", "als",
               "--budgets", "10", "20", "--seeds", "2", "--test", "--out", str(more_results))
    log += run("tuner.py", "--synthetic", str(TUNER_SIZE), "--max-users", "300", "--out", str(more_results))
    assert log.count("done before with the same settings") == 3, log
    assert {f: f.stat().st_mtime_ns for f in files} == before
    # other settings: measured again
    log = run("tuner.py", "--synthetic", str(TUNER_SIZE), "--max-users", "200", "--out", str(more_results))
    assert "measured with other settings: running again" in log
    assert json.loads(files[2].read_text())["max_users"] == 200
    files[2].write_bytes(kept)  # the module's report was written from the first run


def test_als_target_verdict_at_25m(more_results: Path, tmp_path: Path) -> None:
    """A 25M record that is 2x slower than implicit: the report must say the target is not met."""
    r = json.loads((more_results / "als_vs_implicit" / f"synthetic-{ALS_SIZE}.json").read_text())
    r.update(dataset="synthetic-25000000", interactions=25_000_000, time_ratio=2.0, quality_ratio=1.02)
    r["target"]["met"] = False
    (tmp_path / "als_vs_implicit").mkdir()
    (tmp_path / "als_vs_implicit" / "synthetic-25000000.json").write_text(json.dumps(r))
    run("report.py", "--results", str(tmp_path))
    als = section((tmp_path / "report.md").read_text(), "## ALS")
    assert "**not met** on synthetic-25000000 (quality ratio 1.02000, time ratio 2.00" in als
    assert "missed on time:" in als and "ratio 2.00 > 1.5" in als and "missed on quality" not in als


def test_tuner_section_has_every_budget_and_the_plot(more_results: Path) -> None:
    d = json.loads((more_results / "tuner" / f"synthetic-{ALS_SIZE}.json").read_text())
    methods = {(r["method"], r["budget"]) for r in d["rows"]}
    assert methods == {(m, b) for m in ("ga", "random", "grid") for b in (10, 20)}  # bagged GA from budget 100
    for r in d["rows"]:
        assert 0 < r["evaluations"] <= r["budget"], r
        assert len(r["best"]) == (1 if r["method"] == "grid" else 2) and len(r["test"]) == len(r["best"])
        assert 0.0 < r["best_mean"] <= 1.0 and 0.0 < r["test_mean"] <= 1.0
    tuner = section((more_results / "report.md").read_text(), "## Blend tuners")
    assert "| budget | method | evaluations | best val NDCG@10 (mean) | sd | test NDCG@10 (mean) |" in tuner
    for r in d["rows"]:
        line = (f"| {r['budget']} | {r['method']} | {r['evaluations']:.0f} | {r['best_mean']:.4f} "
                f"| {r['best_sd']:.4f} | {r['test_mean']:.4f} |")
        assert line in tuner, line
    for what, key in (("validation", "best_mean"), ("test", "test_mean")):
        top = max(r[key] for r in d["rows"] if r["budget"] == 20)
        assert re.search(rf"Best {what} NDCG@10 per budget[^\n]*; 20: [a-z, -]+ {top:.4f}\.", tuner), what
    link = f"tuner/synthetic-{ALS_SIZE}.png"
    assert f"]({link})" in tuner
    assert (more_results / link).read_bytes()[:8] == PNG_MAGIC and (more_results / link).stat().st_size > 5_000


def test_tuner_timing_row_and_target(more_results: Path) -> None:
    t = json.loads((more_results / "tuner" / f"synthetic-{TUNER_SIZE}.json").read_text())
    assert t["kind"] == "timing" and t["evaluations"] > 0 and t["pool"]["users"] <= 300
    stages = t["stages"]
    assert t["tuning_seconds"] == pytest.approx(stages["pool"]["wall_seconds"] + stages["ga"]["wall_seconds"])
    assert t["target"]["met"] == (t["tuning_seconds"] <= 600)
    tuner = section((more_results / "report.md").read_text(), "## Blend tuners")
    row = next((ln for ln in tuner.splitlines() if ln.startswith(f"| {TUNER_SIZE:,} |")), None)
    assert row is not None
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3] == f"{t['fit_nnz']:,} + {t['validation_nnz']:,}"
    assert cells[4] == f"{t['pool']['users']:,} x {t['pool']['width']}" and cells[5] == f"{t['evaluations']:,}"
    seconds = t["tuning_seconds"]
    assert cells[8] == (f"{seconds:.2f}" if seconds < 10 else f"{seconds:.1f}" if seconds < 1000 else f"{seconds:,.0f}")
    assert cells[-1] == str(t["target"]["met"])
    assert "tuning within 10 minutes at 25M: _no run at 25M yet_" in tuner


def test_missing_als_and_tuner_results_are_named(tmp_path: Path) -> None:
    run("report.py", "--results", str(tmp_path))
    report = (tmp_path / "report.md").read_text()
    assert "Missing: no results under" in section(report, "## ALS")
    tuner = section(report, "## Blend tuners")
    assert "Missing: no tuner comparison" in tuner and "Missing: no tuning time" in tuner


def test_tuner_plot_missing_is_named(more_results: Path, tmp_path: Path) -> None:
    shutil.copytree(more_results / "tuner", tmp_path / "tuner")
    (tmp_path / "tuner" / f"synthetic-{ALS_SIZE}.png").unlink()
    run("report.py", "--results", str(tmp_path))
    assert "_No plot:" in section((tmp_path / "report.md").read_text(), "## Blend tuners")
