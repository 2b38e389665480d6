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
                "hits": 10, "misses": 0, "uncached": 0, "server_cpu_ms_per_req": 0.5, "capacity_2_cores_rps": 4000.0,
                "loadavg_before": 1.0, "server": {"hit": {"count": 10, "p99_ms": 3.0}, "computed": {"count": 0}}}

    s = api_load.summarise("cached", [run(1900, 20), run(2100, 30), run(2500, 10)])
    assert (s["rps"], s["p99_ms"], s["runs"], s["hits"]) == (2100, 20, 3, 30)
    assert s["met"] is True and s["server_hit_p99_ms"] == 3.0 and s["server_computed_p99_ms"] is None
    assert api_load.summarise("uncached", [run(700, 5)])["met"] is False
    assert api_load.summarise("explain", [run(10, 49)])["met"] is True
