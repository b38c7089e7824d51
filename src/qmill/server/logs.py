"""One log format for every qmill process: JSON lines with structured fields.

Pass task fields with ``extra=``, for example
``log.info("task completed", extra={"task_id": tid, "worker_id": wid})``; they become
top-level keys, so logs can be filtered by ``task_id`` across functions and workers.

Every line logged while a request (or a task that one submitted) is handled also gets
``request_id``: the ``X-Request-ID`` a client sent or the front door made
(`request_id_of`), held in a context variable that asyncio copies into every task the
handling starts, so no call has to pass it along.
"""

from __future__ import annotations

import logging
import random
import re
import sys
from contextvars import ContextVar

from pythonjsonlogger.json import JsonFormatter

from qmill.server.config import LogSettings

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

# The request being handled, as `X-Request-ID` names it; None outside any request.
REQUEST_ID: ContextVar[str | None] = ContextVar("qmill_request_id", default=None)
# What a client's X-Request-ID may be to be kept: what request ids are in practice (a
# UUID, a hex or base64url token, a dotted trace id) and nothing that could forge a log
# line or a header (no spaces, quotes or control characters), at most 128 characters.
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+/=-]{0,127}")


def valid_request_id(header: str | bytes | None) -> str | None:
    """The request id given, if it is a valid one; else None."""
    if isinstance(header, bytes):
        header = header.decode("latin-1")
    if header is not None and _VALID_REQUEST_ID.fullmatch(header):
        return header
    return None


def request_id_of(header: str | bytes | None) -> str:
    """The client's request id if it is a valid one, else a new one (32 hex digits).

    A new one need only be unique, not unguessable (it grants nothing): from `random`,
    0.3 us, not from the OS's entropy as uuid4 (4 us, a system call each).
    """
    return valid_request_id(header) or f"{random.getrandbits(128):032x}"


class _RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to a line logged inside a request (unless it names one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            current = REQUEST_ID.get()
            if current is not None:
                record.request_id = current
        return True


def setup_logging(settings: LogSettings, *, service: str) -> None:
    """Configure the root logger once per process; safe to call again."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.format == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(levelname)s %(name)s %(message)s",
                timestamp="time",
                rename_fields={"levelname": "level", "name": "logger"},
                static_fields={"service": service},
            )
        )
    else:
        handler.setFormatter(logging.Formatter(_TEXT_FORMAT))
    handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.level)
    # Libraries that log every request or reconnect attempt at INFO stay at WARNING.
    for noisy in ("nats", "uvicorn.access", "httpx", "httpcore", "qiskit", "stevedore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
