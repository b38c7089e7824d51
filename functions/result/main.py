"""GET /tasks/{task_id}: the task's status and, once completed, its counts.

``?wait=SECONDS`` long-polls until the task is terminal (capped by
``[server] max_wait_seconds``); ``?include=circuit`` echoes the program.
"""

from __future__ import annotations

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from qmill import connections, constants, tasks
from qmill.errors import InvalidRequest
from qmill.http import serve


def _task_id(path: str) -> str:
    return path[len(constants.RESULT_PATH_PREFIX) :] if path.startswith("/tasks/") else path[1:]


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
    settings = connections.settings()
    wait = _wait_seconds(request.query_params.get("wait"), settings.server.max_wait_seconds)
    view = await tasks.get(connections.store(), _task_id(request.url.path), wait)
    include = set(request.query_params.get("include", "").split(","))
    return JSONResponse(view.to_json(include_circuit="circuit" in include))


def _owns(path: str) -> bool:
    task_id = _task_id(path)
    return bool(task_id) and "/" not in task_id


@functions_framework.aio.http
async def result(request: Request) -> Response:
    return await serve(request, {"GET": _get}, match=_owns)
