"""The event stream's ASGI answer (`qmill.server.events.EventResponse`) with a client
that stops reading: pure asyncio, a `send` that never completes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from qmill.server.events import EventResponse


async def test_a_write_the_client_never_takes_closes_the_stream() -> None:
    released: list[str] = []
    stack = contextlib.AsyncExitStack()
    stack.push_async_callback(lambda: asyncio.sleep(0, released.append("slot")))
    sent: list[dict[str, Any]] = []

    async def body() -> AsyncIterator[bytes]:
        while True:  # a stream that never ends by itself
            yield b": ping\n\n"

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if len(sent) > 2:
            await asyncio.Event().wait()  # the socket buffers are full: blocks for ever

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()  # the client never leaves either
        return {}

    response = EventResponse(body(), stack, write_timeout=0.2)
    started = time.monotonic()
    await asyncio.wait_for(response({"type": "http"}, receive, send), 5)
    assert time.monotonic() - started < 2
    assert released == ["slot"] and len(sent) == 3
    assert all(k != b"content-length" for k, _ in sent[0]["headers"])
