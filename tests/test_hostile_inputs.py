"""Hostile request bodies against a real ``hybridrec serve`` (uvicorn) on loopback: oversized,
deeply nested, repeated keys, long strings, a refused content type after a cached answer; and
what /health gives away. Each probe is answered with a clear 4xx and the server keeps serving."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.processes import Uvicorn, start_uvicorn

pytest_plugins = ["tests.api_helpers"]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

KEY = "inputs-key-000000000001"
RECS = 'query($u: ID!) { recommendations(userId: $u, first: 3) { items { item { id } } } }'


@pytest.fixture(scope="module")
def root(module_api_root: Path) -> Path:
    return module_api_root


@pytest.fixture(scope="module")
def server(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Uvicorn]:
    work = tmp_path_factory.mktemp("inputs-server")
    server = start_uvicorn({"HYBRIDREC_BUNDLE_ROOT": str(root), "HYBRIDREC_EVENTS_DIR": str(work / "events"),
                            "HYBRIDREC_API_KEYS": KEY}, work / "uvicorn.log")
    yield server
    server.stop()


def _raw(server: Uvicorn, head: bytes, body: bytes = b"", timeout: float = 10.0) -> tuple[int, bytes, float]:
    """Send raw bytes; (status, response, seconds until the status line arrived)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        started = time.monotonic()
        sock.sendall(head + body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        elapsed = time.monotonic() - started
        head_end = data.find(b"\r\n\r\n") + 4
        length = next((int(line.split(b":")[1]) for line in data[:head_end].lower().split(b"\r\n")
                       if line.startswith(b"content-length:")), 0)
        while len(data) < head_end + length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return int(data.split(b" ", 2)[1]), data, elapsed


def _alive(server: Uvicorn) -> None:
    answer = httpx.post(f"{server.url}/graphql", json={"query": RECS, "variables": {"u": "3"}}, timeout=30)
    assert answer.status_code == 200 and len(answer.json()["data"]["recommendations"]["items"]) == 3


def test_an_oversized_body_is_refused_before_it_is_sent(server: Uvicorn) -> None:
    """Content-Length over the limit: 413 at once, though not one byte of the body was sent."""
    head = (b"POST /graphql HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: 50000000\r\n\r\n")
    status, response, _ = _raw(server, head)
    assert status == 413 and b"TOO_LARGE" in response
    _alive(server)


def test_an_oversized_chunked_body_is_cut_off(server: Uvicorn) -> None:
    """No length given: the server stops reading at the limit (it never holds the whole body)."""
    chunk = b"x" * 65536
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(24)) + b"0\r\n\r\n"  # 1.5 MiB
    head = b"POST /graphql HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    status, response, _ = _raw(server, head, body)
    assert status == 413 and b"TOO_LARGE" in response
    _alive(server)


def test_json_nested_a_thousand_deep_is_a_400(server: Uvicorn) -> None:
    for body in ('[' * 1000 + ']' * 1000,
                 json.dumps({"query": RECS, "variables": {"u": "3", "x": json.loads('[' * 100 + ']' * 100)}})):
        answer = httpx.post(f"{server.url}/graphql", content=body, headers={"content-type": "application/json"},
                            timeout=30)
        assert answer.status_code == 400, answer.text
        assert "deeper than 32" in answer.text
    _alive(server)


def test_get_variables_are_checked_as_post_ones(server: Uvicorn) -> None:
    deep = json.dumps({"u": "3", "x": json.loads("[" * 60 + "]" * 60)})
    for variables, message in ((deep, "deeper than 32"), (json.dumps({"u": "8" * 5000}), "at most 256")):
        answer = httpx.get(f"{server.url}/graphql", params={"query": RECS, "variables": variables}, timeout=30)
        assert answer.status_code == 400 and message in answer.text, answer.text[:300]


def test_a_long_document_is_refused_before_it_is_parsed(server: Uvicorn) -> None:
    answer = httpx.post(f"{server.url}/graphql", json={"query": "{ model { version } }" + " " * 40_000}, timeout=30)
    assert answer.status_code == 400 and "at most 32768" in answer.text


