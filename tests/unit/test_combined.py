"""The combined topology's front door (`qmill.server.combined`), driven as uvicorn drives
it, with stand-in function apps: what it refuses itself, and what it hands a function
and gives back (the real functions behind it: tests/e2e/test_topologies.py)."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from qmill.server import constants
from qmill.server.combined import Combined
from qmill.server.config import Settings

MAX_BODY = 1024
WRITE_TIMEOUT = 0.2
SETTINGS = Settings.model_validate(
    {
        "limits": {"max_body_bytes": MAX_BODY},
        "server": {"client_timeout_seconds": 0.2, "event_write_timeout_seconds": WRITE_TIMEOUT},
    }
)


class Echo:
    """A function app that records what it got and answers it back in parts."""

    def __init__(self, content_type: bytes = b"application/json") -> None:
        self.scope: Scope = {}
        self.body = b""
        self.content_type = content_type

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope = scope
        message = await receive()
        self.body = message["body"]
        headers = [
            (b"content-type", self.content_type),
            (b"content-length", b"999"),
            (b"connection", b"keep-alive"),
            (b"idempotent-replayed", b"true"),
        ]
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        await send({"type": "http.response.body", "body": b"{}", "more_body": True})
        await send({"type": "http.response.body", "body": b"[]"})


def scope(method: str, path: str, headers: list[tuple[bytes, bytes]] | None = None) -> Scope:
    raw = [(b"host", b"127.0.0.1:8000"), *(headers or [])]
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": raw,
    }


async def call(
    app: Combined, request: Scope, chunks: list[bytes] | None = None, stall: bool = False
) -> list[Message]:
    """The messages the app sends for ``request`` with its body in ``chunks``."""
    pending = [{"type": "http.request", "body": c, "more_body": True} for c in chunks or []]
    pending.append({"type": "http.request", "body": b"", "more_body": False})
    sent: list[Message] = []

    async def receive() -> Message:
        if stall or not pending:
            await asyncio.Event().wait()
        return pending.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    await app(request, receive, send)
    return sent


def combined(**apps: Any) -> Combined:
    fallback = Echo()
    return Combined({n: apps.get(n, fallback) for n in constants.FUNCTION_NAMES}, SETTINGS)


def answer(sent: list[Message]) -> tuple[int, dict[bytes, bytes], bytes]:
    start, *bodies = sent
    body = b"".join(m.get("body", b"") for m in bodies)
    return start["status"], dict(start["headers"]), body


async def test_refusals_of_the_front_door_never_reach_a_function() -> None:
    echo = Echo()
    app = combined(submit=echo, result=echo, health=echo)
    status, _, body = answer(await call(app, scope("GET", "/nope")))
    assert status == 404 and json.loads(body) == {"detail": "Not Found"}
    status, headers, body = answer(await call(app, scope("TRACE", "/tasks")))
    assert status == 405 and headers[b"allow"] == b"POST, GET"
    assert json.loads(body)["allowed"] == ["POST", "GET"]
    declared = [(b"content-length", b"%d" % (MAX_BODY + 1))]
    status, headers, _ = answer(await call(app, scope("POST", "/tasks", declared)))
    assert status == 413 and headers[b"connection"] == b"close"
    chunked = await call(app, scope("POST", "/tasks"), [b"x" * 600, b"x" * 600])
    assert answer(chunked)[0] == 413
    stalled = await call(app, scope("POST", "/tasks"), stall=True)
    assert answer(stalled)[0] == 408
    twice = scope("GET", "/health", [(b"host", b"127.0.0.1")])
    assert answer(await call(app, twice))[:3:2] == (400, b'{"detail":"malformed request header"}')
    assert echo.scope == {}


async def test_a_function_gets_the_request_and_the_caller_its_answer_as_through_the_gateway() -> (
    None
):
    echo = Echo()
    app = combined(submit=echo)
    request = scope("POST", "/tasks", [(b"x-padded", b"  v \t"), (b"connection", b"keep-alive")])
    status, headers, body = answer(await call(app, request, [b'{"a":', b"1}"]))
    assert echo.body == b'{"a":1}'
    # The front door's request id (none was given): the function's, and the caller's.
    given = dict(echo.scope["headers"])
    request_id = given.pop(b"x-request-id")
    assert re.fullmatch(rb"[0-9a-f]{32}", request_id)
    assert headers.pop(b"x-request-id") == request_id
    assert given == {
        b"host": b"127.0.0.1:8000",
        b"x-padded": b"v",
        b"accept-encoding": b"identity",
        b"content-length": b"7",
    }
    assert status == 201 and body == b"{}[]"
    assert headers == {
        b"content-type": b"application/json",
        b"idempotent-replayed": b"true",
        b"content-length": b"4",
    }


async def test_an_event_stream_is_passed_on_as_it_comes_and_ended_when_not_taken() -> None:
    stream = Echo(b"text/event-stream; charset=utf-8")
    app = combined(result=stream)
    sent = await call(app, scope("GET", "/events"))
    assert [m.get("body") for m in sent[1:]] == [b"{}", b"[]"]  # not joined
    assert b"content-length" not in dict(sent[0]["headers"])

    taken: list[Message] = []
    cancelled = asyncio.Event()

    async def slow_reader(message: Message) -> None:
        if message["type"] == "http.response.body":
            await asyncio.Event().wait()  # a client that never reads
        taken.append(message)

    async def heartbeats(scope: Scope, receive: Receive, send: Send) -> None:
        start = {"type": "http.response.start", "status": 200}
        await send({**start, "headers": [(b"content-type", b"text/event-stream")]})
        try:
            await send({"type": "http.response.body", "body": b": hb\n\n", "more_body": True})
        finally:
            cancelled.set()

    app = combined(result=heartbeats)
    body: list[Message] = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> Message:
        if not body:
            await asyncio.Event().wait()  # the client stays
        return body.pop()

    await asyncio.wait_for(app(scope("GET", "/events"), receive, slow_reader), 5 * WRITE_TIMEOUT)
    assert cancelled.is_set() and [m["type"] for m in taken] == ["http.response.start"]
