"""The prose of the OpenAPI document and what only prose can say about each operation.

`qmill.server.openapi` assembles the document; this module holds what is not derived:
descriptions, examples, query and header parameters, links, success responses. Paths,
methods and operation ids come from the route table, schemas from the models, and the
status of each error response from the error class that produces it, so none of them
can be written here a second time.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel

from qmill.server import constants, errors, models
from qmill.server.routes import Route

INFO: dict[str, Any] = {
    "title": "qmill",
    "version": "0.1.0",
    "summary": "Run OpenQASM circuits as a service.",
    "description": (
        "POST an OpenQASM 3 (or 2) program and a shot count, get a task id at once, and fetch "
        "the measurement counts once a worker has simulated it with qiskit-aer.\n\n"
        "Every error is JSON with a `detail`. 400 is a program that does not parse (with "
        "`line` and `column` when known); 422 a malformed body or a request over a configured "
        "limit (with `limit` and `allowed`); nothing is queued for either. 5xx other than 503 "
        "is a bug.\n\n"
        "Authentication: when `[auth] enabled` is on (compose, Terraform), every operation "
        "except `/health` and `/openapi.json` needs `Authorization: Bearer <key>` (or "
        "`X-API-Key: <key>`); a missing or unknown key gets 401, and a task is visible only "
        "to the key that submitted it (another key gets 404). When auth is off (the local "
        "`make run`), the document served at `/openapi.json` marks the security requirement "
        "optional.\n\n"
        'Any path not listed here is a 404 `{"detail": "Not Found"}`; a listed path with a '
        "method not listed is a 405 with an `Allow` header and `allowed` in the body."
    ),
    "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
}

SECURITY_SCHEMES: dict[str, Any] = {
    "bearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key from `qmill key new` (the server stores only its SHA-256).",
    },
    "apiKeyHeader": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "The same key, for clients that cannot set Authorization.",
    },
}

# The headers errors carry (`errors.QmillError.headers`), by component name.
HEADERS: dict[str, Any] = {
    "RetryAfter": {
        "description": "Seconds to wait before retrying.",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
    "WWWAuthenticate": {
        "description": '`Bearer realm="qmill"`.',
        "required": True,
        "schema": {"type": "string", "pattern": "^Bearer"},
    },
    "Allow": {
        "description": "The methods this path supports.",
        "required": True,
        "schema": {"type": "string", "minLength": 1},
    },
}
_HEADER_COMPONENTS = {"Retry-After": "RetryAfter", "WWW-Authenticate": "WWWAuthenticate"}


# Reusable error responses: (error class, description, body schema, headers it carries).
_ERRORS: dict[str, tuple[type[errors.QmillError], str, type[BaseModel], tuple[str, ...]]] = {
    "InvalidCircuit": (
        errors.InvalidCircuit,
        "The program does not parse, or is refused by the parser-safety rules (see README); "
        "`line` and `column` are 1-based when known.",
        models.CircuitError,
        (),
    ),
    "Unprocessable": (
        errors.InvalidRequest,
        "A malformed body (`detail` lists the problems), a request over a configured limit "
        "(`limit` names it, `allowed` gives the allowed value), a bad `wait`, or an "
        "`Idempotency-Key` reused with another body.",
        models.ErrorBody,
        (),
    ),
    "Unauthorized": (
        errors.Unauthorized,
        "Auth is on and the API key is missing or unknown.",
        models.ErrorBody,
        ("WWW-Authenticate",),
    ),
    "NotFound": (
        errors.TaskNotFound,
        "No such task or batch, or it belongs to another API key.",
        models.ErrorBody,
        (),
    ),
    "PayloadTooLarge": (
        errors.PayloadTooLarge,
        "The body is larger than `[limits] max_body_bytes` (1 MiB by default); refused "
        "before it is read whole.",
        models.ErrorBody,
        (),
    ),
    "RateLimited": (
        errors.RateLimited,
        "Over the key's rate limit, or its cap of tasks in flight.",
        models.ErrorBody,
        ("Retry-After",),
    ),
    "Unavailable": (
        errors.DependencyUnavailable,
        "NATS or Redis is down or too slow, or a function is down; nothing was queued.",
        models.ErrorBody,
        ("Retry-After",),
    ),
    "MethodNotAllowed": (
        errors.MethodNotAllowed,
        "The path exists but not with this method.",
        models.ErrorBody,
        ("Allow",),
    ),
}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(schema: type[BaseModel] | dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema if isinstance(schema, dict) else _ref(schema)}}


def _headers(names: Iterable[str]) -> dict[str, Any]:
    return {
        name: {"$ref": f"#/components/headers/{_HEADER_COMPONENTS.get(name, name)}"}
        for name in names
    }


def error_responses() -> dict[str, Any]:
    """components/responses: one per kind of error an operation can answer with."""
    found: dict[str, Any] = {}
    for name, (_cls, description, schema, headers) in _ERRORS.items():
        found[name] = {"description": description, "content": _json(schema)}
        if headers:
            found[name]["headers"] = _headers(headers)
    return found


def _errors(*names: str) -> dict[str, Any]:
    """Responses by status, each status the one its error class declares."""
    return {
        str(_ERRORS[name][0].status_code): {"$ref": f"#/components/responses/{name}"}
        for name in names
    }


def _error(
    cls: type[errors.QmillError], description: str, headers: tuple[str, ...] = ()
) -> dict[str, Any]:
    """One operation's own error response (a 409 whose meaning depends on the operation)."""
    response = {"description": description, "content": _json(models.ErrorBody)}
    if headers:
        response["headers"] = _headers(headers)
    return {str(cls.status_code): response}


