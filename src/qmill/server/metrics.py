"""Prometheus metrics: one definition for functions and workers.

Each process exposes its own registry: every function answers ``GET /metrics`` on its
own address (scrape the function containers, not the gateway), and a worker serves
them on ``[worker] metrics_port``. Labels are the function name or the worker id;
the dashboard in ``infra/grafana/`` sums across them.

Several processes, one function: functions-framework serves a function with gunicorn,
``WORKERS`` processes forked from one arbiter on one socket, and a scrape is answered by
whichever of them accepts it. Each counting alone, a function's counters jumped back and
forth between the processes' totals (40 requests scraped as 35, 35, 5, 5). So where
``WORKERS`` > 1 (or ``PROMETHEUS_MULTIPROC_DIR`` is set) the metrics are in
prometheus_client's multiprocess mode: every process writes its values to mmapped files in
`SHARED_DIR`, one directory per function instance, and `exposition` sums the files of all
of them, dead ones included (a restarted process does not reset a counter). The combined
topology and a worker are one process, given no ``WORKERS``, and keep the plain in-memory
registry.

In multiprocess mode a family is exported once some process has a sample of it (no HELP
line for a counter never incremented), and the per-process ``process_*`` and ``python_*``
collectors are left out: they describe one process, whichever answered.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

# Re-exported: where every process serves its registry (a process path, see routes).
from qmill.server.routes import METRICS_PATH as METRICS_PATH

# prometheus_client's own switch: the directory of the processes' files.
MULTIPROC_DIR_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
# functions-framework's: how many gunicorn processes serve the function.
WORKERS_ENV: Final = "WORKERS"


def serving_processes() -> int:
    """``WORKERS``, as functions-framework reads it; 1 when unset or not a number
    (functions-framework refuses such a value itself, at start)."""
    raw = os.environ.get(WORKERS_ENV, "1").strip()
    return int(raw) if raw.isdigit() else 1


def _shared_dir() -> Path | None:
    """The multiprocess directory, emptied; None for a process that serves alone.

    Decided at import, in the process that imports first: functions-framework loads the
    function (and so this module) in gunicorn's arbiter, before it forks the processes
    that count. An unset ``PROMETHEUS_MULTIPROC_DIR`` gets a directory of this instance
    under the temporary directory (``/tmp``: writable in every image, an emptyDir where the
    root filesystem is read-only), removed when the arbiter exits. Files left by an earlier
    run of the instance (a restarted container keeps its ``/tmp``) are deleted first:
    they would be added to this run's counts.
    """
    given = os.environ.get(MULTIPROC_DIR_ENV, "")
    if given:
        path = Path(given)
    elif serving_processes() > 1:
        path = Path(tempfile.gettempdir()) / f"qmill-metrics-{os.getpid()}"
        os.environ[MULTIPROC_DIR_ENV] = str(path)  # read by prometheus_client's files
        atexit.register(_remove, path, os.getpid())
    else:
        os.environ.pop(MULTIPROC_DIR_ENV, None)  # set but empty: no directory
        return None
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)
    return path


def _remove(path: Path, owner: int) -> None:
    """At exit of the arbiter only: gunicorn's processes exit through atexit too."""
    if os.getpid() == owner:
        shutil.rmtree(path, ignore_errors=True)


SHARED_DIR: Final = _shared_dir()
# prometheus_client picks its value class from the environment when it is first imported,
# which may have been before the lines above: follow their decision. Every metric below has
# labels, so no value exists before a labelled child is made (in the forked processes).
if SHARED_DIR is not None:
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
else:
    values.ValueClass = values.MutexValue


def _registry() -> CollectorRegistry:
    if SHARED_DIR is None:
        return REGISTRY
    shared = CollectorRegistry()
    # untyped in prometheus_client
    multiprocess.MultiProcessCollector(shared, str(SHARED_DIR))  # type: ignore[no-untyped-call]
    return shared


# What ``/metrics`` answers from, in functions and workers alike.
EXPOSED: Final = _registry()

CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_TASK_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600)

# --- functions ---------------------------------------------------------------------------
REQUESTS = Counter(
    "qmill_http_requests_total", "HTTP requests answered", ["function", "method", "status"]
)
REQUEST_SECONDS = Histogram(
    "qmill_http_request_seconds",
    "Time to answer a request",
    ["function"],
    buckets=_LATENCY_BUCKETS,
)
TASKS_ACCEPTED = Counter("qmill_tasks_accepted_total", "Tasks accepted (201)", ["function"])

# --- workers -----------------------------------------------------------------------------
TASKS_COMPLETED = Counter("qmill_tasks_completed_total", "Tasks completed", ["worker"])
# reason: a `qmill_worker.errors.FailureReason` value, a fixed set (never the error text).
TASKS_FAILED = Counter(
    "qmill_tasks_failed_total", "Tasks that ended failed, by reason", ["worker", "reason"]
)
TASKS_RETRIED = Counter(
    "qmill_tasks_retried_total", "Attempts released for redelivery", ["worker", "reason"]
)
# A stopping worker's hand-backs (scale-in, termination): not attempts, unlike retries.
TASKS_HANDED_BACK = Counter(
    "qmill_tasks_handed_back_total", "Tasks handed back unfinished by a stopping worker", ["worker"]
)
# Gauges say how processes sharing a directory combine (multiprocess mode only): the tasks
# the live ones hold add up; the queue is one reading, whichever process took it last.
TASKS_IN_FLIGHT = Gauge(
    "qmill_tasks_in_flight", "Tasks a worker holds", ["worker"], multiprocess_mode="livesum"
)
QUEUE_DEPTH = Gauge(
    "qmill_queue_depth",
    "Tasks queued or unacked on the workers' JetStream consumer",
    ["worker"],
    multiprocess_mode="livemostrecent",
)
QUEUE_SECONDS = Histogram(
    "qmill_task_queue_seconds",
    "Submit to start of the last attempt",
    ["worker"],
    buckets=_TASK_BUCKETS,
)
EXECUTION_SECONDS = Histogram(
    "qmill_task_execution_seconds",
    "Parse and simulation time",
    ["worker"],
    buckets=_TASK_BUCKETS,
)


def exposition() -> bytes:
    """The ``/metrics`` body: this process's metrics, or every process's, summed."""
    return generate_latest(EXPOSED)