def test_a_repeated_key_is_refused_not_resolved(server: Uvicorn) -> None:
    """Which `query` would run: the first or the last? Neither: the body is ambiguous."""
    body = ('{"query": "{ model { version } }", "query": "mutation { deleteUserData(userId: \\"3\\") '
            '{ eventsRemoved } }"}')
    answer = httpx.post(f"{server.url}/graphql", content=body, headers={"content-type": "application/json"},
                        timeout=30)
    assert answer.status_code == 400 and "repeats the key 'query'" in answer.text


@pytest.mark.parametrize("where", ["variable", "literal", "variant", "batch"])
def test_long_strings_are_refused_typed_and_not_echoed(server: Uvicorn, where: str) -> None:
    long_id = "7" * (30_000 if where == "literal" else 900_000)  # a literal within the longest document
    if where == "variable":
        payload = {"query": RECS, "variables": {"u": long_id}}
    elif where == "literal":
        payload = {"query": '{ item(id: "%s") { __typename } }' % long_id}
    elif where == "variant":
        payload = {"query": 'query($v: String) { recommendations(userId: "3", variant: $v) { variant } }',
                   "variables": {"v": long_id}}
    else:
        payload = {"query": 'mutation($b: [InteractionInput!]!) { recordInteractions(batch: $b) { accepted } }',
                   "variables": {"b": [{"userId": "3", "itemId": "4"}, {"userId": "3", "itemId": long_id}]}}
    answer = httpx.post(f"{server.url}/graphql", json=payload, headers={"x-api-key": KEY}, timeout=30)
    assert answer.status_code in (200, 400) and len(answer.content) < 2000, answer.content[:500]
    error = answer.json()["errors"][0]
    assert error["extensions"]["code"] == "BAD_USER_INPUT" and f"{len(long_id)} characters; at most 256" in error["message"]
    if where == "batch":  # nothing of the refused batch was kept
        user = httpx.post(f"{server.url}/graphql", json={"query": '{ user(id: "3") { onlineInteractions } }'},
                          headers={"x-api-key": KEY}, timeout=30).json()
        assert user["data"]["user"]["onlineInteractions"] == 0


def test_a_cached_answer_is_not_served_for_a_refused_content_type(server: Uvicorn) -> None:
    body = json.dumps({"query": RECS, "variables": {"u": "4"}})
    first = httpx.post(f"{server.url}/graphql", content=body, headers={"content-type": "application/json"}, timeout=30)
    cached = httpx.post(f"{server.url}/graphql", content=body, headers={"content-type": "application/json"}, timeout=30)
    refused = httpx.post(f"{server.url}/graphql", content=body, headers={"content-type": "text/plain"}, timeout=30)
    assert first.status_code == cached.status_code == 200 and cached.headers.get("x-cache") == "hit"
    assert refused.status_code >= 400 and "x-cache" not in refused.headers


def test_health_names_no_paths(server: Uvicorn, root: Path) -> None:
    text = httpx.get(f"{server.url}/health", timeout=10).text
    health = json.loads(text)
    assert health["ready"] is True and health["bundle"]["version"] == "v1"
    assert str(root) not in text and str(root.parent) not in text and "/tmp" not in text


def test_x_forwarded_for_from_loopback_does_not_pick_the_rate_limit_bucket(root: Path, tmp_path: Path) -> None:
    """uvicorn believes X-Forwarded-For from 127.0.0.1 by default: a local client naming a new
    address per request would get a fresh bucket each time. Only configured proxies are believed."""
    server = start_uvicorn({"HYBRIDREC_BUNDLE_ROOT": str(root), "HYBRIDREC_EVENTS_DIR": str(tmp_path / "events"),
                            "HYBRIDREC_API_KEYS": KEY, "HYBRIDREC_RATE_LIMIT": "1", "HYBRIDREC_RATE_BURST": "3"},
                           tmp_path / "uvicorn.log")
    try:
        codes = [httpx.post(f"{server.url}/graphql", json={"query": "{ model { version } }"},
                            headers={"x-forwarded-for": f"203.0.113.{k}"}, timeout=30).status_code for k in range(10)]
    finally:
        server.stop()
    assert codes[0] == 200 and 429 in codes, codes
