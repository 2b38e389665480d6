"""Structured JSON logs, one object per line, each with the request id of the request it serves.

The request id comes from the X-Request-ID header (or is generated) and lives in a context
variable for the duration of the request; loggers from ``get_logger`` stamp it on every record
they make while serving that request.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar

request_id_var: ContextVar[str | None] = ContextVar("hybridrec_request_id", default=None)

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object; ``extra={...}`` fields become top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def _json_handler() -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler._hybridrec_json = True  # type: ignore[attr-defined]
    return handler


def configure_logging(level: str = "INFO") -> None:
    """Route the ``hybridrec`` loggers, and uvicorn's error log, to stderr as JSON lines (idempotent)."""
    logger = logging.getLogger("hybridrec")
    logger.setLevel(level)
    if not any(getattr(h, "_hybridrec_json", False) for h in logger.handlers):
        logger.addHandler(_json_handler())
    server = logging.getLogger("uvicorn.error")  # configured by uvicorn before it builds the app
    if server.handlers and not any(getattr(h, "_hybridrec_json", False) for h in server.handlers):
        server.handlers = [_json_handler()]


class _RequestLogger(logging.LoggerAdapter):
    """Adds the current request id to every record when it is made (not when it is formatted)."""

    def process(self, msg: object, kwargs: dict) -> tuple[object, dict]:  # type: ignore[override]
        rid = request_id_var.get()
        if rid is not None:
            kwargs["extra"] = {"request_id": rid, **(kwargs.get("extra") or {})}
        return msg, kwargs


def get_logger(name: str) -> logging.LoggerAdapter:
    return _RequestLogger(logging.getLogger(f"hybridrec.{name}"), {})
