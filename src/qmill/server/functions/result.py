"""The task resource: GET /tasks/{id} (status and counts), DELETE /tasks/{id} (cancel),
GET /batches/{id} (every task of a batch), GET /tasks/{id}/histogram.svg (the counts as a
picture) and GET / (the web page, a static file that uses the endpoints above).

``?wait=SECONDS`` long-polls until the task is terminal (capped by
``[server] max_wait_seconds``); ``?include=circuit`` echoes the program.

The page lives here because it only reads, like the rest of this function: no new
deployable is needed for it, and it is served from the same origin as the API it calls.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from qmill import pictures
from qmill.server import connections, constants, tasks
from qmill.server.errors import InvalidRequest
from qmill.server.http import path_id, serve


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
    view = await tasks.get(connections.stores(), _task_id(request.url.path), wait, owner)
    include = set(request.query_params.get("include", "").split(","))
    return JSONResponse(view.to_json(include_circuit="circuit" in include))


async def _delete(request: Request) -> Response:
    owner = await connections.tenant(request.headers)
    task_id = _task_id(request.url.path)
    view = await tasks.cancel(connections.stores(), connections.bus(), task_id, owner)
    return JSONResponse(view.to_json())


async def _get_batch(request: Request) -> Response:
    owner = await connections.tenant(request.headers)
    batch_id = path_id(request.url.path, constants.BATCH_PATH_PREFIX) or ""
    views = await tasks.get_batch(connections.stores(), batch_id, owner)
    return JSONResponse({"batch_id": batch_id, "tasks": [v.to_json() for v in views]})


def _resolve(path: str) -> str | None:
    if path_id(path, constants.BATCH_PATH_PREFIX):
        return "batch"
    return "task" if _task_id(path) else None


@cache
def _page() -> bytes:
    return (resources.files("qmill.server") / "static" / "index.html").read_bytes()


async def _get_page(request: Request) -> Response:
    # no-cache: a browser revalidates, so a deploy is seen on the next load.
    headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    return Response(_page(), media_type="text/html; charset=utf-8", headers=headers)


def _histogram_task_id(path: str) -> str | None:
    head = path.removesuffix(constants.HISTOGRAM_SUFFIX)
    if head == path:
        return None
    return path_id(head, constants.RESULT_PATH_PREFIX) or path_id(head, "/")


async def _get_histogram(request: Request) -> Response:
    """The counts as SVG; 409 until the task has counts (``?wait=`` waits for them).

    Guarded like ``GET /tasks/{id}``: with auth on, only the task's owner sees it.
    """
    owner = await connections.tenant(request.headers)
    settings = connections.settings()
    wait = _wait_seconds(request.query_params.get("wait"), settings.server.max_wait_seconds)
    task_id = _histogram_task_id(request.url.path) or ""
    view = await tasks.get(connections.stores(), task_id, wait, owner)
    if view.result is None:
        detail = f"the task is {view.status.value}: it has no counts to draw"
        return JSONResponse({"detail": detail, "status": view.status.value}, status_code=409)
    svg = pictures.histogram_svg(view.result, title=f"{view.shots} shots, task {task_id[:8]}")
    # Counts never change once written, so caches may keep the picture.
    headers = {"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"}
    return Response(svg, media_type="image/svg+xml", headers=headers)


def _resolve_all(path: str) -> str | None:
    if path == constants.PAGE_PATH:
        return "page"
    if _histogram_task_id(path):
        return "histogram"
    return _resolve(path)


@functions_framework.aio.http
async def result(request: Request) -> Response:
    return await serve(
        request,
        {
            "task": {"GET": _get, "DELETE": _delete},
            "batch": {"GET": _get_batch},
            "histogram": {"GET": _get_histogram},
            "page": {"GET": _get_page},
        },
        _resolve_all,
        function="result",
    )
