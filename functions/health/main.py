"""GET /health: 200 when NATS and Redis both answer, else 503 naming the one that did not."""

from __future__ import annotations

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from qmill import connections, constants, tasks
from qmill.http import serve


async def _get(request: Request) -> Response:
    view = await tasks.health(connections.store(), connections.bus())
    status = 200 if view.status == "healthy" else 503
    return JSONResponse(view.model_dump(mode="json"), status_code=status)


def _resolve(path: str) -> str | None:
    return "health" if path in (constants.HEALTH_PATH, "/") else None


@functions_framework.aio.http
async def health(request: Request) -> Response:
    return await serve(request, {"health": {"GET": _get}}, _resolve, function="health")
