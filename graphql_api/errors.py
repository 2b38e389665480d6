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


class InvalidItem(BadInput):
    """A catalogue item (upsertItems, hybridrec items add) that cannot be accepted: its batch is
    refused whole. Names the row (0-based position in the batch) and the field."""

    def __init__(self, message: str, *, field: str, row: int | None = None) -> None:
        self.bare = message
        """The reason without the row."""
        self.row = row
        super().__init__(message if row is None else f"row {row}: {message}", field=field)

    @property
    def extensions(self) -> dict[str, str]:
        out = super().extensions
        if self.row is not None:
            out["row"] = str(self.row)
        return out


class Forbidden(ApiError, PermissionError):
    """The operation needs an API key (or an admin key) that the request did not present."""

    code = "FORBIDDEN"


class EventStoreUnavailable(ApiError):
    """No durable place can take an event right now (Redis down and no local log)."""

    code = "SERVICE_UNAVAILABLE"


class NoBundle(ApiError):
    """No model bundle is loaded (the server is not ready)."""

    code = "NOT_READY"
