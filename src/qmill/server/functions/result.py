"""The task resource: GET /tasks/{id} (status and counts), DELETE /tasks/{id} (cancel),
GET /batches/{id} (every task of a batch; ?wait= until all are terminal), DELETE
/batches/{id} (cancel what has not finished), GET /tasks/{id}/histogram.svg (the counts as a
picture), GET /tasks/{id}/diagram.txt (the circuit as text), GET /events (changes as
Server-Sent Events) and GET / (the web page, a static file that uses the endpoints above).

``?wait=SECONDS`` long-polls until the task is terminal (capped by
``[server] max_wait_seconds``); ``?include=circuit`` echoes the program.

The page lives here because it only reads, like the rest of this function: no new
deployable is needed for it, and it is served from the same origin as the API it calls.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import AsyncIterator, Iterable
from contextlib import AbstractAsyncContextManager, nullcontext
from functools import cache
from importlib import resources

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from qmill import pictures
from qmill.server import batches, connections, constants, events, tasks
from qmill.server.errors import InvalidRequest
from qmill.server.http import Router, serve
from qmill.server.models import BatchView, NoCounts, TaskStatus, TaskView
from qmill.server.qasm import pool
from qmill.server.store import answers


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


def _long_poll(owner: str | None, wait: float) -> AbstractAsyncContextManager[None]:
    """One of the tenant's long-poll slots while a read waits (429 when all are taken)."""
    if wait <= 0:
        return nullcontext()
    cap = connections.settings().server.max_long_polls_per_tenant
    return connections.stores().polls.hold(owner or constants.ANONYMOUS_TENANT, cap, wait)


async def _get(request: Request) -> Response:
    owner = await connections.tenant(request.headers)
    settings = connections.settings()
    wait = _wait_seconds(request.query_params.get("wait"), settings.server.max_wait_seconds)
    include_circuit = _includes_circuit(request)
    task_id = request.path_params["task_id"]
    stores = connections.stores()
    # The long-poll slot is taken and given back in the wait's own round trips.
    cap = settings.server.max_long_polls_per_tenant
    slot = stores.polls.slot(owner or constants.ANONYMOUS_TENANT, cap) if wait > 0 else None
    view = await tasks.get(stores, task_id, wait, owner, packed=True, slot=slot)
    return _task_response(request, view, include_circuit)


def _task_response(request: Request, view: TaskView, include_circuit: bool) -> Response:
    """The task as JSON. An answer stored compressed is never decompressed for a client
    that accepts gzip: the stored DEFLATE goes out as it is, between the task's other
    fields (a 15.8 MB answer is 2.7 MB read, held and sent); other clients get it
    decompressed a chunk at a time, so memory stays at the compressed size either way."""
    body = view.to_json(include_circuit=include_circuit)
    if view.packed is None:
        return JSONResponse(body)
    return _spliced_response(request, answers.spliced(body, view.packed))


def _spliced_response(request: Request, pieces: list[answers.Piece]) -> Response:
    headers = {"Vary": "Accept-Encoding"}
    if _accepts_gzip(request.headers.get("accept-encoding", "")):
        parts = answers.gzip_parts(pieces)
        headers["Content-Encoding"] = "gzip"
        headers["Content-Length"] = str(sum(len(part) for part in parts))
        return StreamingResponse(_iterate(parts), media_type="application/json", headers=headers)
    chunks = answers.json_parts(pieces)
    return StreamingResponse(_iterate(chunks), media_type="application/json", headers=headers)


async def _iterate(parts: Iterable[bytes | memoryview]) -> AsyncIterator[bytes | memoryview]:
    for part in parts:
        yield part


def _joined(pieces: list[answers.Piece]) -> list[answers.Piece]:
    """Adjacent JSON pieces as one (fewer, larger DEFLATE blocks)."""
    out: list[answers.Piece] = []
    for piece in pieces:
        if out and isinstance(piece, bytes) and isinstance(out[-1], bytes):
            out[-1] += piece
        else:
            out.append(piece)
    return out