# What every operation behind an API key may answer, and what even the open ones may.
_GUARDED = ("Unauthorized", "PayloadTooLarge", "RateLimited", "Unavailable")
_OPEN = ("PayloadTooLarge", "Unavailable")

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


def _link(operation: str, param: str, field: str) -> dict[str, Any]:
    return {"operationId": operation, "parameters": {param: f"$response.body#/{field}"}}


def _operations() -> dict[str, dict[str, Any]]:
    """Each operation without its operationId and path, which the route table gives."""
    task = _json(models.TaskView)
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
            "parameters": [
                {
                    "name": constants.IDEMPOTENCY_HEADER,
                    "in": "header",
                    "required": False,
                    "description": "Makes retries safe: a repeat with the same key and body "
                    "returns the first task.",
                    "schema": {"type": "string"},
                }
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        **_json(models.SubmitRequest)["application/json"],
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
                    "headers": {
                        "Idempotent-Replayed": {
                            "description": "`true` when an Idempotency-Key matched an "
                            "earlier submit.",
                            "schema": {"type": "string", "enum": ["true"]},
                        }
                    },
                    "content": _json(models.SubmitResponse),
                    "links": {
                        "GetTask": _link("getTask", "task_id", "task_id"),
                        "CancelTask": _link("cancelTask", "task_id", "task_id"),
                    },
                },
                **_errors("InvalidCircuit", "Unprocessable", *_GUARDED),
                **_error(
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
                    "seconds (capped by `[server] max_wait_seconds`, 30 by default)."
                ),
                {
                    "name": "include",
                    "in": "query",
                    "required": False,
                    "description": "Comma-separated extras; `circuit` echoes the program as "
                    "`quantum_circuit`. Unknown names are ignored.",
                    "schema": {"type": "string"},
                    "examples": {"circuit": {"value": "circuit"}},
                },
            ],
            "responses": {
                "200": {"description": "The task.", "content": task},
                **_errors("NotFound", "Unprocessable", *_GUARDED),
            },
        },
        "cancelTask": {
            "summary": "Cancel a pending or running task",
            "description": "A pending task never runs; a running one is stopped. The task "
            "stays readable, as `cancelled`.",
            "responses": {
                "200": {"description": "Cancelled; the task as it now is.", "content": task},
                **_errors("NotFound"),
                **_error(
                    errors.TaskConflict,
                    "The task already finished (`completed`, `failed` or `cancelled`).",
                ),
                **_errors(*_GUARDED),
            },
        },
        "submitBatch": {
            "summary": "Submit several programs at once, all or nothing",
            "description": "Every task is checked first (an error names its index, "
            "`tasks[i]`); then all are queued.",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        **_json(models.BatchRequest)["application/json"],
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
                    "content": _json(models.BatchResponse),
                    "links": {"GetBatch": _link("getBatch", "batch_id", "batch_id")},
                },
                **_errors("InvalidCircuit", "Unprocessable", *_GUARDED),
            },
        },
        "getBatch": {
            "summary": "Every task of a batch, in submission order",
            "responses": {
                "200": {"description": "The batch.", "content": _json(models.BatchView)},
                **_errors("NotFound", *_GUARDED),
            },
        },
        "health": {
            "summary": "Whether NATS and Redis answer",
            "security": [],
            "responses": {
                "200": {"description": "Both answer.", "content": _json(models.HealthView)},
                **_errors("PayloadTooLarge"),
                "503": {
                    "description": "A dependency did not answer (`unhealthy`, naming it), or "
                    "the health function itself is down (an error, with `Retry-After`).",
                    "content": _json(
                        {
                            "oneOf": [
                                _ref(models.HealthView),
                                _ref(models.ErrorBody),
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
                    "content": _json({"type": "object", "required": ["openapi", "paths"]}),
                },
                **_errors(*_OPEN),
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
                **_errors("NotFound"),
                "409": {
                    "description": "The task has no counts (yet): `status` says what it is.",
                    "content": _json(models.NoCounts),
                },
                **_errors("Unprocessable", *_GUARDED),
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
                **_errors(*_OPEN),
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
        item[route.method.lower()] = {"operationId": route.operation, **operations[route.operation]}
    return found
