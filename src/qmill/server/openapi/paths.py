"""The operations of the OpenAPI document: what only prose can say about each.

`qmill.server.openapi` assembles the document. Paths, methods and operation ids come from
the route table, schemas from the models, shared error responses from
`qmill.server.openapi.components`; this module holds the rest: summaries, descriptions,
examples, query and header parameters, links and success responses.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from qmill.server import constants, errors, listing, models
from qmill.server.config import LimitsSettings, ServerSettings
from qmill.server.openapi.components import error_refs, json_body, own_error, ref
from qmill.server.routes import Route
from qmill.server.store import listing as listing_store

# What every operation behind an API key may answer, and what even the open ones may.
# (408 and 431 come from the gateway, before any function, like the 413.)
_TRANSPORT = ("RequestTimeout", "PayloadTooLarge", "HeadersTooLarge")
_GUARDED = ("Unauthorized", *_TRANSPORT, "MisdirectedRequest", "RateLimited", "Unavailable")
_OPEN = (*_TRANSPORT, "MisdirectedRequest", "Unavailable")
# What an operation that reads a body or changes state may answer besides (cross-site).
_BODY = ("UnsupportedMediaType", "ForeignOrigin")

_PATH_PARAMETERS = {
    "task_id": "A task id as returned by `POST /tasks`. Any other string is a 404.",
    "batch_id": "A batch id as returned by `POST /batches`. Any other string is a 404.",
}

BELL3 = (
    'OPENQASM 3.0; include "stdgates.inc"; qubit[2] q; bit[2] c; h q[0]; cx q[0], q[1]; '
    "c[0] = measure q[0]; c[1] = measure q[1];"
)
BELL2 = (
    'OPENQASM 2.0; include "qelib1.inc"; qreg q[2]; creg c[2]; h q[0]; cx q[0],q[1]; '
    "measure q -> c;"
)


def _wait(description: str) -> dict[str, Any]:
    return {
        "name": "wait",
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "number", "minimum": 0},
    }


def _idempotency_key(what: str) -> dict[str, Any]:
    return {
        "name": constants.IDEMPOTENCY_HEADER,
        "in": "header",
        "required": False,
        "description": f"Makes retries safe: a repeat with the same key and body returns the "
        f"first {what}.",
        "schema": {"type": "string"},
    }


def _replayed(what: str) -> dict[str, Any]:
    return {
        "description": f"`true` when an Idempotency-Key matched an earlier {what}.",
        "schema": {"type": "string", "enum": ["true"]},
    }


def _comma_separated(names: Iterable[str]) -> str:
    """A pattern for a comma-separated list of ``names`` (empty items allowed)."""
    one = "(" + "|".join(re.escape(n) for n in names) + ")"
    return f"^,*({one}(,+{one})*)?,*$"


def _link(operation: str, param: str, field: str) -> dict[str, Any]:
    return {"operationId": operation, "parameters": {param: f"$response.body#/{field}"}}


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def _list_parameters() -> list[dict[str, Any]]:
    """``GET /tasks``' query, in the route table's order; patterns and bounds at the
    default limits (a deployment may allow longer tags or pages)."""
    limits = LimitsSettings.model_fields
    key_chars = limits["max_tag_key_chars"].default
    value_chars = limits["max_tag_value_chars"].default
    most = ServerSettings.model_fields["max_list_limit"].default
    tag = f"^[A-Za-z0-9_./-]{{1,{key_chars}}}:[^\\x00-\\x1f\\x7f-\\x9f]{{0,{value_chars}}}$"
    return [
        _query(
            "status",
            "Only tasks in one of these statuses (repeat it for several).",
            {
                "type": "array",
                "items": {"type": "string", "enum": [s.value for s in models.TaskStatus]},
            },
        ),
        _query(
            "tag",
            "Only tasks with this tag, `key:value` (repeat it: tasks with all of them).",
            {
                "type": "array",
                "maxItems": limits["max_tags"].default,
                "items": {"type": "string", "pattern": tag},
            },
        ),
        _query(
            "batch",
            "Only the tasks of this batch (another key's batch, like an unknown one, "
            "lists nothing).",
            {"type": "string", "format": "uuid"},
        ),
        _query(
            "since",
            "Only tasks created at or after this RFC 3339 date-time (with a zone).",
            {"type": "string", "format": "date-time"},
        ),
        _query(
            "limit",
            f"Tasks per page: {listing.DEFAULT_LIMIT} by default, at most `[server] "
            f"max_list_limit` ({most}).",
            {"type": "integer", "minimum": 1, "maximum": most},
        ),
        _query(
            "cursor",
            "Where the page starts: the `next_cursor` of the page before, as given.",
            {"type": "string", "pattern": listing_store.CURSOR_PATTERN},
        ),
    ]


def _operations() -> dict[str, dict[str, Any]]:
    """Each operation without its operationId and path, which the route table gives."""
    task = json_body(models.TaskView)
    return {
        "submitTask": {
            "summary": "Submit a program",
            "description": (
                "Parses and checks the program against the limits, records the task as "
                "`pending` and queues it; 201 means it is durably queued. With an "
                "`Idempotency-Key`, the same key and body within `[redis] "
                "idempotency_window_seconds` return the first task (201 with "
                "`Idempotent-Replayed: true`); the same key with another body is a 422."
            ),
            "parameters": [_idempotency_key("task")],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        **json_body(models.SubmitRequest)["application/json"],
                        "examples": {
                            "bell3": {
                                "summary": "Bell pair, OpenQASM 3",
                                "value": {"quantum_circuit": BELL3, "shots": 1024},
                            },
                            "bell2": {
                                "summary": "Bell pair, OpenQASM 2",
                                "value": {
                                    "quantum_circuit": BELL2,
                                    "shots": 100,
                                    "seed": 7,
                                    "memory": True,
                                },
                            },
                        },
                    }
                },
            },
            "responses": {
                "201": {
                    "description": "Accepted and queued.",
                    "headers": {"Idempotent-Replayed": _replayed("submit")},
                    "content": json_body(models.SubmitResponse),
                    "links": {
                        "GetTask": _link("getTask", "task_id", "task_id"),
                        "CancelTask": _link("cancelTask", "task_id", "task_id"),
                    },
                },
                **error_refs("InvalidCircuit", "Unprocessable", *_BODY, *_GUARDED),
                **own_error(
                    errors.IdempotencyInProgress,
                    "A request with this `Idempotency-Key` is still being processed: its task "
                    "may yet be refused, so retry after `Retry-After` seconds.",
                    ("Retry-After",),
                ),
            },
        },
        "getTask": {
            "summary": "A task's status and, once completed, its counts",
            "parameters": [
                _wait(
                    "Long-poll: answer as soon as the task is terminal, or after this many "
                    "seconds (capped by `[server] max_wait_seconds`, 30 by default). An API "
                    "key may hold `[server] max_long_polls_per_tenant` (100) open at once; "
                    "over it, 429 with `Retry-After`."
                ),
                {
                    "name": "include",
                    "in": "query",
                    "required": False,
                    "description": "Comma-separated extras; `circuit` echoes the program as "
                    "`quantum_circuit`. Unknown names are refused (422).",
                    "schema": {"type": "string", "pattern": _comma_separated(constants.INCLUDABLE)},
                    "examples": {"circuit": {"value": "circuit"}},
                },
            ],
            "responses": {
                "200": {
                    "description": "The task. A large answer (over 16 KiB of JSON) is stored "
                    "compressed and sent as stored to a client whose `Accept-Encoding` "
                    "names gzip (`Content-Encoding: gzip`), else decompressed as it is sent.",
                    "headers": {
                        "Content-Encoding": {
                            "description": "`gzip` for a large answer when the request "
                            "accepts it; absent otherwise.",
                            "schema": {"type": "string", "enum": ["gzip"]},
                        }
                    },
                    "content": task,
                },
                **error_refs("NotFound", "Unprocessable", *_GUARDED),
            },
        },
        "cancelTask": {
            "summary": "Cancel a pending or running task",
            "description": "A pending task never runs; a running one is stopped. The task "
            "stays readable, as `cancelled`.",
            "responses": {
                "200": {"description": "Cancelled; the task as it now is.", "content": task},
                **error_refs("NotFound", "Unprocessable"),
                **own_error(
                    errors.TaskConflict,
                    "The task already finished (`completed`, `failed` or `cancelled`).",
                ),
                **error_refs("ForeignOrigin", *_GUARDED),
            },
        },
        "submitBatch": {
            "summary": "Submit several programs at once, all or nothing",
            "description": "Every task is checked first (an error names its index, "
            "`tasks[i]`, and carries it as `index`); then all are queued. Task `i` gets the "
            "batch's `seed + i` and its `tags` unless it has its own. With an "
            "`Idempotency-Key`, as `POST /tasks`: the same key and body return the first "
            "batch (its `batch_id` and `task_ids`, with `Idempotent-Replayed: true`); the "
            "same key with another body is a 422.",
            "parameters": [_idempotency_key("batch")],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        **json_body(models.BatchRequest)["application/json"],
                        "examples": {
                            "two": {
                                "value": {
                                    "tasks": [
                                        {"quantum_circuit": BELL3},
                                        {"quantum_circuit": BELL2, "shots": 10},
                                    ]
                                }
                            }
                        },
                    }
                },
            },
            "responses": {
                "201": {
                    "description": "Accepted and queued.",
                    "headers": {"Idempotent-Replayed": _replayed("batch")},
                    "content": json_body(models.BatchResponse),
                    "links": {
                        "GetBatch": _link("getBatch", "batch_id", "batch_id"),
                        "CancelBatch": _link("cancelBatch", "batch_id", "batch_id"),
                    },
                },
                **error_refs("InvalidCircuit", "Unprocessable", *_BODY, *_GUARDED),
                **own_error(
                    errors.IdempotencyInProgress,
                    "A request with this `Idempotency-Key` is still being processed: its "
                    "batch may yet be refused, so retry after `Retry-After` seconds.",
                    ("Retry-After",),
                ),
            },
        },
        "getBatch": {
            "summary": "Every task of a batch, in submission order",
            "parameters": [
                _wait(
                    "Long-poll: answer as soon as every task is terminal (`done`), or after "
                    "this many seconds (capped like `GET /tasks/{task_id}`, and holding one "
                    "of the key's long-poll slots the same way)."
                )
            ],
            "responses": {
                "200": {"description": "The batch.", "content": json_body(models.BatchView)},
                **error_refs("NotFound", "Unprocessable", *_GUARDED),
            },
        },
        "listTasks": {
            "summary": "The caller's tasks, newest first, a page at a time",
            "description": "Only the tasks of the caller's API key (with auth off, those "
            "submitted without one), as summaries (no answers: `GET /tasks/{task_id}` has "
            "them). Tasks of one batch come in submission order. A page examines at most "
            f"{listing_store.SCAN_ENTRIES} index entries: with a filter that matches few "
            "tasks it may hold fewer than `limit`, even none, and still have a "
            "`next_cursor`; follow it until it is null. A task is listed as long as it "
            "can be read.",
            "parameters": _list_parameters(),
            "responses": {
                "200": {"description": "One page.", "content": json_body(models.TaskList)},
                **error_refs("Unprocessable", *_GUARDED),
            },
        },
        "cancelBatch": {
            "summary": "Cancel every task of a batch that has not finished",
            "description": "Each pending or running task is cancelled as `DELETE "
            "/tasks/{task_id}` cancels it; tasks already finished keep their results. A "
            "batch with nothing left to cancel is answered as it is.",
            "responses": {
                "200": {
                    "description": "The batch as it now is.",
                    "content": json_body(models.BatchView),
                },
                **error_refs("NotFound", "Unprocessable", "ForeignOrigin", *_GUARDED),
            },
        },
        "health": {
            "summary": "Whether NATS and Redis answer",
            "security": [],
            "responses": {
                "200": {"description": "Both answer.", "content": json_body(models.HealthView)},
                **error_refs(*_TRANSPORT, "Unprocessable", "MisdirectedRequest"),
                "503": {
                    "description": "A dependency did not answer (`unhealthy`, naming it), or "
                    "the health function itself is down (an error, with `Retry-After`).",
                    "content": json_body(
                        {
                            "oneOf": [
                                ref(models.HealthView),
                                ref(models.ErrorBody),
                            ]
                        }
                    ),
                },
            },
        },
        "openapi": {
            "summary": "This document",
            "security": [],
            "responses": {
                "200": {
                    "description": "The OpenAPI document of this deployment.",
                    "content": json_body({"type": "object", "required": ["openapi", "paths"]}),
                },
                **error_refs("Unprocessable", *_OPEN),
            },
        },
        "getBackend": {
            "summary": "What this deployment runs: methods, limits, gates, noise schema",
            "description": "Each simulation method with the widest circuit it runs under the "
            "workers' memory budget, every limit a task is held to, the gates a program may "
            "use and the schema of `noise`: enough to build a Qiskit `Target` and to learn "
            "the limits before a 422. Open without a key, like `/health`.",
            "security": [],
            "responses": {
                "200": {
                    "description": "The deployment.",
                    "content": json_body(models.BackendView),
                },
                **error_refs("Unprocessable", *_OPEN),
            },
        },
        "getHistogram": {
            "summary": "A task's counts as an SVG bar chart",
            "parameters": [
                _wait(
                    "Wait up to this many seconds for the counts (capped like "
                    "`GET /tasks/{task_id}`)."
                )
            ],
            "responses": {
                "200": {
                    "description": "The chart.",
                    "content": {"image/svg+xml": {"schema": {"type": "string"}}},
                },
                **error_refs("NotFound"),
                "409": {
                    "description": "The task has no counts (yet): `status` says what it is.",
                    "content": json_body(models.NoCounts),
                },
                **error_refs("Unprocessable", *_GUARDED),
            },
        },
        "getDiagram": {
            "summary": "A task's circuit drawn as text (Qiskit's text drawer)",
            "description": "The submitted program, parsed and drawn in a parse process under "
            "`[limits] max_parse_seconds` (its time charged to the key's rate limit, like a "
            "submit's). A circuit with more wires (qubits and classical bits) than `[limits] "
            "max_diagram_wires` (128) or more operations than `max_diagram_operations` (500) "
            "is a 422 that says it is too large to draw.",
            "responses": {
                "200": {
                    "description": "The drawing, folded at 100 columns.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                **error_refs("InvalidCircuit", "NotFound", "Unprocessable", *_GUARDED),
            },
        },
        "streamEvents": {
            "summary": "A task's or a batch's changes, live (Server-Sent Events)",
            "description": (
                "Give exactly one of `task` or `batch`. The stream sends `retry:` once, then "
                "`event: status` (data: `task_id`, `status`, `batch_id`, `seq`; `id:` the "
                "seq) for each task's state and each change after it; when a task becomes "
                "terminal, its `status` (without `id:`) and `event: result` (data: the task "
                "as `GET /tasks/{task_id}` sends it; `id:` the seq); `event: end` once every "
                "task is terminal, and then it closes. Idle streams get `: ping` comments "
                "every `[server] event_heartbeat_seconds` (15). A stream closes after "
                "`[server] max_event_stream_seconds` (300); reconnect with `Last-Event-ID` "
                "to get only what changed since (each task's current state, in seq order, "
                "never a change twice). An API key may hold `[server] "
                "max_event_streams_per_tenant` (20) streams at once; over it, 429 with "
                "`Retry-After`."
            ),
            "parameters": [
                {
                    "name": name,
                    "in": "query",
                    "required": False,
                    "description": f"The {name} to watch (an id from `POST /{name}s`, or "
                    f"`POST /batches`). Any other id is a 404.",
                    "schema": {"type": "string", "format": "uuid"},
                }
                for name in ("task", "batch")
            ]
            + [
                {
                    "name": "Last-Event-ID",
                    "in": "header",
                    "required": False,
                    "description": "Resume: the last `id:` received (browsers send it "
                    "themselves). Anything else is a 422.",
                    "schema": {"type": "string", "pattern": "^[0-9]{0,19}$"},
                }
            ],
            "responses": {
                "200": {
                    "description": "The stream, until every task is terminal (or its time "
                    "is up: reconnect with `Last-Event-ID`).",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                **error_refs("NotFound", "Unprocessable", *_GUARDED),
            },
        },
        "page": {
            "summary": "The web page (submit a program, watch it, see its counts)",
            "security": [],
            "responses": {
                "200": {
                    "description": "The page.",
                    "content": {"text/html": {"schema": {"type": "string"}}},
                },
                **error_refs("Unprocessable", *_OPEN),
            },
        },
    }


def paths(table: Iterable[Route]) -> dict[str, Any]:
    """paths: one item per path of the route table, one operation per route."""
    operations = _operations()
    found: dict[str, Any] = {}
    for route in table:
        item = found.setdefault(route.path, {})
        if route.param is not None and "parameters" not in item:
            item["parameters"] = [
                {
                    "name": route.param,
                    "in": "path",
                    "required": True,
                    "description": _PATH_PARAMETERS[route.param],
                    "schema": {"type": "string", "format": "uuid"},
                }
            ]
        operation = operations[route.operation]
        documented = tuple(p["name"] for p in operation.get("parameters", []) if p["in"] == "query")
        if documented != route.query:  # the route table says what the router accepts
            raise ValueError(
                f"{route.operation}: query {documented} documented, {route.query} routed"
            )
        item[route.method.lower()] = {"operationId": route.operation, **operation}
    return found
