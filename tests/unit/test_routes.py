"""The one route table: its matcher, the form proxies route on, and the functions' dispatch."""

from __future__ import annotations

import importlib
import json

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from qmill.server import constants, errors, routes
from qmill.server.http import Router, error_response, serve


def test_templates_match_one_segment() -> None:
    task = routes.by_operation("getTask")
    assert task.match("/tasks/3f2c") == {"task_id": "3f2c"}
    assert task.match("/tasks/") is None
    assert task.match("/tasks/a/b") is None
    assert task.match("/tasks/a\r\nb") is None
    histogram = routes.by_operation("getHistogram")
    assert histogram.match("/tasks/3f2c/histogram.svg") == {"task_id": "3f2c"}
    assert histogram.match("/tasks//histogram.svg") is None
    assert routes.by_operation("page").match("/") == {}
    assert routes.by_operation("page").match("//") is None


@pytest.mark.parametrize(
    "path", ["/tasks/..", "/tasks/.", "/batches/..", "/tasks/../histogram.svg", "/./health"]
)
def test_a_dot_segment_is_nobodys(path: str) -> None:
    """A normalising client or proxy reads ``/tasks/..`` as ``/`` (httpx sent it on as the
    page): no route takes a path another router would read differently."""
    assert routes.function_for(path) is None
    # Dots inside a segment are just characters of it.
    assert routes.function_for("/tasks/..x") == routes.function_for("/tasks/a.b") == "result"


def test_constants_routes_are_the_table_as_proxies_route_it() -> None:
    assert constants.ROUTES[:3] == (
        ("POST", "/tasks", "submit"),
        ("GET", "/tasks/", "result"),
        ("DELETE", "/tasks/", "result"),
    )
    assert ("GET", "/tasks/{id}/histogram.svg", "result") in constants.ROUTES
    assert len(constants.ROUTES) == len(routes.ROUTES)
    assert {r.function for r in routes.ROUTES} == set(constants.FUNCTION_NAMES)


def test_operations_are_unique() -> None:
    operations = [r.operation for r in routes.ROUTES]
    assert len(operations) == len(set(operations))


def test_a_router_needs_a_handler_for_each_of_its_routes() -> None:
    async def handler(request: Request) -> Response:
        return Response()

    with pytest.raises(ValueError, match="cancelTask"):
        Router("result", {"getTask": handler})
    with pytest.raises(ValueError, match="submitTask"):
        Router("health", {"health": handler, "openapi": handler, "submitTask": handler})


def _request(method: str, path: str) -> Request:
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [],
        "scheme": "http",
        "server": ("test", 80),
    }
    return Request(scope)


async def _echo(request: Request) -> Response:
    return JSONResponse({"params": request.path_params, "method": request.method})


@pytest.fixture
def result_router() -> Router:
    operations = [r.operation for r in routes.ROUTES if r.function == "result"]
    return Router("result", dict.fromkeys(operations, _echo))


async def test_dispatch_passes_path_parameters(result_router: Router) -> None:
    response = await serve(_request("GET", "/tasks/3f2c"), result_router)
    assert response.status_code == 200
    assert json.loads(response.body)["params"] == {"task_id": "3f2c"}
    head = await serve(_request("HEAD", "/batches/b1"), result_router)
    assert json.loads(head.body)["params"] == {"batch_id": "b1"}


async def test_dispatch_answers_404_and_405_like_the_gateway(result_router: Router) -> None:
    assert (await serve(_request("POST", "/tasks"), result_router)).status_code == 404
    assert (await serve(_request("GET", "/health"), result_router)).status_code == 404
    wrong = await serve(_request("PUT", "/tasks/3f2c"), result_router)
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == ", ".join(routes.allowed_methods("/tasks/3f2c"))
    assert json.loads(wrong.body)["allowed"] == ["GET", "DELETE"]


@pytest.mark.parametrize(
    ("exc", "headers"),
    [
        (errors.DependencyUnavailable("nats", "down", retry_after=2), {"retry-after": "2"}),
        (errors.RateLimited("slow down", retry_after=3), {"retry-after": "3"}),
        (errors.IdempotencyInProgress(), {"retry-after": "1"}),
        (errors.Unauthorized("no key"), {"www-authenticate": 'Bearer realm="qmill"'}),
        (errors.MethodNotAllowed("PUT", ("GET", "DELETE")), {"allow": "GET, DELETE"}),
        (errors.TaskNotFound(), {}),
    ],
)
def test_errors_carry_their_status_and_headers(
    exc: errors.QmillError, headers: dict[str, str]
) -> None:
    response = error_response(exc)
    assert response.status_code == exc.status_code
    for name, value in headers.items():
        assert response.headers[name] == value
    others = {"retry-after", "www-authenticate", "allow"} - set(headers)
    assert others.isdisjoint(response.headers.keys())


@pytest.mark.parametrize("function", constants.FUNCTION_NAMES)
def test_each_function_registers_a_handler_for_each_of_its_routes(function: str) -> None:
    module = importlib.import_module(f"qmill.server.functions.{function}")
    router: Router = module._ROUTER
    assert router.function == function
