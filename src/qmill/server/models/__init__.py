"""Wire models: what crosses HTTP, NATS and Redis. JSON only, never pickle.

One package, one module per side: `requests` (what clients send), `views` (what the
API answers about tasks), `errors` (error bodies), `backend` (`GET /backend`), over
`common`; every model is importable from here.

Readers ignore unknown fields, so a function and a worker of different versions can
run side by side during a rollout.

The models of the HTTP API are also its documentation: the schemas of openapi.json are
generated from them (`qmill.server.openapi`), so docstrings and ``description``s here
are what API users read. Constraints the server guarantees but does not check when it
builds a response (an id is a UUID, counts are not negative) are added to the schema
only (`WithJsonSchema`, ``json_schema_extra``), so a stored record is never refused.
"""

from __future__ import annotations

from qmill.server.models.backend import (
    BackendView,
    MethodView,
)
from qmill.server.models.common import (
    TERMINAL_STATUSES,
    JsonInt,
    TaskStatus,
    Uuid,
    utcnow,
)
from qmill.server.models.errors import (
    CircuitError,
    ErrorBody,
    NoCounts,
    ValidationIssue,
)
from qmill.server.models.requests import (
    BatchRequest,
    SubmitRequest,
    TaskMessage,
)
from qmill.server.models.views import (
    BatchResponse,
    BatchView,
    HealthView,
    SampleResult,
    StatusCounts,
    SubmitResponse,
    TaskList,
    TaskSummary,
    TaskView,
)

__all__ = [
    "TERMINAL_STATUSES",
    "BackendView",
    "BatchRequest",
    "BatchResponse",
    "BatchView",
    "CircuitError",
    "ErrorBody",
    "HealthView",
    "JsonInt",
    "MethodView",
    "NoCounts",
    "SampleResult",
    "StatusCounts",
    "SubmitRequest",
    "SubmitResponse",
    "TaskList",
    "TaskMessage",
    "TaskStatus",
    "TaskSummary",
    "TaskView",
    "Uuid",
    "ValidationIssue",
    "utcnow",
]
