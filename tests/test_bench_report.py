"""`make bench` in miniature: the benches at tiny synthetic sizes, then bench/report.py.

The benches run as `make bench` runs them (their scripts, in subprocesses), all into one temporary
results folder with one dataset cache, and the report is written once. What a reader of
bench/results/report.md relies on is checked: every section is there (and names what is missing),
the quality table has a row per method, the figures are the JSON's, the plots it links exist, and a
second run resumes: finished stages and results measured with the same settings are kept.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SIZES = (5_000, 10_000)
SCALE_SIGNALS = ("popularity", "als", "content")
SCALE_ARGS = ("--eval-users", "500", "--queries", "50", "--lightgcn-epochs", "2")
ALS_SIZE = 5_000
TUNER_SIZE = 20_000
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SECTIONS = ("## Quality", "## Scale", "## ALS", "## LightGCN", "## Blend tuners", "## Serving", "## Per signal")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]


def run(script: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(REPO / "bench" / script), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=3000)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc.stdout + proc.stderr


def als_and_tuner_runs(out: Path, max_users: int = 300) -> str:
    """The ALS-against-implicit and tuner benches as `make bench` runs them, at tiny sizes."""
    cache = out / "cache"
    log = run("als_vs_implicit.py", "--no-ml-small", "--interactions", str(ALS_SIZE), "--out", str(out),
              "--cache", str(cache))
    log += run("tuner.py", "--dataset", str(cache / f"synthetic-{ALS_SIZE}"), "--signals", "popularity", "als",
               "--budgets", "10", "20", "--seeds", "2", "--test", "--out", str(out))
    return log + run("tuner.py", "--synthetic", str(TUNER_SIZE), "--max-users", str(max_users), "--out", str(out))


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    cache = out / "cache"  # one synthetic-5000 dataset for the quality, ALS and tuner benches
    run("quality.py", "--quick", "--synthetic", str(SIZES[0]), "--out", str(out), "--cache", str(cache))
    run("scale.py", "--quick", "--sizes", *map(str, SIZES), "--signals", *SCALE_SIGNALS, *SCALE_ARGS,
        "--out", str(out), "--cache", str(cache))
    als_and_tuner_runs(out)
    run("report.py", "--results", str(out))
    return out


def section(text: str, title: str) -> str:
    start = text.index(title)
    end = text.find("\n## ", start + len(title))
    return text[start:] if end < 0 else text[start:end]


def row(text: str, first_cell: str) -> list[str]:
    """The cells of the table row whose first cell is ``first_cell``."""
    line = next((ln for ln in text.splitlines() if ln.startswith(f"| {first_cell} |")), None)
    assert line is not None, f"no row {first_cell!r} in:\n{text}"
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_every_section_is_there(results: Path) -> None:
    report = (results / "report.md").read_text()
    for title in SECTIONS:
        assert f"\n{title}" in report, title


def test_quality_table_has_every_method_with_the_jsons_figures(results: Path) -> None:
    quality = section((results / "report.md").read_text(), "## Quality")
    data = json.loads((results / "quality" / "synthetic-5-000.json").read_text())
    methods = {r["method"] for r in data["rows"]}
    assert {"popularity", "implicit ALS", "LightFM WARP", "EASE", "als", "content", "lightgcn", "svd",
            "hybrid (tuned)"} <= methods
    for r in data["rows"]:
        cells = row(quality, r["method"])
        assert f"{r['ndcg']:.4f}" in cells and f"{r['recall']:.4f}" in cells, (r, cells)
    hybrid = next(r for r in data["rows"] if r["method"] == "hybrid (tuned)")
    assert 0.0 < hybrid["ndcg"] <= 1.0 and hybrid["fit_seconds"] > 0 and hybrid["peak_mib"] > 0


def test_scale_table_has_every_stage_at_every_size(results: Path) -> None:
    scale = section((results / "report.md").read_text(), "## Scale")
    for stage in ["generate", "ingest", "tune", "refit", "hybrid", "index"]:
        cells = row(scale, stage)
        assert "n/a" not in cells[1: 1 + 2 * len(SIZES)], cells  # seconds and peaks at both sizes
        for n in SIZES:
            measured = json.loads((results / "scale" / f"n{n}" / f"{stage}.json").read_text())
            assert measured["seconds"] >= 0 and measured["peak_mib"] > 0
        float(cells[-2])  # a growth slope from the two sizes
    totals = row(scale, "**total**")[1: 1 + len(SIZES)]
    for n, cell in zip(SIZES, totals, strict=True):
        stages = [json.loads((results / "scale" / f"n{n}" / f"{s}.json").read_text())
                  for s in ("generate", "ingest", "tune", "refit", "hybrid", "index")]
        walls = [st.get("stage_seconds", st["seconds"]) for st in stages]  # refit's: its fits, saves, evaluations
        assert stages[3]["stage_seconds"] >= stages[3]["seconds"] > 0
        assert float(cell.replace(",", "")) == pytest.approx(sum(walls), abs=0.051)  # printed to 0.1 s
    for n in SIZES:  # each signal's refit and its test metrics, in the per-signal table
        for s in SCALE_SIGNALS:
            measured = json.loads((results / "scale" / f"n{n}" / f"signal-{s}.json").read_text())
            line = next(ln for ln in scale.splitlines() if ln.startswith(f"| {n:,} | {s} |"))
            assert f"{measured['metrics']['ndcg@10']:.4f}" in line and measured["fitted_with"] == sorted(SCALE_SIGNALS)


def test_linked_plots_exist(results: Path) -> None:
    report = (results / "report.md").read_text()
    for link in ("quality_ndcg.png", "scale_time.png", "scale_memory.png", f"tuner/synthetic-{ALS_SIZE}.png"):
        assert f"]({link})" in report, link
        assert (results / link).read_bytes()[:8] == PNG_MAGIC, link


def test_scale_resumes_finished_stages(results: Path) -> None:
    before = {p: p.read_text() for p in (results / "scale").rglob("*.json")}
    out = run("scale.py", "--quick", "--sizes", str(SIZES[0]), "--signals", *SCALE_SIGNALS, *SCALE_ARGS,
              "--out", str(results), "--cache", str(results / "cache"))
    assert out.count("done before") == 6  # generate, ingest, tune, refit (its signals with it), hybrid, index
    assert {p: p.read_text() for p in (results / "scale").rglob("*.json")} == before


def test_scale_keeps_signal_fits_when_a_signal_is_added(results: Path, tmp_path: Path) -> None:
    """One more signal reruns tuning, the hybrid and the index, and fits the new signal; the fits
    of the signals that were there (same config from tuning) are kept."""
    shutil.copytree(results / "scale", tmp_path / "scale")
    folder = tmp_path / "scale" / f"n{SIZES[0]}"
    before = {p.name: p.read_text() for p in folder.glob("signal-*.json")}
    out = run("scale.py", "--quick", "--sizes", str(SIZES[0]), "--signals", *SCALE_SIGNALS, "svd", *SCALE_ARGS,
              "--out", str(tmp_path),
              "--cache", str(results / "cache"))
    assert out.count("done before with the same settings") == 2 + len(SCALE_SIGNALS), out[-3000:]
    assert {name: (folder / name).read_text() for name in before} == before
    assert sorted(json.loads((folder / "tune.json").read_text())["weights"]) == sorted([*SCALE_SIGNALS, "svd"])
    assert (folder / "signal-svd.json").exists()


def test_scale_refits_by_fold_in_when_asked(results: Path, tmp_path: Path) -> None:
    """--refit fold_in keeps tuning (it does not depend on the refit) and makes the final models
    from tuning's: als and content folded in from 'train', popularity fit again; the per-signal
    table says which."""
    shutil.copytree(results / "scale", tmp_path / "scale")
    folder = tmp_path / "scale" / f"n{SIZES[0]}"
    out = run("scale.py", "--quick", "--sizes", str(SIZES[0]), "--signals", *SCALE_SIGNALS, *SCALE_ARGS,
              "--refit", "fold_in", "--out", str(tmp_path), "--cache", str(results / "cache"))
    assert out.count("done before with the same settings") == 3, out[-3000:]  # generate, ingest, tune
    refit = json.loads((folder / "refit.json").read_text())
    assert refit["mode"] == "fold_in" and refit["refit"] == {"popularity": "fit", "als": "fold_in", "content": "fold_in"}
    run("report.py", "--results", str(tmp_path))
    scale = section((tmp_path / "report.md").read_text(), "## Scale")
    for s in SCALE_SIGNALS:
        measured = json.loads((folder / f"signal-{s}.json").read_text())
        assert measured["refit"] == refit["refit"][s] and measured["metrics"]["ndcg@10"] > 0
        line = next(ln for ln in scale.splitlines() if ln.startswith(f"| {SIZES[0]:,} | {s} |"))
        assert f"| {measured['refit']} |" in line, line


def test_missing_results_are_named_then_serving_results_included(tmp_path: Path) -> None:
    run("report.py", "--results", str(tmp_path))
    report = (tmp_path / "report.md").read_text()
    for title in SECTIONS[:-1]:  # the per-signal table comes with quality results
        assert "Missing" in section(report, title), title

    (tmp_path / "api_load.json").write_text(json.dumps({
        "bundle": "v1", "phases": {"cached": {"rps": 2345.0, "p50_ms": 3.1, "p95_ms": 7.0, "p99_ms": 9.5, "errors": 0}},
    }))
    (tmp_path / "faults").mkdir()
    (tmp_path / "faults" / "faults.json").write_text(json.dumps([{"fault": "worker killed", "passed": True}]))
    run("report.py", "--results", str(tmp_path))
    serving = section((tmp_path / "report.md").read_text(), "## Serving")
    assert "Missing" not in serving
    assert {"2,345", "3.1", "9.5"} <= set(row(serving, "cached"))
    assert row(serving, "worker killed") == ["worker killed", "True"]


def test_als_row_carries_the_json(results: Path) -> None:
    r = json.loads((results / "als_vs_implicit" / f"synthetic-{ALS_SIZE}.json").read_text())
    ours, imp = r["ours"], r["implicit"]
    assert r["quality_ratio"] == pytest.approx(ours["ndcg"] / imp["ndcg"])
    assert r["time_ratio"] == pytest.approx(ours["seconds"] / imp["seconds"])
    cells = row(section((results / "report.md").read_text(), "## ALS"), f"synthetic-{ALS_SIZE}")
    for figure in (f"{ours['ndcg']:.4f}", f"{imp['ndcg']:.4f}", f"{r['quality_ratio']:.5f}", f"{r['time_ratio']:.2f}"):
        assert figure in cells, (figure, cells)


def test_als_target_verdict_at_25m(results: Path, tmp_path: Path) -> None:
    """A 25M record that is 2x slower than implicit: the report must say the target is not met, on time."""
    r = json.loads((results / "als_vs_implicit" / f"synthetic-{ALS_SIZE}.json").read_text())
    r.update(dataset="synthetic-25000000", interactions=25_000_000, time_ratio=2.0, quality_ratio=1.02)
    r["target"]["met"] = False
    (tmp_path / "als_vs_implicit").mkdir()
    (tmp_path / "als_vs_implicit" / "synthetic-25000000.json").write_text(json.dumps(r))
    run("report.py", "--results", str(tmp_path))
    als = section((tmp_path / "report.md").read_text(), "## ALS")
    assert "**not met** on synthetic-25000000" in als
    assert "missed on time" in als and "missed on quality" not in als


def test_tuner_rows_carry_the_json(results: Path) -> None:
    d = json.loads((results / "tuner" / f"synthetic-{ALS_SIZE}.json").read_text())
    methods = {(r["method"], r["budget"]) for r in d["rows"]}
    assert methods == {(m, b) for m in ("ga", "random", "grid") for b in (10, 20)}
    tuner = section((results / "report.md").read_text(), "## Blend tuners")
    for r in d["rows"]:
        line = f"| {r['budget']} | {r['method']} | {r['evaluations']:.0f} | {r['best_mean']:.4f} "
        assert line in tuner and f"| {r['test_mean']:.4f} |" in tuner, line


def test_tuner_timing_row_and_target(results: Path) -> None:
    t = json.loads((results / "tuner" / f"synthetic-{TUNER_SIZE}.json").read_text())
    assert t["kind"] == "timing" and t["evaluations"] > 0 and t["pool"]["users"] <= 300
    assert t["target"]["met"] == (t["tuning_seconds"] <= 600)
    cells = row(section((results / "report.md").read_text(), "## Blend tuners"), f"{TUNER_SIZE:,}")
    assert f"{t['evaluations']:,}" in cells and cells[-1] == str(t["target"]["met"])


def test_als_and_tuner_runs_resume(results: Path) -> None:
    """`make bench` again: results measured with the same settings are kept; other settings measure again."""
    files = [results / "als_vs_implicit" / f"synthetic-{ALS_SIZE}.json",
             results / "tuner" / f"synthetic-{ALS_SIZE}.json", results / "tuner" / f"synthetic-{TUNER_SIZE}.json"]
    before = {f: f.stat().st_mtime_ns for f in files}
    kept = files[2].read_bytes()
    log = als_and_tuner_runs(results)
    assert log.count("done before with the same settings") == 3, log
    assert {f: f.stat().st_mtime_ns for f in files} == before
    log = run("tuner.py", "--synthetic", str(TUNER_SIZE), "--max-users", "200", "--out", str(results))
    assert "measured with other settings: running again" in log
    assert json.loads(files[2].read_text())["max_users"] == 200
    files[2].write_bytes(kept)  # the module's report was written from the first run
