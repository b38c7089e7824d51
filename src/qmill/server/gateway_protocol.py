"""The gateway's HTTP/1.1 connections: uvicorn's httptools protocol with the limits nginx
puts on a client and uvicorn does not.

uvicorn (0.54, with httptools) reads a request's line and headers without a size limit
(four 100 MB headers took the gateway from 209 MB to 1.1 GB, then got a 200) and
without a time limit (a fresh connection that never finishes its headers stays open for
ever: 1500 of them were all open after 40 s). Its ``h11_max_incomplete_event_size``
applies only to the pure-Python h11 protocol, and answers 400. So this subclass adds:

* a size limit on the request line and headers (``[server] max_header_bytes``): over
  it, 431 and the connection closes, before the parser has buffered much more than that;
* a time limit on them (``[server] client_timeout_seconds``), from the connection's
  start (or, on a kept-alive connection, the request's first byte) to the end of the
  headers: past it the connection is closed without an answer, as nginx's
  ``client_header_timeout`` does (the gateway bounds the body's pauses with the same
  setting);
* a lingering close: a connection closed while the client is still sending its request
  (a 413 answered from ``Content-Length``, a 431, a 400) is half-closed after the
  answer and whatever still arrives is read and discarded, up to
  ``[server] lingering_seconds`` (at most 5 s between reads), before it is closed. A
  client that writes its whole body before it reads (Python's urllib and requests)
  otherwise gets a reset instead of the answer: the kernel resets a connection closed
  with unread data.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, ClassVar, cast

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from qmill.server.config import ServerSettings
from qmill.server.errors import HeadersTooLarge, RequestError

# nginx's lingering_timeout: a lingering client that sends nothing for this long is done.
LINGERING_READ_SECONDS = 5.0
# What a request line costs beyond its URL ("GET ", " HTTP/1.1\r\n"), and a header
# beyond its name and value (": ", "\r\n"): so callbacks and raw bytes count alike.
_LINE_OVERHEAD = 20
_HEADER_OVERHEAD = 4


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_header_bytes: int
    header_timeout: float
    lingering: float

    @classmethod
    def of(cls, settings: ServerSettings) -> ConnectionLimits:
        return cls(
            settings.max_header_bytes, settings.client_timeout_seconds, settings.lingering_seconds
        )


def protocol(limits: ConnectionLimits) -> type[GatewayProtocol]:
    """The protocol class to give uvicorn (``http=``), bound to ``limits``."""
    return type("BoundGatewayProtocol", (GatewayProtocol,), {"limits": limits})


class _Transport:
    """The connection's transport as uvicorn's request cycles see it: ``close`` lingers
    when the client may still be sending (the protocol decides); the rest is the real
    transport's."""

    def __init__(self, transport: asyncio.Transport, close: Any) -> None:
        self._transport = transport
        self._close = close

    def close(self) -> None:
        self._close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GatewayProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header size limit, a header timeout and a
    lingering close (see the module docstring)."""

    limits: ClassVar[ConnectionLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._real: asyncio.Transport | None = None
        # Bytes received since the current request's head began, while it is incomplete.
        self._head_bytes = 0
        self._reading_head = True
        # A request has begun and its body has not all arrived: closing now would reset.
        self._in_message = False
        self._refused: RequestError | None = None
        self._header_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._linger_until = 0.0

    # --- connection -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._real = transport
        self.transport = cast(asyncio.Transport, _Transport(transport, self._close))
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        self._in_message = False  # nothing left to linger on
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._linger_timer is not None:  # answered and closing: discard
            self._linger_read()
            return
        if self._refused is not None:
            return
        if self._reading_head:
            self._head_bytes += len(data)
        super().data_received(data)
        over = self._head_bytes > self.limits.max_header_bytes
        if self._refused is None and self._reading_head and over:
            self._refused = HeadersTooLarge(self.limits.max_header_bytes)
        if self._refused is not None and not self._real_closing():
            self._refuse(self._refused)

    # --- parser callbacks -------------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self._refused is not None:
            return
        self._in_message = True
        if self._header_timer is None:  # a request on a kept-alive connection: time it too
            self._arm_header_timer()
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        if self._refused is None:
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._refused is None:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._refused is not None:
            return
        # The head may have ended in the chunk that took it over the limit.
        size = len(self.url) + _LINE_OVERHEAD
        size += sum(len(n) + len(v) + _HEADER_OVERHEAD for n, v in self.headers)
        if size > self.limits.max_header_bytes:
            self._refused = HeadersTooLarge(self.limits.max_header_bytes)
            return
        self._reading_head = False
        self._cancel_header_timer()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._refused is None:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused is not None:
            return
        self._in_message = False
        self._reading_head = True  # what comes next is the next request's head
        self._head_bytes = 0
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # The next request's head began while this one was answered (and nothing else is
        # running): time it from now. An idle connection is uvicorn's keep-alive timeout's.
        idle = self.cycle is None or self.cycle.response_complete
        if idle and self._head_bytes > 0 and not self._real_closing():
            self._arm_header_timer()

    # --- limits -----------------------------------------------------------------------------
    def _refuse(self, error: RequestError) -> None:
        """Answer ``error`` as JSON and close (lingering: the client is mid-request)."""
        fields = {"detail": error.message, "allowed": getattr(error, "allowed", None)}
        body = json.dumps({k: v for k, v in fields.items() if v is not None})
        content = [STATUS_LINE[error.status_code]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: application/json\r\n",
                b"content-length: %d\r\n" % len(body),
                b"connection: close\r\n\r\n",
                body.encode(),
            ]
        )
        self.transport.write(b"".join(content))
        self._close()

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(
            self.limits.header_timeout, self._header_timed_out
        )

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if self.cycle is not None and not self.cycle.response_complete:
            return  # one is being answered; the next head is timed when it ends
        if self._real is not None:
            self._real.close()  # silently, as nginx does: the client is not listening

    # --- closing ----------------------------------------------------------------------------
    def _real_closing(self) -> bool:
        return self._real is None or self._real.is_closing()

    def _close(self) -> None:
        """Close now, or linger if the client may still be sending this request."""
        real = self._real
        if real is None or real.is_closing():
            return
        if not self._in_message or self.limits.lingering <= 0 or not real.can_write_eof():
            real.close()
            return
        self._cancel_header_timer()
        self._unset_keepalive_if_required()
        real.write_eof()  # the answer is sent, then FIN: the client reads it, then EOF
        self.flow.resume_reading()
        self._linger_until = self.loop.time() + self.limits.lingering
        self._linger_read()

    def _linger_read(self) -> None:
        """Some data was discarded (or lingering began): wait for more, within bounds."""
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        left = self._linger_until - self.loop.time()
        if left <= 0:
            self._linger_done()
            return
        self._linger_timer = self.loop.call_later(
            min(LINGERING_READ_SECONDS, left), self._linger_done
        )

    def _linger_done(self) -> None:
        if self._real is not None:
            self._real.close()

    def _cancel_timers(self) -> None:
        self._cancel_header_timer()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
