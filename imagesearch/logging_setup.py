"""Logging for every process: one JSON object per line on stderr, with the ids that matter.

A line carries the time, level, logger, message, process id, whatever the code bound with
:func:`log_context` (request id, task ids, image ids) and any ``extra=`` fields::

    {"ts": "2025-01-01T12:00:00.123Z", "level": "INFO", "logger": "api.images", "message": "image accepted",
     "pid": 4242, "request_id": "3f2a...", "image_id": "8c1e..."}
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("imagesearch_log_context", default={})  # noqa: B039 - replaced by bind(), never mutated

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is emitted.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
_HANDLER_MARK = "_imagesearch_handler"


def bind(**fields: Any) -> contextvars.Token:
    """Add fields to every log line of this thread/task until :func:`unbind` with the token."""
    return _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})


def unbind(token: contextvars.Token) -> None:
    _context.reset(token)


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    token = bind(**fields)
    try:
        yield
    finally:
        unbind(token)


def current_context() -> dict[str, Any]:
    return dict(_context.get())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        out.update(_context.get())
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def configure(*, stream: Any = None, level: str = "INFO") -> logging.Handler:
    """Install one JSON handler on the root logger (idempotent: a second call replaces the first).

    Handlers installed by others (a test runner's capture, for example) are left alone.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    setattr(handler, _HANDLER_MARK, True)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
