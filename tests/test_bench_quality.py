"""bench/quality.py keeps a row only for the settings it was measured with."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.quality import DatasetBench


def bench_at(folder: Path, **overrides: object) -> DatasetBench:
    """A DatasetBench with only what its row cache reads (no dataset: rows come from the callables)."""
    args = argparse.Namespace(eval_users=None, workers=2, lightfm_epochs=30, ease_lambdas=[100.0, 200.0],
                              ease_max_items=25_000, signals=["als", "svd"], quick=False, force=False)
    for name, value in overrides.items():
        setattr(args, name, value)
    bench = object.__new__(DatasetBench)
    bench.name, bench.folder, bench.args, bench.lightgcn_epochs = "tiny", folder, args, None
    return bench


def counting_run(calls: list[str], name: str, **row: object):
    def run() -> dict[str, object]:
        calls.append(name)
        return {"method": name, "ndcg": None, "skipped": "counted", **row}
    return run


def test_rows_are_kept_for_the_same_settings_only(tmp_path: Path):
    calls: list[str] = []
    first = bench_at(tmp_path).cached("ease", counting_run(calls, "ease"))
    assert first["settings"] == {"eval_users": None, "lambdas": [100.0, 200.0], "max_items": 25_000}
    assert bench_at(tmp_path).cached("ease", counting_run(calls, "ease")) == first
    assert calls == ["ease"], "the same settings: kept"
    bench_at(tmp_path, ease_lambdas=[100.0, 500.0]).cached("ease", counting_run(calls, "ease"))
    bench_at(tmp_path, eval_users=500).cached("ease", counting_run(calls, "ease"))
    assert calls == ["ease"] * 3, "other lambdas, then other test users: measured again"
    # another baseline's knobs do not touch this row
    bench_at(tmp_path, eval_users=500, lightfm_epochs=3).cached("ease", counting_run(calls, "ease"))
    assert calls == ["ease"] * 3
    bench_at(tmp_path, eval_users=500, force=True).cached("ease", counting_run(calls, "ease"))
    assert calls == ["ease"] * 4, "--force measures again"


def test_signal_rows_follow_the_pipeline_params(tmp_path: Path):
    calls: list[str] = []
    params = {"factors": 64, "regularization": (0.01,)}
    bench_at(tmp_path).cached("signal-als", counting_run(calls, "als", params=params), params=params)
    # read back from JSON the tuple is a list: still the same params
    bench_at(tmp_path).cached("signal-als", counting_run(calls, "als", params=params), params=params)
    assert calls == ["als"]
    other = {**params, "factors": 128}
    bench_at(tmp_path).cached("signal-als", counting_run(calls, "als", params=other), params=other)
    bench_at(tmp_path, signals=["als"]).cached("signal-als", counting_run(calls, "als", params=other), params=other)
    assert calls == ["als"] * 3, "other pipeline params, then another signal set: measured again"