def _accepts_gzip(accept_encoding: str) -> bool:
    """True if Accept-Encoding names gzip (or *) without q=0 (RFC 9110 section 12.5.3)."""
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        if coding.strip().lower() not in ("gzip", "x-gzip", "*"):
            continue
        quality = params.strip().lower()
        if not quality.startswith("q="):
            return True
        try:
            return float(quality[2:]) > 0
        except ValueError:
            return False
    return False


def _includes_circuit(request: Request) -> bool:
    raw = request.query_params.get("include")
    if raw is None:
        return False
    names = {name for name in raw.split(",") if name}
    unknown = sorted(names - set(constants.INCLUDABLE))
    if unknown:
        raise InvalidRequest(
            f"include: unknown value {unknown[0][:64]!r}; accepted: "
            + ", ".join(constants.INCLUDABLE),
            allowed=list(constants.INCLUDABLE),
        )
    return "circuit" in names


async def _delete(request: Request) -> Response:
    owner = await connections.tenant(request.headers)
    task_id = request.path_params["task_id"]
    view = await tasks.cancel(connections.stores(), connections.bus(), task_id, owner)
    return JSONResponse(view.to_json())


async def _get_batch(request: Request) -> Response:
    owner = await connections.tenant(request.headers)
    settings = connections.settings()
    wait = _wait_seconds(request.query_params.get("wait"), settings.server.max_wait_seconds)
    batch_id = request.path_params["batch_id"]
    async with _long_poll(owner, wait):
        batch = await batches.get_batch(
            connections.stores(), batch_id, owner, wait_seconds=wait, packed=True
        )
    return _batch_response(request, batch)


async def _delete_batch(request: Request) -> Response:
    owner = await connections.tenant(request.headers)
    batch_id = request.path_params["batch_id"]
    stores, bus = connections.stores(), connections.bus()
    batch = await batches.cancel_batch(stores, bus, batch_id, owner, packed=True)
    return _batch_response(request, batch)


def _batch_response(request: Request, batch: BatchView) -> Response:
    views = batch.tasks
    if all(view.packed is None for view in views):
        # Each task as GET /tasks/{id} shows it by default: without the program.
        return JSONResponse(
            batch.model_dump(mode="json", exclude={"tasks": {"__all__": {"quantum_circuit"}}})
        )
    # Compressed answers spliced in as for one task: a batch of big answers costs
    # their compressed size, not all of them decompressed at once.
    head = batch.model_dump(mode="json", exclude={"tasks"})
    pieces: list[answers.Piece] = [json.dumps(head)[:-1].encode() + b',"tasks":[']
    for index, view in enumerate(views):
        if index:
            pieces.append(b",")
        body = view.to_json()
        if view.packed is None:
            pieces.append(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode())
        else:
            pieces += answers.spliced(body, view.packed)
    pieces.append(b"]}")
    return _spliced_response(request, _joined(pieces))


async def _stream_events(request: Request) -> Response:
    """``GET /events``: the changes of a task or a batch as Server-Sent Events (see
    `qmill.server.events`)."""
    owner = await connections.tenant(request.headers)
    target = events.Target.of(
        {name: request.query_params.getlist(name) for name in ("task", "batch")}
    )
    last_seen = events.last_event_id(request.headers.get("last-event-id"))
    settings = connections.settings().server
    return await events.open_stream(connections.stores(), settings, target, owner, last_seen)


@cache
def _page() -> bytes:
    return (resources.files("qmill.server") / "static" / "index.html").read_bytes()


# The histogram has presentation attributes only: no script, style or fetch of any kind.
SVG_CSP = "default-src 'none'; frame-ancestors 'none'"
_INLINE = re.compile(rb"<(script|style)>(.*?)</\1>", re.DOTALL)


