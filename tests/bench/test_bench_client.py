"""The bench's lean HTTP client and its configuration parsing, against a tiny local server.

A unit test of the load generator, not of the system: a real asyncio HTTP/1.1 server on
loopback answers with Content-Length or chunked bodies and can close idle connections, so
the client's keep-alive, reconnect and no-POST-retry rules are exercised in milliseconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from bench.client import Client, ClientError
from bench.system import CONFIG_KEYS, DEFAULT_CONFIGS, SystemConfig, label_process


class _Server:
    """Answers every request with its method, path and body as JSON; ``close_next`` makes
    it close the connection on the next request instead of answering."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[tuple[str, str, bytes]] = []
        self.close_next = False
        self.chunked = False

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                method, path, _ = lines[0].split(" ")
                length = 0
                for line in lines[1:]:
                    if line.lower().startswith("content-length:"):
                        length = int(line.split(":")[1])
                body = await reader.readexactly(length) if length else b""
                self.requests.append((method, path, body))
                if self.close_next:
                    self.close_next = False
                    break
                answer = b'{"method":"%s","path":"%s","n":%d}' % (
                    method.encode(),
                    path.encode(),
                    len(body),
                )
                if self.chunked:
                    half = len(answer) // 2
                    chunks = b"".join(
                        b"%x\r\n%s\r\n" % (len(p), p) for p in (answer[:half], answer[half:])
                    )
                    writer.write(
                        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
                        + chunks
                        + b"0\r\n\r\n"
                    )
                else:
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(answer), answer)
                    )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def serving() -> AsyncIterator[tuple[_Server, Client]]:
    state = _Server()
    server = await asyncio.start_server(state.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = Client(f"http://127.0.0.1:{port}")
    try:
        yield state, client
    finally:
        client.close()
        server.close()
        await server.wait_closed()


async def test_requests_share_one_keep_alive_connection() -> None:
    async with serving() as (server, client):
        conn = client.connection()
        first = await client.submit(conn, "OPENQASM 3.0;", 16)
        again = await client.submit(conn, "OPENQASM 3.0;", 16)
        got = await client.get(conn, "/tasks/abc?wait=5")
        assert first.status == 200 and first.json()["method"] == "POST"
        assert first.json()["path"] == "/tasks" and again.body == first.body
        assert got.json() == {"method": "GET", "path": "/tasks/abc?wait=5", "n": 0}
        assert server.connections == 1
        assert server.requests[0][2] == b'{"quantum_circuit": "OPENQASM 3.0;", "shots": 16}'


async def test_chunked_answers_and_many_connections() -> None:
    async with serving() as (server, client):
        server.chunked = True
        conns = [client.connection() for _ in range(4)]
        answers = await asyncio.gather(*(client.get(c, f"/tasks/{i}") for i, c in enumerate(conns)))
        assert [a.status for a in answers] == [201] * 4
        assert [a.json()["path"] for a in answers] == [f"/tasks/{i}" for i in range(4)]
        assert server.connections == 4


async def test_a_closed_idle_connection_is_reopened_and_a_get_retried_once() -> None:
    async with serving() as (server, client):
        conn = client.connection()
        await client.get(conn, "/a")
        server.close_next = True  # the server drops the connection instead of answering
        answer = await client.get(conn, "/b")
        assert answer.json()["path"] == "/b"
        assert [r[1] for r in server.requests] == ["/a", "/b", "/b"]
        assert server.connections == 2 and client.reconnects == 1


async def test_a_post_is_never_sent_twice() -> None:
    async with serving() as (server, client):
        conn = client.connection()
        server.close_next = True
        with pytest.raises(ClientError):
            await client.post_json(conn, "/tasks", {"x": 1})
        assert [r[0] for r in server.requests] == ["POST"]
        # The next request opens a fresh connection.
        assert (await client.post_json(conn, "/tasks", {"x": 2})).json()["n"] == 7


def test_only_plain_http_urls() -> None:
    with pytest.raises(ValueError, match="only http"):
        Client("https://example.com")


def test_config_specs_name_issue_15_switches() -> None:
    parsed = [SystemConfig.parse(spec) for spec in DEFAULT_CONFIGS]
    assert [c.name for c in parsed] == ["before", "combined", "shipped"]
    before = parsed[0]
    assert before.env()[CONFIG_KEYS["topology"]] == "split"
    assert before.env()["QMILL_WORKER__BATCH_MAX_TASKS"] == "1"
    assert "heavy" not in before.workloads and "heavy" in parsed[2].workloads
    assert parsed[2].env() == {"QMILL_LOG__LEVEL": "WARNING"}  # shipped: nothing set
    assert SystemConfig.parse(before.spec()) == before
    with pytest.raises(ValueError, match="unknown key"):
        SystemConfig.parse("x:topology2=combined")


class _Proc:
    def __init__(self, *cmd: str) -> None:
        self._cmd = list(cmd)

    def cmdline(self) -> list[str]:
        return self._cmd


@pytest.mark.parametrize(
    ("cmd", "label"),
    [
        (("/v/bin/python", "/v/bin/qmill-api"), "api"),
        (("python", "-m", "qmill.server.combined"), "api"),
        (("python", "/v/bin/qmill-gateway"), "gateway"),
        (("python", "functions-framework", "--target", "submit"), "function:submit"),
        (("python", "/v/bin/qmill", "up"), "supervisor"),
    ],
)
def test_process_labels(cmd: tuple[str, ...], label: str) -> None:
    assert label_process(_Proc(*cmd)) == label  # type: ignore[arg-type]
