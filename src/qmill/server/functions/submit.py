"""POST /tasks (and POST /batches): validate, record, queue; 201 with the task id(s).
GET /tasks: the caller's tasks, a page at a time (`qmill.server.listing`)."""

from __future__ import annotations

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from qmill.server import batches, connections, constants, listing, metrics, tasks
from qmill.server.http import Router, read_json, serve


async def _post_task(request: Request) -> Response:
    owner = await connections.tenant(request.headers)
    settings = connections.settings()
    body = await read_json(request, settings.limits.max_body_bytes)
    accepted = await tasks.submit(
        body,
        settings,
        connections.stores(),
        connections.bus(),
        idempotency_key=request.headers.get(constants.IDEMPOTENCY_HEADER),
        owner=owner,
    )
    if not accepted.replayed:
        metrics.TASKS_ACCEPTED.labels("submit").inc()
    headers = {"Idempotent-Replayed": "true"} if accepted.replayed else None
    return JSONResponse(accepted.model_dump(mode="json"), status_code=201, headers=headers)


async def _post_batch(request: Request) -> Response:
    # The request pays one rate-limit token here; `batches.submit_batch` charges one more
    # per further task once it knows how many there are (issue 13: was one in all).
    owner = await connections.tenant(request.headers)
    settings = connections.settings()
    body = await read_json(request, settings.limits.max_body_bytes)
    batch = await batches.submit_batch(
        body,
        settings,
        connections.stores(),
        connections.bus(),
        owner=owner,
        idempotency_key=request.headers.get(constants.IDEMPOTENCY_HEADER),
    )
    if not batch.replayed:
        metrics.TASKS_ACCEPTED.labels("submit").inc(len(batch.task_ids))
    headers = {"Idempotent-Replayed": "true"} if batch.replayed else None
    return JSONResponse(batch.model_dump(mode="json"), status_code=201, headers=headers)


async def _list_tasks(request: Request) -> Response:
    owner = await connections.tenant(request.headers)
    query = listing.parse_query(request.query_params, connections.settings())
    page = await listing.list_tasks(connections.stores(), query, owner)
    return JSONResponse(page.model_dump(mode="json"))


_ROUTER = Router(
    "submit",
    {"submitTask": _post_task, "submitBatch": _post_batch, "listTasks": _list_tasks},
)


@functions_framework.aio.http
async def submit(request: Request) -> Response:
    return await serve(request, _ROUTER)
