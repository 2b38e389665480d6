"""The Python API as a data scientist uses it: docs/walkthrough.py end to end, and the GraphQL client
helper against a real server of the bundle it published."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import hybridrec
from etl.sources.synthetic import SyntheticConfig, write_parquet
from bench.processes import start_uvicorn
from tests.conftest import REPO


@pytest.fixture(scope="module")
def walked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """docs/walkthrough.py run as a user runs it, on 20,000 synthetic interactions."""
    root = tmp_path_factory.mktemp("walkthrough")
    write_parquet(SyntheticConfig(n_interactions=20_000, seed=3), root / "raw", client=None)
    proc = subprocess.run(
        [sys.executable, str(REPO / "docs" / "walkthrough.py"), "--data", str(root / "raw"), "--work", str(root / "work"),
         "--signals", "popularity,als,content", "--generations", "3", "--workers", "1"],
        cwd=root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return root / "work", proc.stdout


def test_the_walkthrough_trains_tunes_publishes_and_answers(walked: tuple[Path, str]) -> None:
    work, out = walked
    assert "tuned weights:" in out and "published:" in out
    assert "hybrid" in out  # the metrics table has the blend's row
    bundle = hybridrec.load_bundle(work / "bundles")
    assert set(bundle.signals) == {"popularity", "als", "content"}
    answer = hybridrec.HybridRecommender(bundle).recommend(str(bundle.users.ids[0]), 10)
    assert len(answer.items) == 10
    assert f"user {bundle.users.ids[0]} (trained, variant tuned):" in out


def test_the_graphql_client_queries_a_served_bundle(walked: tuple[Path, str], tmp_path: Path) -> None:
    work, _ = walked
    server = start_uvicorn({"HYBRIDREC_BUNDLE_ROOT": str(work / "bundles"), "HYBRIDREC_EVENTS_DIR": str(tmp_path / "ev"),
                            "HYBRIDREC_API_KEYS": "walkthrough-key-0001"}, tmp_path / "uvicorn.log")
    try:
        api = hybridrec.GraphQLClient(f"{server.url}/graphql", api_key="walkthrough-key-0001")
        bundle = hybridrec.load_bundle(work / "bundles")
        user = str(bundle.users.ids[0])
        before = api.recommendations(user, 5)
        assert before["variant"] == "tuned" and len(before["items"]) == 5
        assert before["exposureId"] is None  # no experiment runs
        top = before["items"][0]["item"]["id"]
        assert api.record_interaction(user, top, 5.0, exposure_id=before["exposureId"])
        with pytest.raises(hybridrec.GraphQLRequestError, match="no-such-item"):
            api.record_interaction(user, "no-such-item")
        with pytest.raises(hybridrec.GraphQLRequestError) as bad:
            api.recommendations(user, -1)
        assert bad.value.errors and bad.value.errors[0]["extensions"]["code"] == "BAD_USER_INPUT"
        anonymous = hybridrec.GraphQLClient(f"{server.url}/graphql")
        with pytest.raises(hybridrec.GraphQLRequestError) as refused:
            anonymous.record_interaction(user, top)
        assert refused.value.errors[0]["extensions"]["code"] == "FORBIDDEN"
        with pytest.raises(hybridrec.GraphQLRequestError, match="HTTP 405") as not_graphql:  # a plain-text route
            hybridrec.GraphQLClient(f"{server.url}/health").query("{ __typename }")
        assert not_graphql.value.status == 405
    finally:
        server.stop()


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.org/graphql", "127.0.0.1:8000/graphql", ""])
def test_the_graphql_client_takes_http_urls_only(url: str) -> None:
    with pytest.raises(ValueError, match="http"):
        hybridrec.GraphQLClient(url)
