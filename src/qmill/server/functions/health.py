"""GET /health: 200 when NATS and Redis both answer, else 503 naming the one that did not.

Also GET /openapi.json, the API's OpenAPI document (see qmill.server.openapi), and GET
/backend, what this deployment runs (see qmill.server.workload.describe). The health
function serves them because it is the one function that is always open (no API key).
"""

from __future__ import annotations

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from qmill.server import connections, openapi, tasks
from qmill.server.http import Router, serve
from qmill.server.workload.describe import describe


async def _get(request: Request) -> Response:
    view = await tasks.health(connections.stores(), connections.bus())
    status = 200 if view.status == "healthy" else 503
    return JSONResponse(view.model_dump(mode="json"), status_code=status)


async def _backend(request: Request) -> Response:
    view = describe(connections.settings())
    return JSONResponse(view.model_dump(mode="json"))


async def _openapi(request: Request) -> Response:
    enabled = connections.settings().auth.enabled
    return Response(openapi.document_bytes(enabled), media_type="application/json")


_ROUTER = Router("health", {"health": _get, "openapi": _openapi, "getBackend": _backend})


@functions_framework.aio.http
async def health(request: Request) -> Response:
    return await serve(request, _ROUTER)
