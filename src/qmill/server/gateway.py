"""``qmill-gateway``: the one public address, routing the API's paths to the functions.

This is the embedded run's stand-in for the reverse proxy that compose (nginx) and
Kubernetes (an Ingress) put in front of the functions. It routes on path only, from
`routes.ROUTES` (the table the functions dispatch on), so each function still answers
wrong verbs itself (405).

Upstream connections are pooled per function, and long-polls (``?wait=``) have a pool
of their own: with one shared pool of 256, 300 long-polls on a pending task held every
connection and ``/health`` waited 29 s behind them. A long-poll pool is not capped here:
the result function caps each tenant's open long-polls (``[server]
max_long_polls_per_tenant``) and refuses the rest at once. Event streams (``GET
/events``, `routes.Route.streams`) have a pool of their own too, capped per tenant the
same way, and are passed on chunk by chunk as they come, not buffered: their read
timeout is a few heartbeats, so a stream is never cut while its function is alive.
The client side of each connection (header size and time limits, lingering close) is
`gateway_protocol`'s.

`FrontDoor` is what the public address does before a function sees a request, whoever
then answers it; `Gateway` forwards over HTTP (``[embedded] topology = "split"``),
`qmill.server.combined` calls the function's app in-process (the default).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl

import httpx
import uvicorn
from starlette.types import Message, Receive, Scope, Send

from qmill.server import constants, gateway_protocol, logs, probes, routes
from qmill.server.config import Settings, get_settings
from qmill.server.errors import RequestTimeout
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
# Headers the gateway writes itself (uvicorn does, on every answer): the function's copies
# would make two of each.
_OWN = frozenset({"date", "server"})
# What the caller never gets of a function's answer headers.
DROPPED_FROM_ANSWERS = _HOP_BY_HOP | _OWN
# Upstream connections per function for requests that are answered as soon as they are
# handled (all but long-polls): a burst beyond it waits in the gateway for a free one.
_POOL_CONNECTIONS = 256
_POOL_IDLE_CONNECTIONS = 64
# An idle upstream connection is dropped before the function drops it (its uvicorn
# workers close idle ones after gunicorn's keepalive, 2 s), so none is reused as it
# closes; httpx keeps them 5 s by default. nginx.conf's keepalive_timeout, likewise.
_POOL_IDLE_SECONDS = 1.0
# How long ``/readyz`` waits for each function's own, which takes up to
# tasks.HEALTH_TIMEOUT_SECONDS (1.5 s) when NATS or Redis does not answer: that and room.
_READINESS_TIMEOUT = 3.0


# The answer to a request header the split topology's HTTP client (h11) will not send.
MALFORMED_HEADER = b'{"detail":"malformed request header"}'

# What an event stream is sent as (`qmill.server.events`).
_STREAM_TYPE = "text/event-stream"


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


def forwarded_headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The caller's headers as a function gets them: without the hop-by-hop ones (Host
    stays), each value without surrounding whitespace (RFC 9110 section 5.5: not part of
    it; h11 refuses it), and with ``Accept-Encoding: identity`` if the caller named none
    (so a function never compresses an answer the caller cannot read)."""
    forward = [
        (k, v.strip(b" \t")) for k, v in raw if k.decode("latin-1").lower() not in _NOT_FORWARDED
    ]
    if not any(k.lower() == b"accept-encoding" for k, _ in forward):
        forward.append((b"accept-encoding", b"identity"))
    return forward


