"""The gateway's routing table and the one error-to-status mapping."""

from __future__ import annotations

import pytest

from qmill.server import errors
from qmill.server.gateway import allowed_methods, route


@pytest.mark.parametrize(
    ("path", "function"),
    [
        ("/tasks", "submit"),
        ("/tasks/3f2c", "result"),
        ("/health", "health"),
        ("/tasks/", None),
        ("/batches", "submit"),
        ("/batches/9a1c", "result"),
        ("/batches/", None),
        ("/tasks/a/b", None),
        ("/", "result"),
        ("/tasks/3f2c/histogram.svg", "result"),
        ("/tasks//histogram.svg", None),
        ("/tasks/a/b/histogram.svg", None),
        ("/tasks/3f2c/histogram.png", None),
        ("/histogram.svg", None),
        ("/index.html", None),
        ("//", None),
        ("/healthz", None),
        ("/openapi.json", "health"),
        ("/openapi.yaml", None),
        ("/tasks/\r\nSet-Cookie:x=1", None),
        ("/tasks/a\x00b", None),
    ],
)
def test_route(path: str, function: str | None) -> None:
    assert route(path) == function


def test_allowed_methods_follow_the_routes() -> None:
    assert allowed_methods("/tasks") == ["POST", "GET"]
    assert allowed_methods("/tasks/3f2c") == ["GET", "DELETE"]
    assert allowed_methods("/openapi.json") == ["GET"]


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (errors.InvalidCircuit("x", 1, 1), 400),
        (errors.TaskNotFound(), 404),
        (errors.MethodNotAllowed("PUT", ("GET",)), 405),
        (errors.TaskConflict("completed"), 409),
        (errors.IdempotencyConflict(), 422),
        (errors.PayloadTooLarge(10), 413),
        (errors.InvalidRequest("x"), 422),
        (errors.LimitExceeded("shots", 5, 1), 422),
        (errors.DependencyUnavailable("nats", "down"), 503),
    ],
)
def test_http_status(exc: errors.QmillError, status: int) -> None:
    assert exc.status_code == status
