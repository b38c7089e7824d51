"""One log format for every qmill process: JSON lines with structured fields.

Pass task fields with ``extra=``, for example
``log.info("task completed", extra={"task_id": tid, "worker_id": wid})``; they become
top-level keys, so logs can be filtered by ``task_id`` across functions and workers.
"""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

from qmill.server.config import LogSettings

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


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
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.level)
    # Libraries that log every request or reconnect attempt at INFO stay at WARNING.
    for noisy in ("nats", "uvicorn.access", "httpx", "httpcore", "qiskit", "stevedore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
