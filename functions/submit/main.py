"""POST /tasks: validate the program, record the task, queue it; 201 with the task id."""

from __future__ import annotations

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from qmill import connections, constants, tasks
from qmill.http import read_json, serve


async def _post(request: Request) -> Response:
    settings = connections.settings()
    body = await read_json(request, settings.limits.max_body_bytes)
    accepted = await tasks.submit(
        body,
        settings,
        connections.store(),
        connections.bus(),
        idempotency_key=request.headers.get(constants.IDEMPOTENCY_HEADER),
    )
    headers = {"Idempotent-Replayed": "true"} if accepted.replayed else None
    return JSONResponse(accepted.model_dump(mode="json"), status_code=201, headers=headers)


@functions_framework.aio.http
async def submit(request: Request) -> Response:
    return await serve(
        request, {"POST": _post}, match=lambda path: path in (constants.SUBMIT_PATH, "/")
    )
