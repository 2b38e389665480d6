"""A small client of a running hybridrec API (``hybridrec serve``), for scripts and notebooks.

Plain HTTP from the standard library; errors of the API come back as ``GraphQLRequestError``
carrying the GraphQL errors (each with its ``extensions.code``) or the HTTP status.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from etl.errors import HybridrecError

RECOMMENDATIONS = """query($user: ID!, $first: Int!, $variant: String) {
  recommendations(userId: $user, first: $first, variant: $variant) {
    variant exposureId items { rank score item { id title genres } }
  }
}"""

RECORD = """mutation($user: ID!, $item: ID!, $value: Float!, $exposure: ID) {
  recordInteraction(userId: $user, itemId: $item, value: $value, exposureId: $exposure) {
    __typename ... on InteractionRecorded { eventId } ... on ItemNotFound { message }
  }
}"""


class GraphQLRequestError(HybridrecError):
    """The API answered with errors (``errors``: the GraphQL errors) or an HTTP error (``status``)."""

    def __init__(self, message: str, *, status: int | None = None, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.errors = errors or []


class GraphQLClient:
    """``GraphQLClient("http://127.0.0.1:8000/graphql", api_key=...)``: ``query`` any document, or
    the shortcuts ``recommendations`` and ``record_interaction``."""

    def __init__(self, url: str, *, api_key: str | None = None, timeout: float = 10.0) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"GraphQLClient needs an http(s) URL of the API, e.g. http://127.0.0.1:8000/graphql; "
                             f"got {url!r}")  # urllib would also open file:// and ftp:// URLs
        self.url = url
        self.api_key = api_key
        self.timeout = timeout

    def query(self, document: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The ``data`` of the answer; GraphQLRequestError when it has errors or the HTTP call fails."""
        body = json.dumps({"query": document, "variables": dict(variables or {})}).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["X-API-Key"] = self.api_key
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - http(s), checked
                body_text = response.read()
            try:
                answer = json.loads(body_text)
            except ValueError as err:
                raise GraphQLRequestError(f"{self.url} answered something that is not JSON: {body_text[:80]!r}",
                                          status=200) from err
        except urllib.error.HTTPError as err:
            try:
                answer = json.loads(err.read())
            except ValueError:
                raise GraphQLRequestError(f"HTTP {err.code} from {self.url}", status=err.code) from err
            errors = answer.get("errors") or []
            raise GraphQLRequestError(_message(errors) or f"HTTP {err.code} from {self.url}", status=err.code,
                                      errors=errors) from err
        except urllib.error.URLError as err:
            raise GraphQLRequestError(f"{self.url} did not answer: {err.reason}") from err
        if answer.get("errors"):
            raise GraphQLRequestError(_message(answer["errors"]), status=200, errors=answer["errors"])
        return answer["data"]

    def recommendations(self, user_id: str, first: int = 10, *, variant: str | None = None) -> dict[str, Any]:
        """``recommendations(userId, first, variant)``: variant, exposureId and the ranked items."""
        data = self.query(RECOMMENDATIONS, {"user": user_id, "first": first, "variant": variant})
        return data["recommendations"]

    def record_interaction(self, user_id: str, item_id: str, value: float = 1.0, *,
                           exposure_id: str | None = None) -> str:
        """``recordInteraction``: the event id once it is durable (the user's next answer reflects it);
        GraphQLRequestError naming the item when the catalogue does not hold it."""
        data = self.query(RECORD, {"user": user_id, "item": item_id, "value": value, "exposure": exposure_id})
        result = data["recordInteraction"]
        if result["__typename"] != "InteractionRecorded":
            raise GraphQLRequestError(result["message"], status=200)
        return str(result["eventId"])


def _message(errors: list[dict[str, Any]]) -> str:
    return "; ".join(f"{e.get('message')} ({(e.get('extensions') or {}).get('code', 'no code')})" for e in errors)
