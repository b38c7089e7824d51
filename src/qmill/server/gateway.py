"""``qmill-gateway``: the one public address, routing the API's paths to the functions.

This is the embedded run's stand-in for the reverse proxy that compose (nginx) and
Kubernetes (an Ingress) put in front of the functions. It routes on path only, from
`routes.ROUTES` (the table the functions dispatch on), so each function still answers
wrong verbs itself (405).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import Any

import httpx
import uvicorn
from starlette.types import Receive, Scope, Send

from qmill.server import constants, routes
from qmill.server.config import Settings, get_settings
from qmill.server.logs import setup_logging

# Headers that describe one hop, not the message (RFC 9110 section 7.6.1).
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


# Host is passed on, as nginx's `proxy_set_header Host $host` does: the functions check
# it against [server] allowed_hosts (qmill.server.hosts), so DNS rebinding is refused.
_NOT_FORWARDED = _HOP_BY_HOP - {"host"}


# Methods the functions dispatch themselves (their own 405 names the allowed ones).
_FUNCTION_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


def allowed_methods(path: str) -> list[str]:
    """The methods the route table routes for a path."""
    return routes.allowed_methods(path)


def route(path: str) -> str | None:
    """The function that owns a path, or None (404)."""
    return routes.function_for(path)


class Gateway:
    """A small ASGI reverse proxy with one pooled HTTP client per upstream."""

    def __init__(self, upstreams: Mapping[str, str], settings: Settings) -> None:
        self._upstreams = dict(upstreams)
        self._max_body = settings.limits.max_body_bytes
        timeout = httpx.Timeout(settings.server.max_wait_seconds + 15.0, connect=2.0)
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
        self._client = httpx.AsyncClient(timeout=timeout, limits=limits)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        function = route(scope["path"])
        if function is None:
            await _json(send, 404, b'{"detail":"Not Found"}')
            return
        if scope["method"] not in _FUNCTION_METHODS:
            # The functions-framework answers these (TRACE, CONNECT, made-up verbs) itself,
            # in plain text; answer like every other wrong verb: JSON 405 with Allow.
            await _method_not_allowed(send, scope["method"], allowed_methods(scope["path"]))
            return
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        declared = next((v for k, v in headers if k.lower() == "content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > self._max_body:
            body = b'{"detail":"request body is larger than %d bytes"}' % self._max_body
            await _json(send, 413, body)
            return
        content = await _read_body(receive, self._max_body)
        if content is None:
            await _json(send, 413, b'{"detail":"request body is too large"}')
            return
        url = self._upstreams[function] + scope["raw_path"].decode("latin-1")
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")
        # Forward the bytes as received: httpx would encode str values as ASCII (a 500 on
        # any byte >= 0x80) and h11 refuses values with surrounding whitespace (which
        # was reported as the function being down). Whitespace around a field value is
        # not part of it (RFC 9110 section 5.5), so it is dropped.
        forward = [
            (k, v.strip(b" \t"))
            for k, v in scope["headers"]
            if k.decode("latin-1").lower() not in _NOT_FORWARDED
        ]
        # The caller's Accept-Encoding, or none: without one httpx would add its own, and
        # a function could then compress an answer the caller cannot read.
        if not any(k.lower() == b"accept-encoding" for k, _ in forward):
            forward.append((b"accept-encoding", b"identity"))
        try:
            request = self._client.build_request(
                scope["method"], url, headers=forward, content=content
            )
            upstream = await self._client.send(request, stream=True)
            # The bytes as the function sent them (aiter_raw): a gzip body stays gzip,
            # under the Content-Encoding the function gave it.
            raw = b"".join([chunk async for chunk in upstream.aiter_raw()])
            await upstream.aclose()
        except httpx.LocalProtocolError:  # a header h11 will not send: the caller's fault
            await _json(send, 400, b'{"detail":"malformed request header"}')
            return
        except httpx.HTTPError:
            detail = b'{"detail":"the %s function is unavailable"}' % function.encode()
            await _json(send, 503, detail, retry_after=True)
            return
        out = [
            (k.encode("latin-1"), v.encode("latin-1"))
            for k, v in upstream.headers.items()
            if k.lower() not in _HOP_BY_HOP
        ]
        out.append((b"content-length", str(len(raw)).encode()))
        await send({"type": "http.response.start", "status": upstream.status_code, "headers": out})
        await send({"type": "http.response.body", "body": raw})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def _method_not_allowed(send: Send, method: str, allowed: list[str]) -> None:
    body = json.dumps(
        {
            "detail": f"method {method} not allowed here; use {', '.join(allowed)}",
            "allowed": allowed,
        }
    ).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"allow", ", ".join(allowed).encode()),
    ]
    await send({"type": "http.response.start", "status": 405, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _json(send: Send, status: int, body: bytes, retry_after: bool = False) -> None:
    headers: list[Any] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if retry_after:
        headers.append((b"retry-after", b"1"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="qmill-gateway", description=__doc__)
    for name in constants.FUNCTION_NAMES:
        parser.add_argument(f"--{name}-url", required=True, help=f"base URL of the {name} function")
    args = parser.parse_args(argv)
    settings = get_settings()
    setup_logging(settings.log, service="gateway")
    upstreams = {
        name: getattr(args, f"{name}_url").rstrip("/") for name in constants.FUNCTION_NAMES
    }
    uvicorn.run(
        Gateway(upstreams, settings),
        host=settings.server.host,
        port=settings.server.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
    )


if __name__ == "__main__":
    main()