def answer_headers(raw: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """A function's answer headers as the caller gets them: without the hop-by-hop ones
    and without those the front door's own server writes (Date, Server)."""
    return [
        (k.encode("latin-1"), v.encode("latin-1"))
        for k, v in raw
        if k.lower() not in DROPPED_FROM_ANSWERS
    ]


class FrontDoor:
    """The public address's side of every request, whatever then answers it: the route
    (404 for a path nobody owns, a JSON 405 with Allow for a verb no function takes),
    the body (413 by Content-Length before reading, 413 past the limit while reading, 408
    when it stalls) and lifespan. Subclasses `forward` the admitted request to the
    function that owns its path: over HTTP (`Gateway`) or in-process
    (`qmill.server.combined`)."""

    def __init__(self, settings: Settings) -> None:
        self._max_body = settings.limits.max_body_bytes
        self._client_timeout = settings.server.client_timeout_seconds
        self._write_timeout = settings.server.event_write_timeout_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        scope, send = _with_request_id(scope, send)
        if scope["method"] == "GET" and scope["path"] in routes.PROBES:
            readiness = await self.readiness() if scope["path"] == routes.READYZ_PATH else None
            if readiness is None:
                await json_answer(send, 200, probes.LIVE_BODY)
            else:
                await json_answer(send, readiness.status_code, readiness.body())
            return
        # An encoded "/" (%2F) is a path separator only once decoded, and routers
        # disagree on whether to decode it; no id has one, so such a path is nobody's.
        encoded_slash = b"%2f" in scope["raw_path"].lower()
        function = None if encoded_slash else route(scope["path"])
        if function is None:
            await json_answer(send, 404, b'{"detail":"Not Found"}')
            return
        if scope["method"] not in _FUNCTION_METHODS:
            # The functions-framework answers these (TRACE, CONNECT, made-up verbs) itself,
            # in plain text; answer like every other wrong verb: JSON 405 with Allow.
            await _method_not_allowed(send, scope["method"], allowed_methods(scope["path"]))
            return
        declared = next((v for k, v in scope["headers"] if k.lower() == b"content-length"), None)
        too_large = b'{"detail":"request body is larger than %d bytes"}' % self._max_body
        # Answered with the body still arriving, so the connection closes after it (the
        # protocol lingers, reading the rest, so the client gets the 413, not a reset).
        if declared is not None and declared.isdigit() and int(declared) > self._max_body:
            await json_answer(send, 413, too_large, close=True)
            return
        try:
            content = await _read_body(receive, self._max_body, self._client_timeout)
        except TimeoutError:
            body = json.dumps({"detail": RequestTimeout(self._client_timeout).message}).encode()
            await json_answer(send, RequestTimeout.status_code, body, close=True)
            return
        if content is None:
            await json_answer(send, 413, too_large, close=True)
            return
        await self.forward(function, content, scope, receive, send)

    async def forward(
        self, function: str, content: bytes, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Answer an admitted request (its body read: ``content``) by ``function``."""
        raise NotImplementedError

    async def readiness(self) -> probes.Readiness:
        """What ``/readyz`` on the public address answers: whoever answers behind it."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release what `forward` holds (called at lifespan shutdown)."""

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


class Gateway(FrontDoor):
    """A small ASGI reverse proxy: one pooled HTTP client per function, one for long-polls."""

    def __init__(self, upstreams: Mapping[str, str], settings: Settings) -> None:
        super().__init__(settings)
        self._upstreams = dict(upstreams)
        timeout = httpx.Timeout(settings.server.max_wait_seconds + 15.0, connect=2.0)
        limits = httpx.Limits(
            max_connections=_POOL_CONNECTIONS,
            max_keepalive_connections=_POOL_IDLE_CONNECTIONS,
            keepalive_expiry=_POOL_IDLE_SECONDS,
        )
        self._clients = {
            name: httpx.AsyncClient(timeout=timeout, limits=limits) for name in self._upstreams
        }
        # Bounded per tenant by the result function, which answers the excess with a
        # quick 429; queueing them here would only hold the client longer.
        unbounded = httpx.Limits(
            max_connections=None,
            max_keepalive_connections=_POOL_IDLE_CONNECTIONS,
            keepalive_expiry=_POOL_IDLE_SECONDS,
        )
        self._long_polls = httpx.AsyncClient(timeout=timeout, limits=unbounded)
        server = settings.server
        # Between two chunks of a stream at most a heartbeat passes; three missed
        # heartbeats mean the function is stuck.
        idle = httpx.Timeout(3 * server.event_heartbeat_seconds + 10.0, connect=2.0)
        self._streams = httpx.AsyncClient(timeout=idle, limits=unbounded)

    async def forward(
        self, function: str, content: bytes, scope: Scope, receive: Receive, send: Send
    ) -> None:
        url = self._upstreams[function] + scope["raw_path"].decode("latin-1")
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")
        # Forward the bytes as received: httpx would encode str values as ASCII (a 500 on
        # any byte >= 0x80) and h11 refuses values with surrounding whitespace (which
        # was reported as the function being down).
        forward = forwarded_headers(scope["headers"])
        streams = routes.streaming(scope["path"])
        if streams:
            client = self._streams
        elif _is_long_poll(scope):
            client = self._long_polls
        else:
            client = self._clients[function]
        try:
            request = client.build_request(scope["method"], url, headers=forward, content=content)
            upstream = await client.send(request, stream=True)
            if streams and upstream.headers.get("content-type", "").startswith(_STREAM_TYPE):
                await self._pass_stream(upstream, receive, send)
                return
            # The bytes as the function sent them (aiter_raw): a gzip body stays gzip,
            # under the Content-Encoding the function gave it.
            raw = b"".join([chunk async for chunk in upstream.aiter_raw()])
            await upstream.aclose()
        except httpx.LocalProtocolError:  # a header h11 will not send: the caller's fault
            await json_answer(send, 400, MALFORMED_HEADER)
            return
        except httpx.HTTPError:
            detail = b'{"detail":"the %s function is unavailable"}' % function.encode()
            await json_answer(send, 503, detail, retry_after=True)
            return
        out = answer_headers(upstream.headers.items())
        # A HEAD's length is the GET's, as the function (and nginx) say it; the body is empty.
        length = upstream.headers.get("content-length") if scope["method"] == "HEAD" else None
        out.append((b"content-length", (length or str(len(raw))).encode()))
        await send({"type": "http.response.start", "status": upstream.status_code, "headers": out})
        await send({"type": "http.response.body", "body": raw})

    async def _pass_stream(self, upstream: httpx.Response, receive: Receive, send: Send) -> None:
        """An event stream, chunk by chunk, until it ends, its client leaves, or a write
        is not taken within ``[server] event_write_timeout_seconds`` (a client that does
        not read: the connection is closed, and the upstream stream with it)."""
        out = answer_headers(upstream.headers.items())

        async def write(message: dict[str, Any]) -> None:
            async with asyncio.timeout(self._write_timeout):
                await send(message)

        async def pump() -> None:
            await write(
                {"type": "http.response.start", "status": upstream.status_code, "headers": out}
            )
            async for chunk in upstream.aiter_raw():
                await write({"type": "http.response.body", "body": chunk, "more_body": True})
            await write({"type": "http.response.body", "body": b""})

        async def left() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        tasks = [asyncio.create_task(pump()), asyncio.create_task(left())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            # A broken upstream or a write timeout ends the answer incomplete: uvicorn
            # closes the connection, and the client resumes with Last-Event-ID.
            await asyncio.gather(*tasks, return_exceptions=True)
            await upstream.aclose()

    async def readiness(self) -> probes.Readiness:
        client = self._clients[next(iter(self._clients))]
        return await probes.functions_ready(self._upstreams, client, _READINESS_TIMEOUT)

    async def aclose(self) -> None:
        for client in (*self._clients.values(), self._long_polls, self._streams):
            await client.aclose()


def _with_request_id(scope: Scope, send: Send) -> tuple[Scope, Send]:
    """The request with its id (the caller's valid ``X-Request-ID``, else a new one) as
    the only X-Request-ID the function gets, and a ``send`` that puts it on the answer
    unless the function already did (it echoes the one it got)."""
    name = constants.REQUEST_ID_HEADER.lower().encode()
    given = [v for k, v in scope["headers"] if k.lower() == name]
    request_id = logs.request_id_of(given[0] if len(given) == 1 else None).encode()
    headers = [(k, v) for k, v in scope["headers"] if k.lower() != name]
    headers.append((name, request_id))

    async def tagged(message: Message) -> None:
        if message["type"] == "http.response.start":
            out = list(message.get("headers", []))
            if not any(k.lower() == name for k, _ in out):
                message = {**message, "headers": [*out, (name, request_id)]}
        await send(message)

    return {**scope, "headers": headers}, tagged


def _is_long_poll(scope: Scope) -> bool:
    """A request that may wait (``?wait=``), whatever its value: the function decides."""
    query = scope.get("query_string", b"").decode("latin-1")
    return any(name == "wait" for name, _ in parse_qsl(query, keep_blank_values=True))


async def _read_body(receive: Receive, limit: int, timeout: float) -> bytes | None:
    """The body, or None past ``limit``; TimeoutError when nothing more arrives within
    ``timeout`` (nginx's client_body_timeout: a stalled body holds a connection)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await asyncio.wait_for(receive(), timeout)
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


async def json_answer(
    send: Send, status: int, body: bytes, retry_after: bool = False, close: bool = False
) -> None:
    headers: list[Any] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if retry_after:
        headers.append((b"retry-after", b"1"))
    if close:
        headers.append((b"connection", b"close"))
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
        http=gateway_protocol.protocol(gateway_protocol.ConnectionLimits.of(settings.server)),
    )


if __name__ == "__main__":
    main()
