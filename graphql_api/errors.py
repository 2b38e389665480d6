"""Failures the API expects and reports to clients (everything else is masked and logged).

They subclass the project's base (etl.errors.HybridrecError). A ``BadInput`` becomes a GraphQL
error with ``extensions.code = "BAD_USER_INPUT"`` and its message shown as is; unknown items are
not errors at all but typed results in the schema (``ItemNotFound``).
"""

from __future__ import annotations

from etl.errors import HybridrecError


class ApiError(HybridrecError):
    """An expected failure whose message is safe to show to the client."""

    code = "API_ERROR"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

    @property
    def extensions(self) -> dict[str, str]:
        out = {"code": self.code}
        if self.field is not None:
            out["field"] = self.field
        return out


class BadInput(ApiError, ValueError):
    """An argument out of range or inconsistent (first outside 1..100, bad weights, unknown variant)."""

    code = "BAD_USER_INPUT"


class Forbidden(ApiError, PermissionError):
    """The operation needs an API key (or an admin key) that the request did not present."""

    code = "FORBIDDEN"


class EventStoreUnavailable(ApiError):
    """No durable place can take an event right now (Redis down and no local log)."""

    code = "SERVICE_UNAVAILABLE"


class NoBundle(ApiError):
    """No model bundle is loaded (the server is not ready)."""

    code = "NOT_READY"
