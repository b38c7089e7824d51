"""What every HTTP function shares: routing checks, body reading, and the one error mapping.

A function is ``serve(request, route)``: method and path are checked here (the
functions-framework sends every path to the one handler), QmillErrors become JSON
4xx/503 through `errors.http_status`, and anything unexpected is logged and becomes a
JSON 500 (a bug, never a normal answer).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from qmill.server import metrics
from qmill.server.errors import (
    DependencyUnavailable,
    IdempotencyInProgress,
    InvalidRequest,
    MethodNotAllowed,
    PayloadTooLarge,
    QmillError,
    RateLimited,
    Unauthorized,
    http_status,
)

log = logging.getLogger(__name__)

_SURROGATES = re.compile("[\ud800-\udfff]")

Handler = Callable[[Request], Awaitable[Response]]


def error_response(exc: QmillError) -> JSONResponse:
    status = http_status(exc)
    detail: Any = exc.message
    if isinstance(exc, InvalidRequest):
        detail = exc.detail
    body: dict[str, Any] = {"detail": detail}
    for attr in ("line", "column", "limit", "allowed", "service", "index"):
        value = getattr(exc, attr, None)
        if value is not None:
            body[attr] = value
    headers: dict[str, str] = {}
    if isinstance(exc, DependencyUnavailable | RateLimited | IdempotencyInProgress):
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = 'Bearer realm="qmill"'
    if isinstance(exc, MethodNotAllowed):
        headers["Allow"] = ", ".join(exc.allowed)
    return JSONResponse(_encodable(body), status_code=status, headers=headers)


def _encodable(value: Any) -> Any:
    """Error messages may quote the request; a lone surrogate in a quote made the JSON
    response itself fail to encode (a 500). Replace any with U+FFFD."""
    if isinstance(value, str):
        return _SURROGATES.sub("\ufffd", value)
    if isinstance(value, list | tuple):
        return [_encodable(v) for v in value]
    if isinstance(value, dict):
        return {_encodable(k): _encodable(v) for k, v in value.items()}
    return value


def not_found() -> JSONResponse:
    return JSONResponse({"detail": "Not Found"}, status_code=404)


async def serve(
    request: Request,
    resources: Mapping[str, Mapping[str, Handler]],
    resolve: Callable[[str], str | None],
    *,
    function: str,
) -> Response:
    """Dispatch a request to ``resources[resolve(path)][method]``, counted and timed.

    A path the function does not own is a 404, a known path with another verb a 405,
    and every error is mapped here, in one place. ``GET /metrics`` is answered by every
    function, for Prometheus to scrape each instance.
    """
    if request.url.path == metrics.METRICS_PATH and request.method == "GET":
        return Response(metrics.exposition(), media_type=metrics.CONTENT_TYPE)
    started = time.perf_counter()
    response = await _dispatch(request, resources, resolve)
    metrics.REQUEST_SECONDS.labels(function).observe(time.perf_counter() - started)
    metrics.REQUESTS.labels(function, request.method, str(response.status_code)).inc()
    return response


async def _dispatch(
    request: Request,
    resources: Mapping[str, Mapping[str, Handler]],
    resolve: Callable[[str], str | None],
) -> Response:
    resource = resolve(request.url.path)
    if resource is None:
        return not_found()
    routes = resources[resource]
    handler = routes.get(request.method)
    if handler is None and request.method == "HEAD":
        handler = routes.get("GET")
    try:
        if handler is None:
            raise MethodNotAllowed(request.method, tuple(routes))
        return await handler(request)
    except QmillError as exc:
        if http_status(exc) >= 500:
            log.warning("dependency unavailable", extra={"error": exc.message})
        return error_response(exc)
    except (KeyboardInterrupt, SystemExit, GeneratorExit, asyncio.CancelledError):
        raise
    except BaseException:  # a bug; BaseException too, for Rust panics from the parsers
        log.exception("unhandled error", extra={"path": request.url.path})
        return JSONResponse({"detail": "internal error"}, status_code=500)


async def read_json(request: Request, max_bytes: int) -> Any:
    """Read a JSON body, refusing (413) before reading more than ``max_bytes``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(max_bytes)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(max_bytes)
        chunks.append(chunk)
    raw = b"".join(chunks)
    try:
        # UTF-8 only (RFC 8259): json.loads(bytes) would also guess UTF-16/32 and skip a BOM.
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequest(f"body is not valid JSON: {exc}") from None
    except RecursionError:  # e.g. 500k nested "[": json.loads recurses per level
        raise InvalidRequest("body is not valid JSON: nested too deeply") from None


def path_id(path: str, prefix: str) -> str | None:
    """The single path segment after ``prefix`` (``/tasks/<id>``), or None."""
    if not path.startswith(prefix):
        return None
    rest = path[len(prefix) :]
    return rest if rest and "/" not in rest else None
