"""bench/lightgcn_gpu.py at a tiny size on CPU: its generator and split, its JSON, and the report's section."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.lightgcn_gpu import GraphShape, generate, protocol_split

REPO = Path(__file__).resolve().parents[1]


def test_generator_gives_the_shape_it_was_asked_for() -> None:
    shape = GraphShape.scaled(60_000, seed=3)
    users, items, times = generate(shape)
    assert users.size == items.size == times.size == shape.interactions
    keys = users * shape.items + items
    assert np.unique(keys).size == keys.size  # distinct user-item pairs
    per_user = np.bincount(users, minlength=shape.users)
    assert per_user.min() >= min(shape.min_per_user, shape.interactions // shape.users)
    degrees = np.sort(np.bincount(items, minlength=shape.items))
    assert degrees[-1] > 10 * max(np.median(degrees), 1)  # power-law popularity: a head far above the median
    again = generate(shape)
    assert all(np.array_equal(a, b) for a, b in zip((users, items, times), again, strict=True))


def test_protocol_split_holds_out_the_latest_fifth() -> None:
    rng = np.random.default_rng(0)
    counts = np.array([3, 5, 10, 21])
    users = np.repeat(np.arange(counts.size), counts)
    times = rng.random(users.size)
    part = protocol_split(users, times, counts.size)
    for u, c in enumerate(counts):
        mine = users == u
        test_n = int(np.ceil(0.2 * c)) if c >= 5 else 0
        train_n = c - test_n
        val_n = int(np.ceil(0.2 * train_n)) if train_n >= 5 else 0
        assert np.bincount(part[mine], minlength=3).tolist() == [train_n - val_n, val_n, test_n]
        t, p = times[mine], part[mine]
        if test_n:
            assert t[p == 2].min() > t[p < 2].max()  # test is the latest
        if val_n:
            assert t[p == 1].min() > t[p == 0].max()


@pytest.mark.timeout(600)
def test_bench_json_and_report_section(tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "lightgcn_gpu.py"), "--interactions", "40000", "--device", "cpu",
         "--batches", "auto", "8192", "--epochs", "4", "--eval-every", "2", "--eval-users", "200",
         "--out", str(out / "lightgcn_gpu")],
        cwd=REPO, capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((out / "lightgcn_gpu" / "lightgcn_cpu_40000.json").read_text())
    assert sum(data["sizes"].values()) == 40_000 and data["device"] == "cpu"
    assert [r["batch"] for r in data["runs"]] == [2_048, 8_192]  # 'auto' is the default batch
    for run in data["runs"]:
        assert run["epochs_run"] == 4 and len(run["epoch_seconds"]) == 4 and run["peak_gpu_mib"] is None
        epochs, scores = zip(*run["history"])
        assert list(epochs) == [2, 4]
        assert run["best_epoch"] == epochs[int(np.argmax(scores))] and run["best_validation_ndcg"] == max(scores)
        assert 0 < run["test_ndcg"] <= 1 and run["steps_per_epoch"] == -(-data["sizes"]["fit"] // run["batch"])
        assert run["basis_seconds"] > 0

    report = subprocess.run([sys.executable, str(REPO / "bench" / "report.py"), "--results", str(out)], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    text = (out / "report.md").read_text()
    start = text.index("## LightGCN on one device")
    section = text[start : text.find("\n## ", start + 1)]
    run = data["runs"][1]
    curve = ", ".join(f"{e}: {v:.4f}" for e, v in run["history"])
    assert f"| 40,000 | {data['sizes']['fit']:,} | 8,192 | {run['steps_per_epoch']} |" in section
    assert f"| {curve} | {run['best_epoch']} |" in section and f"| {run['test_ndcg']:.4f} | n/a |" in section
    assert "No GPU run yet" in section
