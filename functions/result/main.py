"""The task resource: GET /tasks/{id} (status and counts), DELETE /tasks/{id} (cancel),
GET /batches/{id} (every task of a batch).

``?wait=SECONDS`` long-polls until the task is terminal (capped by
``[server] max_wait_seconds``); ``?include=circuit`` echoes the program.
"""

from __future__ import annotations

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from qmill import connections, constants, tasks
from qmill.errors import InvalidRequest
from qmill.http import path_id, serve


def _task_id(path: str) -> str:
    return path_id(path, constants.RESULT_PATH_PREFIX) or path_id(path, "/") or ""


def _wait_seconds(raw: str | None, cap: float) -> float:
    if raw is None:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        raise InvalidRequest(f"wait must be a number of seconds, got {raw!r}") from None
    if not 0 <= value < float("inf"):
        raise InvalidRequest(f"wait must be between 0 and {cap} seconds, got {raw!r}")
    return min(value, cap)


async def _get(request: Request) -> Response:
    owner = await connections.tenant(request.headers)
    settings = connections.settings()
    wait = _wait_seconds(request.query_params.get("wait"), settings.server.max_wait_seconds)
    view = await tasks.get(connections.store(), _task_id(request.url.path), wait, owner)
    include = set(request.query_params.get("include", "").split(","))
    return JSONResponse(view.to_json(include_circuit="circuit" in include))


async def _delete(request: Request) -> Response:
    owner = await connections.tenant(request.headers)
    task_id = _task_id(request.url.path)
    view = await tasks.cancel(connections.store(), connections.bus(), task_id, owner)
    return JSONResponse(view.to_json())


async def _get_batch(request: Request) -> Response:
    owner = await connections.tenant(request.headers)
    batch_id = path_id(request.url.path, constants.BATCH_PATH_PREFIX) or ""
    views = await tasks.get_batch(connections.store(), batch_id, owner)
    return JSONResponse({"batch_id": batch_id, "tasks": [v.to_json() for v in views]})


def _resolve(path: str) -> str | None:
    if path_id(path, constants.BATCH_PATH_PREFIX):
        return "batch"
    return "task" if _task_id(path) else None


@functions_framework.aio.http
async def result(request: Request) -> Response:
    return await serve(
        request,
        {"task": {"GET": _get, "DELETE": _delete}, "batch": {"GET": _get_batch}},
        _resolve,
        function="result",
    )
