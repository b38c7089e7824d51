"""The parts of the OpenAPI document that operations share: the API's description, its
security schemes, and the error responses with the headers they carry.

Each error response's status is the one its error class declares
(`errors.QmillError.status_code`), and its body is a model's schema, so neither is
written here a second time.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel

from qmill.server import errors, models

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
        "Every answer carries `X-Request-ID`: the one the request sent, if it is 1-128 of "
        "`A-Z a-z 0-9 . _ : + / = -` starting with a letter or digit, else a new one. The "
        "server's log lines about the request, and the worker's about a task it submitted, "
        "name it (`request_id`): quote it when reporting a problem.\n\n"
        'Any path not listed here is a 404 `{"detail": "Not Found"}`, except `/livez` and '
        "`/readyz`, each process's own probes (not part of this API); a listed path with a "
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
    "UnsupportedMediaType": (
        errors.UnsupportedMediaType,
        "The body is not declared `application/json` (parameters such as `charset=utf-8` "
        "are fine); `allowed` lists the accepted type. A web page can send other types "
        "cross-site, so they are refused unread.",
        models.ErrorBody,
        (),
    ),
    "MisdirectedRequest": (
        errors.MisdirectedRequest,
        "The `Host` header names neither a loopback name nor a host of `[server] "
        "allowed_hosts`: a DNS-rebinding page, or a proxy that does not pass `Host` on.",
        models.ErrorBody,
        (),
    ),
    "ForeignOrigin": (
        errors.ForeignOrigin,
        "A request that changes state sent with an `Origin` whose host is not in "
        "`[server] allowed_hosts` (or `Origin: null`): a page of another site.",
        models.ErrorBody,
        (),
    ),
    "HeadersTooLarge": (
        errors.HeadersTooLarge,
        "The request line and headers are larger than `[server] max_header_bytes` (32 KiB "
        "by default); the gateway answers and closes the connection.",
        models.ErrorBody,
        (),
    ),
    "RequestTimeout": (
        errors.RequestTimeout,
        "The body stopped arriving for `[server] client_timeout_seconds` (10 s by default); "
        "the gateway answers and closes the connection. (Headers not sent within that time "
        "get no answer: the connection is closed.)",
        models.ErrorBody,
        (),
    ),
    "RateLimited": (
        errors.RateLimited,
        "Over the key's rate limit (parse time counts), its cap of tasks in flight, its "
        "share of the parse processes, its cap of open long-polls (`[server] "
        "max_long_polls_per_tenant`; with auth off, everyone's), or its storage quota "
        "(`[redis] tenant_storage_mb`: the bytes its stored tasks may take, charged at "
        "submit from the answer's estimate; then `limit` is `stored bytes` and `Retry-After` "
        "says when enough of its stored tasks expire). Nothing was recorded.",
        models.ErrorBody,
        ("Retry-After",),
    ),
    "Unavailable": (
        errors.DependencyUnavailable,
        "NATS or Redis is down or too slow, or a function is down; or the task queue is "
        "full (`[nats] stream_max_msgs`, `stream_max_bytes`) or Redis is (`[redis] "
        "max_memory_mb`); or every parse process stayed busy for `[limits] "
        "max_parse_wait_seconds`; or `[auth] keys_file` cannot be read (refused rather than "
        "served with stale keys). Nothing was queued or recorded.",
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


def ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def json_body(schema: type[BaseModel] | dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema if isinstance(schema, dict) else ref(schema)}}


def header_refs(names: Iterable[str]) -> dict[str, Any]:
    return {
        name: {"$ref": f"#/components/headers/{_HEADER_COMPONENTS.get(name, name)}"}
        for name in names
    }


def error_responses() -> dict[str, Any]:
    """components/responses: one per kind of error an operation can answer with."""
    found: dict[str, Any] = {}
    for name, (_cls, description, schema, headers) in _ERRORS.items():
        found[name] = {"description": description, "content": json_body(schema)}
        if headers:
            found[name]["headers"] = header_refs(headers)
    return found


def error_refs(*names: str) -> dict[str, Any]:
    """Responses by status, each status the one its error class declares."""
    return {
        str(_ERRORS[name][0].status_code): {"$ref": f"#/components/responses/{name}"}
        for name in names
    }


def own_error(
    cls: type[errors.QmillError], description: str, headers: tuple[str, ...] = ()
) -> dict[str, Any]:
    """One operation's own error response (a 409 whose meaning depends on the operation)."""
    response = {"description": description, "content": json_body(models.ErrorBody)}
    if headers:
        response["headers"] = header_refs(headers)
    return {str(cls.status_code): response}
