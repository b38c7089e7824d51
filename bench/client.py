"""The load generator's HTTP client: lean asyncio HTTP/1.1 over keep-alive connections.

Why not httpx: on this machine the bench's httpx client cost ~5 ms of CPU per Bell task
(POST + polls), as much as the system it measured and on the same two cores, so the
benchmark partly measured itself (issue 15). A client per logical user needs very little:
one keep-alive connection, requests whose bytes are built with one format (the JSON body
of a task is encoded once per distinct program and reused), and a response parser.

Why this and not a library: httptools (llhttp, the parser uvicorn uses) is already in
the lock, so parsing costs C code and no new dependency; aiohttp is not in the lock and
would add its own per-request machinery (headers multidicts, streams) that this client
does not need. What this client deliberately does not do: TLS, redirects, chunked
*requests*, proxies, cookies, compression. Responses may be Content-Length or chunked
(llhttp handles both).

One `Connection` is one asyncio Protocol with one request in flight at a time: a bench
client is closed-loop (request, wait, next request), so each logical client owns a
connection (`Client.connection`) and no pool is needed. A connection the server closed
while idle (keep-alive timeout) is reopened before the next request; a request whose
connection dies before any byte of the answer arrived is retried once on a fresh one
only when it is idempotent (GET), so a POST is never sent twice.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import httptools

JSON_HEADERS = b"Content-Type: application/json\r\n"


class ClientError(Exception):
    """A connection failed or an answer could not be parsed."""


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body.decode())  # str: skips json's encoding detection

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time."""

    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._chunks: list[bytes] = []
        self._waiter: asyncio.Future[Response] | None = None
        self._received = False  # any byte of the current answer
        self._keep_alive = True
        self.requests = 0
        self.reconnects = 0

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ClientError(f"bad HTTP answer: {exc}"))
            self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._fail(ClientError(f"connection closed{': ' + str(exc) if exc else ''}"))

    # -- httptools callbacks (only those defined are wired, so no per-header cost) --

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        response = Response(self._parser.get_status_code(), b"".join(self._chunks))
        self._chunks = []
        self._keep_alive = self._parser.should_keep_alive()
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(response)
        if not self._keep_alive:
            self._close()

    # -- requests --

    def _fail(self, exc: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        self._parser = httptools.HttpResponseParser(self)
        self._chunks = []
        await loop.create_connection(lambda: self, self._host, self._port)

    async def send(self, head: bytes, body: bytes, *, idempotent: bool) -> Response:
        """Send one request (its head without the final blank line, and its body)."""
        for attempt in (0, 1):
            if self._transport is None or self._transport.is_closing():
                if self.requests:
                    self.reconnects += 1
                await self._connect()
            assert self._transport is not None
            self._waiter = asyncio.get_running_loop().create_future()
            self._received = False
            self._transport.write(head + b"\r\n" + body if body else head + b"\r\n")
            self.requests += 1
            try:
                return await self._waiter
            except asyncio.CancelledError:
                self._close()  # its answer may still come: never read it as the next one's
                raise
            except ClientError:
                if attempt or self._received or not idempotent:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._close()


class Client:
    """Builds requests for one base URL; each logical client takes its own `connection`."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"only http://host:port URLs: {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self._prefix = parts.path.rstrip("/")
        self._host_line = f"Host: {self.host}:{self.port}\r\n".encode()
        self._bodies: dict[tuple[str, int], bytes] = {}
        self._connections: list[Connection] = []

    def connection(self) -> Connection:
        conn = Connection(self.host, self.port)
        self._connections.append(conn)
        return conn

    def _head(self, method: str, path: str, extra: bytes = b"") -> bytes:
        line = f"{method} {self._prefix}{path} HTTP/1.1\r\n".encode()
        return line + self._host_line + extra

    async def get(self, conn: Connection, path: str) -> Response:
        return await conn.send(self._head("GET", path), b"", idempotent=True)

    async def post_json(self, conn: Connection, path: str, payload: Any) -> Response:
        body = json.dumps(payload, separators=(",", ":")).encode()
        return await self.post_bytes(conn, path, body)

    async def post_bytes(self, conn: Connection, path: str, body: bytes) -> Response:
        extra = JSON_HEADERS + b"Content-Length: %d\r\n" % len(body)
        return await conn.send(self._head("POST", path, extra), body, idempotent=False)

    async def submit(self, conn: Connection, qasm: str, shots: int) -> Response:
        """``POST /tasks`` with the body encoded once per distinct (program, shots)."""
        key = (qasm, shots)
        body = self._bodies.get(key)
        if body is None:
            body = json.dumps({"quantum_circuit": qasm, "shots": shots}).encode()
            self._bodies[key] = body
        return await self.post_bytes(conn, "/tasks", body)

    @property
    def reconnects(self) -> int:
        return sum(c.reconnects for c in self._connections)

    def close(self) -> None:
        for conn in self._connections:
            conn.close()
        self._connections.clear()
