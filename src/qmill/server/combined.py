"""``python -m qmill.server.combined``: the embedded run's API in one process.

``[embedded] topology = "combined"`` (the default of `make run`): one process on
``[server] port`` does what ``qmill-gateway`` does for a client (`gateway.FrontDoor`:
routes, refusals, body limits; `gateway_protocol`: the head's size and time limits and
the lingering close), then calls the app of the function that owns the path in this
process: the very ASGI app ``functions-framework --asgi`` builds and serves in the split
topology (`functions_framework.aio.create_asgi_app` on the same source), so no second
HTTP hop, no second parse, no proxy. The gateway and its pools cost ~2 ms of CPU a
request; this costs a function call.

What the function gets and what the caller gets back are what the split topology gives
them: the caller's headers as the gateway forwards them (`gateway.forwarded_headers`,
with ``Content-Length`` where httpx would write one), the answer's headers as the
gateway passes them back (`gateway.answer_headers`) with the body's length, and an event
stream passed on message by message, under the same write timeout. A function is never
"unavailable" here (503): it lives and dies with this process, which the supervisor
restarts like any service.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping

import functions_framework.aio
import h11
import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qmill.server import constants, embedded, gateway_protocol, probes, routes
from qmill.server.config import Settings, get_settings
from qmill.server.gateway import (
    DROPPED_FROM_ANSWERS,
    MALFORMED_HEADER,
    FrontDoor,
    forwarded_headers,
    json_answer,
)
from qmill.server.logs import setup_logging

# What an event stream is sent as (`qmill.server.events`), as the gateway checks it.
_STREAM_TYPE = b"text/event-stream"
log = logging.getLogger(__name__)

# What the caller never gets of a function's answer headers (as the gateway drops them).
_DROPPED = frozenset(name.encode() for name in DROPPED_FROM_ANSWERS)


def function_apps() -> dict[str, ASGIApp]:
    """Each function's ASGI app, built as ``functions-framework --asgi --target NAME
    --source FILE`` builds it (`embedded.function_command`'s arguments)."""
    sources = {name: str(embedded.function_source(name)) for name in constants.FUNCTION_NAMES}
    # Which files serve, as the split topology's command lines show them.
    log.info("functions served in-process", extra={"sources": list(sources.values())})
    return {
        name: functions_framework.aio.create_asgi_app(  # type: ignore[no-untyped-call]
            target=name, source=source, signature_type="http"
        )
        for name, source in sources.items()
    }


class Combined(FrontDoor):
    """The front door, then the owning function's app, in-process."""

    def __init__(self, apps: Mapping[str, ASGIApp], settings: Settings) -> None:
        super().__init__(settings)
        self._apps = dict(apps)

    async def forward(
        self, function: str, content: bytes, scope: Scope, receive: Receive, send: Send
    ) -> None:
        headers = forwarded_headers(scope["headers"])
        if content:  # as httpx sends a body: with its length (chunked or not on arrival)
            headers.append((b"content-length", b"%d" % len(content)))
        target = scope["raw_path"]
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        try:  # what the gateway's client would refuse to send (two Hosts, a bad field)
            h11.Request(method=scope["method"], target=target, headers=headers)
        except h11.LocalProtocolError:
            await json_answer(send, 400, MALFORMED_HEADER)
            return
        inner = {**scope, "headers": headers}
        replay = _Replay(content, receive)
        app = self._apps[function]
        if routes.streaming(scope["path"]):
            await self._stream(app, inner, replay, send)
            return
        answer = _Buffered(send)
        await app(inner, replay, answer.send)

    async def readiness(self) -> probes.Readiness:
        """The functions' own: they live in this process and share its NATS and Redis
        clients (`qmill.server.connections`)."""
        return await probes.dependencies()

    async def _stream(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        """An event stream's messages as they come; a write not taken within ``[server]
        event_write_timeout_seconds`` (a client that does not read) ends it, as the
        gateway ends it: the app is cancelled and the answer left incomplete, so the
        connection closes. Any other answer on a streaming path is buffered."""
        buffered: _Buffered | None = None
        timed_out = False

        async def write(message: Message) -> None:
            nonlocal buffered, timed_out
            if message["type"] == "http.response.start":
                content_type = next(
                    (v for k, v in message["headers"] if k.lower() == b"content-type"), b""
                )
                if not content_type.startswith(_STREAM_TYPE):
                    buffered = _Buffered(send)
                else:
                    message = {**message, "headers": _answer(message["headers"])}
            if buffered is not None:
                await buffered.send(message)
                return
            try:
                async with asyncio.timeout(self._write_timeout):
                    await send(message)
            except TimeoutError:
                timed_out = True
                running.cancel()
                await asyncio.Event().wait()  # the cancellation lands here

        running = asyncio.ensure_future(app(scope, receive, write))
        try:
            await running
        except asyncio.CancelledError:
            if not timed_out or not running.cancelled():
                raise


class _Replay:
    """The request's receive channel with its body, already read by the front door, given
    again as one message; then the connection's own (``http.disconnect``)."""

    def __init__(self, content: bytes, receive: Receive) -> None:
        self._body: Message | None = {"type": "http.request", "body": content, "more_body": False}
        self._receive = receive

    async def __call__(self) -> Message:
        if self._body is not None:
            body, self._body = self._body, None
            return body
        return await self._receive()


class _Buffered:
    """An answer sent as the gateway sends one: its headers filtered, then its whole body
    under its length (a HEAD's, like the gateway's, is empty and says so)."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._start: Message | None = None
        self._chunks: list[bytes] = []

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self._start = message
            return
        if message["type"] != "http.response.body" or self._start is None:
            await self._send(message)
            return
        self._chunks.append(message.get("body", b""))
        if message.get("more_body"):
            return
        body = b"".join(self._chunks)
        headers = _answer(self._start["headers"])
        headers.append((b"content-length", b"%d" % len(body)))
        start = {"type": "http.response.start", "status": self._start["status"]}
        await self._send({**start, "headers": headers})
        await self._send({"type": "http.response.body", "body": body})


def _answer(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(k, v) for k, v in raw if k.lower() not in _DROPPED]


def main() -> None:
    settings = get_settings()
    # The functions' own logger setup (`connections.settings`) names them alike.
    setup_logging(settings.log, service="functions")
    app = Combined(function_apps(), settings)
    uvicorn.run(
        app,
        host=settings.server.host,
        port=settings.server.port,
        log_level="warning",
        access_log=False,
        # uvloop when installed (it is, with uvicorn's lock): measured here, 1000 POST
        # /tasks cost this process 4.0-4.4 ms of CPU each on uvloop, 4.9-5.2 on asyncio.
        loop="auto",
        lifespan="on",
        http=gateway_protocol.protocol(gateway_protocol.ConnectionLimits.of(settings.server)),
    )


if __name__ == "__main__":
    main()
