"""bench/api_load.py's own arithmetic: the server histogram by cache kind, quantiles, medians, targets."""

from __future__ import annotations

import sys

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
import api_load  # noqa: E402

METRICS = """\
# HELP hybridrec_request_seconds GraphQL request latency
# TYPE hybridrec_request_seconds histogram
hybridrec_request_seconds_bucket{cached="true",le="0.001",operation="recommendations"} 50.0
hybridrec_request_seconds_bucket{cached="true",le="0.0025",operation="recommendations"} 90.0
hybridrec_request_seconds_bucket{cached="true",le="+Inf",operation="recommendations"} 100.0
hybridrec_request_seconds_bucket{cached="false",le="0.001",operation="recommendations"} 0.0
hybridrec_request_seconds_bucket{cached="false",le="0.0025",operation="recommendations"} 10.0
hybridrec_request_seconds_bucket{cached="false",le="+Inf",operation="recommendations"} 10.0
hybridrec_request_seconds_bucket{cached="false",le="0.001",operation="item"} 5.0
hybridrec_request_seconds_bucket{cached="false",le="0.0025",operation="item"} 5.0
hybridrec_request_seconds_bucket{cached="false",le="+Inf",operation="item"} 5.0
hybridrec_request_seconds_count{cached="true",operation="recommendations"} 100.0
"""


def test_histogram_by_kind_and_quantiles():
    hist = api_load.parse_latency(METRICS)
    assert hist["hit"] == {0.001: 50.0, 0.0025: 90.0, float("inf"): 100.0}
    assert hist["computed"] == {0.001: 5.0, 0.0025: 15.0, float("inf"): 15.0}, "operations are summed"
    # the 50th of 100 hits is the top of the first bucket; the 70th half way into the second
    assert api_load.histogram_quantile(0.5, hist["hit"]) == pytest.approx(1.0)
    assert api_load.histogram_quantile(0.7, hist["hit"]) == pytest.approx(1.75)
    assert api_load.histogram_quantile(0.99, hist["hit"]) == pytest.approx(2.5), "+Inf bucket: its lower bound"
    assert api_load.histogram_quantile(0.5, {}) is None


def test_batches_are_summed_over_workers():
    text = METRICS + ('hybridrec_search_batch_size_sum{pid="1"} 30.0\nhybridrec_search_batch_size_count{pid="1"} 4.0\n'
                      'hybridrec_search_batch_size_sum 10.0\nhybridrec_search_batch_size_count 2.0\n')
    assert api_load.parse_batches(text) == (10.0, 2.0), "labelled series are not the totals"
    assert api_load.parse_batches(METRICS) == (0.0, 0.0)


def test_server_kinds_counts_the_run_only():
    before = api_load.parse_latency(METRICS)
    after = api_load.parse_latency(METRICS.replace("} 100.0", "} 300.0").replace('le="0.0025",operation="recommendations"} 90.0',
                                                                                 'le="0.0025",operation="recommendations"} 290.0'))
    kinds = api_load.server_kinds(before, after)
    assert kinds["hit"]["count"] == 200 and kinds["computed"] == {"count": 0}
    assert kinds["hit"]["p50_ms"] == pytest.approx(1.75)


def test_summary_is_the_median_of_runs_and_checks_targets():
    def run(rps: float, p99: float) -> dict:
        return {"rps": rps, "p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": p99, "max_ms": 9.0, "errors": 0, "requests": 10,
                "hits": 10, "misses": 0, "uncached": 0, "server_cpu_ms_per_req": 0.5, "capacity_rps": 4000.0,
                "loadavg_before": 1.0, "server": {"hit": {"count": 10, "p99_ms": 3.0}, "computed": {"count": 0}}}

    s = api_load.summarise("cached", [run(1900, 20), run(2100, 30), run(2500, 10)])
    assert (s["rps"], s["p99_ms"], s["runs"], s["hits"]) == (2100, 20, 3, 30)
    assert s["met"] is True and s["server_hit_p99_ms"] == 3.0 and s["server_computed_p99_ms"] is None
    assert api_load.summarise("uncached", [run(700, 5)])["met"] is False
    assert api_load.summarise("explain", [run(10, 49)])["met"] is True


def test_explain_sweep_phases_take_their_connections_and_the_explain_target():
    assert api_load.phase_parts("explain@4") == ("explain", 4)
    assert api_load.phase_parts("cached") == ("cached", None)

    def run(p99: float) -> dict:
        return {"rps": 300.0, "p50_ms": 10.0, "p95_ms": 20.0, "p99_ms": p99, "max_ms": 90.0, "errors": 0,
                "requests": 10, "hits": 0, "misses": 0, "uncached": 10, "server_cpu_ms_per_req": 5.0,
                "capacity_rps": 400.0, "loadavg_before": 1.0, "connections": 4,
                "server": {"hit": {"count": 0}, "computed": {"count": 10, "p99_ms": 30.0}}}

    s = api_load.summarise("explain@4", [run(40), run(45), run(60)])
    assert s["connections"] == 4 and s["p99_ms"] == 45 and s["met"] is True
    assert s["target"] == api_load.TARGETS["explain"]
    assert api_load.summarise("explain@16", [run(70)])["met"] is False


