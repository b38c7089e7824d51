"""What every HTTP function shares: dispatch on the route table, body reading, errors.

A function is ``serve(request, router)``: the functions-framework sends every path to
the one handler, so the `Router` matches method and path against the function's share
of `routes.ROUTES` (the gateway's table and matcher) and calls the handler registered
for that operation. A QmillError becomes JSON with the status and headers it carries;
anything unexpected is logged and becomes a JSON 500 (a bug, never a normal answer).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from opentelemetry import trace
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from qmill.server import connections, constants, hosts, logs, metrics, probes, routes, telemetry
from qmill.server.config import Settings
from qmill.server.errors import (
    InvalidRequest,
    MethodNotAllowed,
    PayloadTooLarge,
    QmillError,
    UnsupportedMediaType,
)
from qmill.server.models import ErrorBody

log = logging.getLogger(__name__)

_SURROGATES = re.compile("[\ud800-\udfff]")

# The one media type a body may have (parameters such as charset=utf-8 are fine).
JSON_MEDIA_TYPE = "application/json"

Handler = Callable[[Request], Awaitable[Response]]


# What an error may add to ``detail``, as the documented error body names it.
_ERROR_FIELDS = tuple(name for name in ErrorBody.model_fields if name != "detail")


def error_response(exc: QmillError) -> JSONResponse:
    body: dict[str, Any] = {"detail": exc.detail}
    for attr in _ERROR_FIELDS:
        value = getattr(exc, attr, None)
        if value is not None:
            body[attr] = value
    return JSONResponse(_encodable(body), status_code=exc.status_code, headers=exc.headers)


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


class Router:
    """One function's share of the route table, each operation bound to its handler.

    Built at import, so a function whose handlers and routes disagree (a route without a
    handler, a handler for no route) fails its first test instead of answering 404.
    """

    def __init__(self, function: str, handlers: Mapping[str, Handler]) -> None:
        owned = {route.operation for route in routes.ROUTES if route.function == function}
        if not owned or set(handlers) != owned:
            raise ValueError(
                f"the {function} function's handlers {sorted(handlers)} are not "
                f"the operations the route table gives it {sorted(owned)}"
            )
        self.function = function
        self._handlers = dict(handlers)

    def resolve(
        self, method: str, path: str
    ) -> tuple[Handler, routes.Route, dict[str, str]] | None:
        """The handler, route and path parameters for a request; None when the path is
        not this function's (404), MethodNotAllowed when it is, but not with this verb."""
        found = list(routes.matching(path, self.function))
        if not found:
            return None
        for wanted in (method, "GET") if method == "HEAD" else (method,):
            for route, params in found:
                if route.method == wanted:
                    return self._handlers[route.operation], route, params
        raise MethodNotAllowed(method, tuple(dict.fromkeys(route.method for route, _ in found)))


async def serve(request: Request, router: Router) -> Response:
    """Dispatch a request through ``router``, counted, timed and traced.

    A path the function does not own is a 404, a known path with another verb a 405,
    and every error is mapped here, in one place. ``GET /metrics``, ``/livez`` and
    ``/readyz`` (`routes.PROCESS_PATHS`) are answered by every function about itself,
    before the Host check: kubelet and Prometheus ask by address.

    The request's id (its valid ``X-Request-ID``, else a new one) is on every line
    logged while it is handled (`logs.REQUEST_ID`) and on the answer; the request is a
    SERVER span continuing the caller's ``traceparent`` (`qmill.server.telemetry`).
    """
    settings = connections.settings()  # first: sets up logging and tracing once
    path = request.url.path
    if request.method == "GET" and path in routes.PROCESS_PATHS:
        if path == metrics.METRICS_PATH:
            return Response(metrics.exposition(), media_type=metrics.CONTENT_TYPE)
        return await probes.answer(path)
    # Not reset after: the answer's body (an event stream) is sent after this returns,
    # still in this request's own asyncio task and context, and its lines are this
    # request's too.
    request_id = logs.request_id_of(request.headers.get(constants.REQUEST_ID_HEADER))
    logs.REQUEST_ID.set(request_id)
    started = time.perf_counter()
    with telemetry.span(
        f"{request.method} {router.function}",
        telemetry.SpanKind.SERVER,
        {"http.request.method": request.method, "qmill.request_id": request_id},
        telemetry.context_of(request.headers),
    ) as span:
        response = await _dispatch(request, router, settings)
        span.set_attribute("http.response.status_code", response.status_code)
    response.headers[constants.REQUEST_ID_HEADER] = request_id
    metrics.REQUEST_SECONDS.labels(router.function).observe(time.perf_counter() - started)
    metrics.REQUESTS.labels(router.function, request.method, str(response.status_code)).inc()
    return response


async def _dispatch(request: Request, router: Router, settings: Settings) -> Response:
    try:
        # Before anything else, on every path: a foreign Host is a 421, a foreign Origin
        # on a POST or DELETE a 403 (DNS rebinding, cross-site writes; see hosts).
        hosts.check(request.method, request.headers, settings.server)
        resolved = router.resolve(request.method, request.url.path)
        if resolved is None:
            return not_found()
        handler, route, params = resolved
        span = trace.get_current_span()
        span.update_name(f"{route.method} {route.path}")
        span.set_attribute("http.route", route.path)
        if route.param is not None:
            span.set_attribute(f"qmill.{route.param}", params[route.param])
        unknown = [key for key in request.query_params if key not in route.query]
        if unknown:
            accepted = ", ".join(route.query) or "none"
            raise InvalidRequest(
                f"unknown query parameter '{unknown[0][:64]}'; accepted: {accepted}",
                allowed=list(route.query),
            )
        # Where Starlette's own router puts them: handlers read request.path_params.
        request.scope["path_params"] = params
        return await handler(request)
    except QmillError as exc:
        if exc.status_code >= 500:
            log.warning("dependency unavailable", extra={"error": exc.message})
        return error_response(exc)
    except (KeyboardInterrupt, SystemExit, GeneratorExit, asyncio.CancelledError):
        raise
    except BaseException:  # a bug; BaseException too, for Rust panics from the parsers
        log.exception("unhandled error", extra={"path": request.url.path})
        return JSONResponse({"detail": "internal error"}, status_code=500)


async def read_json(request: Request, max_bytes: int) -> Any:
    """Read a JSON body, refusing (413) before reading more than ``max_bytes``.

    A body not declared ``application/json`` is a 415 before it is read: a web page can
    send any other type cross-site without a CORS preflight (see qmill.server.hosts).
    """
    content_type = request.headers.get("content-type")
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != JSON_MEDIA_TYPE:
        raise UnsupportedMediaType(content_type, JSON_MEDIA_TYPE)
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
