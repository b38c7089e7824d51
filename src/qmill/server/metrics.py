"""Prometheus metrics: one definition for functions and workers.

Each process exposes its own registry: every function answers ``GET /metrics`` on its
own address (scrape the function containers, not the gateway), and a worker serves
them on ``[worker] metrics_port``. Labels are the function name or the worker id;
the dashboard in ``infra/grafana/`` sums across them.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

# Re-exported: where every process serves its registry (a process path, see routes).
from qmill.server.routes import METRICS_PATH as METRICS_PATH

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
TASKS_IN_FLIGHT = Gauge("qmill_tasks_in_flight", "Tasks a worker holds", ["worker"])
QUEUE_DEPTH = Gauge(
    "qmill_queue_depth", "Tasks queued or unacked on the workers' JetStream consumer", ["worker"]
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
    return generate_latest()