def test_phases_run_in_server_groups_reference_first():
    groups = api_load.serving_groups(["explain", "cached", "reference", "explain@4", "explain-cached", "uncached"])
    assert groups == [("reference", ["reference"]), ("cached", ["cached", "explain-cached"]),
                      ("uncached", ["explain", "explain@4", "uncached"])]
    assert api_load.serving_groups(["uncached"]) == [("uncached", ["uncached"])]
    assert api_load.summarise("reference", [_run(800.0, 40.0)])["met"] is None, "the yardstick has no target"


def test_yardstick_is_the_stock_app_against_the_issue_figures():
    fig = api_load.yardstick({"rps": 1360.0, "p99_ms": 31.0})
    assert fig == {"rps_ratio": pytest.approx(2.0), "p99_ratio": pytest.approx(0.5)}


def test_bodies_per_user_or_one_without_variables(tmp_path):
    import json

    per_user = api_load.bodies_file(tmp_path, api_load.CANONICAL, ["1", "2"], "a").read_text().splitlines()
    assert [json.loads(line)["variables"] for line in per_user] == [{"u": "1"}, {"u": "2"}]
    (stock,) = api_load.bodies_file(tmp_path, api_load.STOCK_QUERY, None, "b").read_text().splitlines()
    assert json.loads(stock) == {"query": api_load.STOCK_QUERY}


def _run(rps: float, p99: float) -> dict:
    return {"rps": rps, "p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": p99, "max_ms": 9.0, "errors": 0, "requests": 10,
            "hits": 0, "misses": 0, "uncached": 10, "server_cpu_ms_per_req": 1.0, "capacity_rps": 1000.0,
            "loadavg_before": 1.0, "server": {"hit": {"count": 0}, "computed": {"count": 0}}}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_bench_runs_end_to_end(tmp_path):
    """The bench itself, tiny: builds its bundle, serves it with uvicorn, loads it, writes JSON and plot."""
    import json
    import subprocess

    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "api_load.py"), "--signals", "popularity,als", "--work-dir",
         str(tmp_path / "work"), "--results", str(tmp_path / "out"), "--duration", "1", "--repeat", "1",
         "--phases", "reference,cached,uncached", "--explain-connections", "2", "--connections", "4"],
        cwd=REPO, capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((tmp_path / "out" / "api_load.json").read_text())
    assert results["signals"] == ["popularity", "als"] or sorted(results["signals"]) == ["als", "popularity"]
    assert set(results["phases"]) == {"reference", "cached", "uncached", "explain@2"}
    for name, phase in results["phases"].items():
        assert phase["errors"] == 0 and phase["requests"] > 0, name
    assert results["phases"]["explain@2"]["connections"] == 2
    assert results["phases"]["cached"]["hits"] > 0 and results["phases"]["uncached"]["uncached"] > 0
    assert results["phases"]["uncached"]["search_batch_mean"] >= 1  # read off the server's batch histogram
    assert results["reference"]["rps_ratio"] > 0 and results["reference"]["quoted"] == api_load.STOCK_QUOTED
    assert (tmp_path / "out" / "api_load_latency.png").stat().st_size > 5_000
    # the paired executor comparison, on the bundle just built
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "api_load.py"), "--bundle-root", str(tmp_path / "work" / "bundles-popularity-als"),
         "--results", str(tmp_path / "out"), "--duration", "1", "--repeat", "2", "--phases", "explain",
         "--connections", "4", "--compare-executor"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    paired = json.loads((tmp_path / "out" / "api_load_executor.json").read_text())["phases"]["explain"]
    for name in api_load.EXECUTORS:
        assert paired["errors"][name] == 0 and len(paired["runs"][name]) == 2
        assert all(r["requests"] > 0 for r in paired["runs"][name])
    assert paired["cpu_ratio"] > 0 and "plain/graphql-core" in proc.stdout
    # a checkout against another (here: itself), paired the same way
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "api_load.py"), "--bundle-root", str(tmp_path / "work" / "bundles-popularity-als"),
         "--results", str(tmp_path / "out"), "--duration", "1", "--repeat", "2", "--phases", "uncached",
         "--connections", "4", "--against", str(REPO)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    against = json.loads((tmp_path / "out" / "api_load_against.json").read_text())
    assert against["against"] == str(REPO)
    paired = against["phases"]["uncached"]
    for name in ("this", "against"):
        assert paired["errors"][name] == 0 and len(paired["runs"][name]) == 2
        assert all(r["requests"] > 0 for r in paired["runs"][name])
    assert paired["rps_ratio"] > 0 and "this/against" in proc.stdout
    assert len(paired["cpu_paired"]["pairs"]) == 2 and "pair by pair" in proc.stdout