@cache
def page_csp() -> str:
    """The page's Content-Security-Policy: nothing but its own inline script and style
    (by SHA-256 of the page as shipped, so an edit of the page cannot drift from it),
    requests to its own origin, and no framing (clickjacking) and no form posts."""
    hashes: dict[bytes, list[str]] = {b"script": [], b"style": []}
    for kind, body in _INLINE.findall(_page()):
        digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
        hashes[kind].append(f"'sha256-{digest}'")
    return "; ".join(
        (
            "default-src 'none'",
            "script-src " + " ".join(hashes[b"script"] or ["'none'"]),
            "style-src " + " ".join(hashes[b"style"] or ["'none'"]),
            "connect-src 'self'",
            "img-src 'self' data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )


async def _get_page(request: Request) -> Response:
    # no-cache: a browser revalidates, so a deploy is seen on the next load. The CSP
    # (and X-Frame-Options for browsers without frame-ancestors) keep injected markup
    # from running and other sites from framing the page.
    headers = {
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": page_csp(),
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
    }
    return Response(_page(), media_type="text/html; charset=utf-8", headers=headers)


async def _get_histogram(request: Request) -> Response:
    """The counts as SVG; 409 until the task has counts (``?wait=`` waits for them).

    Guarded like ``GET /tasks/{id}``: with auth on, only the task's owner sees it.
    """
    owner = await connections.tenant(request.headers)
    settings = connections.settings()
    wait = _wait_seconds(request.query_params.get("wait"), settings.server.max_wait_seconds)
    task_id = request.path_params["task_id"]
    async with _long_poll(owner, wait):
        view = await tasks.get(connections.stores(), task_id, wait, owner)
    if view.result is None:
        detail = f"the task is {view.status.value}: it has no counts to draw"
        if view.status is TaskStatus.COMPLETED:
            detail += " (a sweep has counts per binding, observables have expectation values)"
        body = NoCounts(detail=detail, status=view.status)
        return JSONResponse(body.model_dump(mode="json", exclude_none=True), status_code=409)
    svg = pictures.histogram_svg(view.result, title=f"{view.shots} shots, task {task_id[:8]}")
    # Counts never change once written, so caches may keep the picture. Opened on its
    # own (the page links to it), an SVG is a document that could run script: it gets
    # none, and no other site may frame it.
    headers = {
        "Cache-Control": "private, max-age=3600",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": SVG_CSP,
    }
    return Response(svg, media_type="image/svg+xml", headers=headers)


async def _get_diagram(request: Request) -> Response:
    """The submitted circuit drawn by Qiskit's text drawer, as text.

    Guarded like ``GET /tasks/{id}``. The program is parsed and drawn in a parse process
    (`qasm.diagram`, under ``[limits] max_parse_seconds``, its time charged to the
    tenant's rate limit like a submit's), never on this event loop: this process does
    not even import qiskit (importing it and parsing Bell took 0.4 s and 70 MB here).
    """
    owner = await connections.tenant(request.headers)
    settings = connections.settings()
    stores = connections.stores()
    view = await tasks.get(stores, request.path_params["task_id"], 0, owner, packed=True)
    job = pool.DrawJob(settings, view.quantum_circuit or "", settings.limits.max_parse_seconds)
    reply = await tasks.parse_out_of_line(job, settings, owner, stores.limits)
    # A task's program never changes, so neither does its drawing.
    headers = {"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"}
    return Response(str(reply["diagram"]), media_type="text/plain; charset=utf-8", headers=headers)


_ROUTER = Router(
    "result",
    {
        "getTask": _get,
        "cancelTask": _delete,
        "getBatch": _get_batch,
        "cancelBatch": _delete_batch,
        "getHistogram": _get_histogram,
        "getDiagram": _get_diagram,
        "streamEvents": _stream_events,
        "page": _get_page,
    },
)


@functions_framework.aio.http
async def result(request: Request) -> Response:
    return await serve(request, _ROUTER)
