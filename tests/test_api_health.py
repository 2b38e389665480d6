"""/health, /metrics, request ids and structured logs."""

from __future__ import annotations

import json
import logging

import pytest

from graphql_api.app import create_app
from graphql_api.logs import JsonFormatter
from tests.api_helpers import RECS, running

pytest_plugins = ["tests.api_helpers"]

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_health_live_and_ready(make_settings) -> None:
    async with running(create_app(make_settings())) as gql:
        health = await gql.http.get("/health")
        live = await gql.http.get("/health/live")
        ready = await gql.http.get("/health/ready")
    body = health.json()
    assert health.status_code == 200 and body["status"] == "ok" and body["live"] and body["ready"]
    assert body["bundle"]["version"] == "v1" and "als" in body["bundle"]["signals"] and body["redis"] == "disabled"
    assert live.json() == {"live": True} and ready.status_code == 200


async def test_metrics_cover_latency_cache_variants_errors(make_settings) -> None:
    async with running(create_app(make_settings())) as gql:
        await gql.post(RECS, {"user": "3"})
        await gql.post(RECS, {"user": "3"})
        await gql.post('{ recommendations(userId: "3", variant: "als") { variant } }')
        await gql.post('{ recommendations(userId: "3", first: 0) { variant } }')
        await gql.post('{ model { version } item(id: "1") { __typename } }')
        text = (await gql.http.get("/metrics")).text
    assert 'hybridrec_request_seconds_count{cached="false",operation="recommendations"} 3.0' in text
    assert 'hybridrec_request_seconds_count{cached="true",operation="recommendations"} 1.0' in text
    assert 'hybridrec_request_seconds_count{cached="false",operation="item,model"} 1.0' in text
    assert 'hybridrec_cache_total{result="hit"} 1.0' in text and 'hybridrec_cache_total{result="miss"} 3.0' in text
    assert 'hybridrec_variant_total{variant="tuned"} 2.0' in text  # the cache hit counts too
    assert 'hybridrec_variant_total{variant="als"} 1.0' in text
    assert 'hybridrec_errors_total{kind="bad_user_input"} 1.0' in text
    assert 'hybridrec_bundle_info{version="v1"} 1.0' in text


async def test_request_id_in_and_out_and_in_the_logs(make_settings, caplog) -> None:
    caplog.set_level(logging.INFO, logger="hybridrec")
    async with running(create_app(make_settings(access_log=True))) as gql:
        given = await gql.post(RECS, {"user": "3"}, headers={"x-request-id": "abc-123"})
        generated = await gql.post(RECS, {"user": "3"})
        junk = await gql.post(RECS, {"user": "3"}, headers={"x-request-id": "bad id with spaces"})
        await gql.post('{ recommendations(userId: "3", first: 0) { variant } }', headers={"x-request-id": "err-1"})
    assert given.headers["x-request-id"] == "abc-123"
    assert len(generated.headers["x-request-id"]) == 32 and junk.headers["x-request-id"] != "bad id with spaces"
    fmt = JsonFormatter()
    lines = [json.loads(fmt.format(r)) for r in caplog.records]
    access = [r for r in lines if r["logger"] == "hybridrec.access"]
    assert {"request_id": "abc-123", "status": 200, "operation": "recommendations", "cached": False}.items() \
        <= next(r for r in access if r.get("request_id") == "abc-123").items()
    errors = [r for r in lines if r["logger"] == "hybridrec.graphql" and r.get("request_id") == "err-1"]
    assert errors and errors[0]["kind"] == "bad_user_input" and errors[0]["level"] == "INFO"
