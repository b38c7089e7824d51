"""qmill-gateway (the `make run` gateway) against hostile clients, with the functions, Redis
and NATS behind it as `make run` starts them (no worker: every task stays pending, which
is what a long-poll waits on).

One system for the module, with a 1 s client timeout so stalled clients are seen to be
cut off quickly, and a long-poll cap of 300, which is more than the 256 upstream
connections the gateway once shared between long-polls and everything else; event
streams capped at 5 per tenant, with a heartbeat every 0.5 s and a 4 s lifetime.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
import redis

from qmill.server import constants
from qmill.server.launcher import Launcher
from tests.conftest import BELL, wait_for, wait_until

POLL_CAP = 300
# The functions answer only requests addressed to this machine ([server] allowed_hosts).
HOST = b"Host: 127.0.0.1\r\n"
HEALTH = b"GET /health HTTP/1.1\r\n" + HOST
CLIENT_TIMEOUT = 1.0
# Event streams (GET /events) on pending tasks: few, short-lived, with quick heartbeats.
STREAM_CAP = 5
HEARTBEAT = 0.5
STREAM_SECONDS = 4.0


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    config = {
        "server": {
            "max_long_polls_per_tenant": POLL_CAP,
            "client_timeout_seconds": CLIENT_TIMEOUT,
            "max_event_streams_per_tenant": STREAM_CAP,
            "event_heartbeat_seconds": HEARTBEAT,
            "max_event_stream_seconds": STREAM_SECONDS,
        },
        # qmill-gateway and a process per function, as deployments run them.
        "embedded": {"topology": "split"},
    }
    launcher = Launcher(tmp_path_factory.mktemp("gateway"), config)
    try:
        launcher.start(workers=0)
        launcher.wait_healthy()
        yield launcher
    finally:
        launcher.stop(kill=True)


def _gateway(system: Launcher) -> psutil.Process:
    (process,) = [p for p in system.services if p.name in ("gateway", "api")]
    return psutil.Process(process.pid)


def _raw(system: Launcher, data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data`` on a new connection, then read until the server closes it."""
    with socket.create_connection(("127.0.0.1", system.port), timeout=timeout) as sock:
        sock.sendall(data)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
        return out


def _status_and_body(answer: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


async def _long_poll(port: int, task_id: str) -> tuple[int, dict[str, object]]:
    """``GET /tasks/{id}?wait=30`` on a connection of its own. (Not with httpx: the e2e
    conformance hook would check 300 answers in this test's event loop, seconds of CPU.)"""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"GET /tasks/{task_id}?wait=30 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    writer.write(head.encode())
    answer = await reader.read()
    writer.close()
    return _status_and_body(answer)


async def test_long_polls_leave_health_and_short_requests_alone(system: Launcher) -> None:
    """300 open long-polls once held all 256 upstream connections: /health took 29 s."""
    key = constants.long_polls_key(constants.ANONYMOUS_TENANT)
    store = redis.Redis.from_url(system.redis_url)
    async with httpx.AsyncClient(base_url=system.url, timeout=60) as client:
        created = [
            (await client.post("/tasks", json={"quantum_circuit": BELL, "shots": 10})).json()
            for _ in range(2)
        ]
        pending, other = (task["task_id"] for task in created)
        polls: list[asyncio.Task[tuple[int, dict[str, object]]]] = []

        def all_held() -> bool:
            return bool(store.zcard(key) >= len(polls))

        for _ in range(POLL_CAP // 50):  # in steps, each seen open (its slot held) in Redis
            polls += [asyncio.create_task(_long_poll(system.port, pending)) for _ in range(50)]
            await wait_for(all_held, 20)
        assert store.zcard(key) == POLL_CAP

        async with httpx.AsyncClient(base_url=system.url, timeout=60) as other_client:
            started = time.monotonic()
            health = await other_client.get("/health")
            short = await other_client.get(f"/tasks/{other}")
            took = time.monotonic() - started
            # One more long-poll than the tenant may hold: refused at once, told when to retry.
            refused = await other_client.get(f"/tasks/{pending}", params={"wait": "30"})
        assert health.status_code == 200 and short.status_code == 200
        assert took < 5, f"/health and a short GET took {took:.1f} s with long-polls open"
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert "max_long_polls_per_tenant" in refused.json()["detail"]

        # Cancelling the task ends every long-poll at once, each with the task as it is.
        assert (await client.delete(f"/tasks/{pending}")).status_code == 200
        answers = await asyncio.wait_for(asyncio.gather(*polls), 30)
    assert {(status, body.get("status")) for status, body in answers} == {(200, "cancelled")}
    assert store.zcard(key) == 0
    store.close()


def test_oversized_headers_get_431_without_growing_the_gateway(system: Launcher) -> None:
    """Four 100 MB headers took the gateway from 209 MB to 1.1 GB, then got a 200."""
    gateway = _gateway(system)
    before = gateway.memory_info().rss
    big = HEALTH + b"X-Big: " + b"a" * (16 << 20) + b"\r\n\r\n"
    for _ in range(4):
        status, body = _status_and_body(_raw(system, big))
        assert status == 431 and body["allowed"] == 32 * 1024
    many = b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 100) for i in range(400))
    status, _ = _status_and_body(_raw(system, HEALTH + many + b"\r\n"))
    assert status == 431
    assert gateway.memory_info().rss - before < 32 << 20
    assert httpx.get(system.url + "/health", timeout=10).status_code == 200


def test_stalled_clients_are_cut_off(system: Launcher) -> None:
    """1500 half-sent heads stayed open past 40 s; a stalled body held its connection too."""
    stalled = []
    for opening in (b"", HEALTH + b"X-A: "):
        for _ in range(20):
            sock = socket.create_connection(("127.0.0.1", system.port), timeout=10)
            sock.sendall(opening)
            stalled.append(sock)
    started = time.monotonic()
    for sock in stalled:
        with sock:
            assert sock.recv(100) == b""  # closed without an answer, as nginx does
    assert time.monotonic() - started < CLIENT_TIMEOUT + 5

    head = b"POST /tasks HTTP/1.1\r\n" + HOST + b"Content-Type: application/json\r\n"
    status, body = _status_and_body(_raw(system, head + b"Content-Length: 100\r\n\r\n{"))
    assert status == 408 and "request body" in str(body["detail"])


@pytest.mark.parametrize("megabytes", [2, 8])
def test_a_client_that_sends_its_whole_body_first_reads_the_413(
    system: Launcher, megabytes: int
) -> None:
    """urllib (like requests) writes the whole body before it reads: it got ECONNRESET."""
    request = urllib.request.Request(
        system.url + "/tasks",
        data=b"x" * (megabytes << 20),
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 413
    assert "larger than" in json.loads(refused.value.read())["detail"]


def test_one_date_and_one_server_header(system: Launcher) -> None:
    response = httpx.get(system.url + "/health", timeout=10)
    assert len(response.headers.get_list("date")) == 1
    assert len(response.headers.get_list("server")) == 1


@pytest.mark.parametrize(
    "path", [b"/tasks/..", b"/batches/..", b"/tasks/%2e%2e", b"/tasks/./x", b"/tasks/a%2Fb"]
)
def test_dot_segments_and_encoded_slashes_are_nobodys(system: Launcher, path: bytes) -> None:
    """``/tasks/..`` was routed to the result function, and httpx normalised it to ``/``:
    the page. (Sent raw: a client library would normalise it first.)"""
    answer = _raw(system, b"GET " + path + b" HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n")
    assert _status_and_body(answer) == (404, {"detail": "Not Found"})


def test_an_ordinary_request_after_all_that(system: Launcher, tmp_path: Path) -> None:
    response = httpx.post(
        system.url + "/tasks", json={"quantum_circuit": BELL, "shots": 10}, timeout=10
    )
    assert response.status_code == 201


def _open_stream(system: Launcher, task_id: str) -> socket.socket:
    """``GET /events?task=`` on a raw connection that the test may never read."""
    sock = socket.create_connection(("127.0.0.1", system.port), timeout=10)
    sock.sendall(f"GET /events?task={task_id} HTTP/1.1\r\n".encode() + HOST + b"\r\n")
    return sock


def test_event_streams_are_bounded_and_one_that_is_never_read_is_closed(
    system: Launcher,
) -> None:
    """A tenant's streams beyond the cap get 429 at once; clients that never read leave
    the gateway answering others, hold their slots no longer than a stream's lifetime,
    and every stream, read or not, gets heartbeats meanwhile."""
    key = constants.event_streams_key(constants.ANONYMOUS_TENANT)
    store = redis.Redis.from_url(system.redis_url)
    with httpx.Client(base_url=system.url, timeout=30) as client:
        task_id = client.post("/tasks", json={"quantum_circuit": BELL, "shots": 10}).json()
        task_id = task_id["task_id"]
        started = time.monotonic()
        silent = [_open_stream(system, task_id) for _ in range(STREAM_CAP)]  # never read
        try:
            wait_until(lambda: store.zcard(key) == STREAM_CAP, 10)
            refused = client.get("/events", params={"task": task_id})
            assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
            assert "max_event_streams_per_tenant" in refused.json()["detail"]
            health_started = time.monotonic()
            assert client.get("/health").status_code == 200
            assert time.monotonic() - health_started < 5
            # The server closes each at the end of its lifetime (the client would resume).
            wait_until(lambda: store.zcard(key) == 0, STREAM_SECONDS + 10)
            assert time.monotonic() - started < STREAM_SECONDS + 10
            received = silent[0].recv(1 << 20)
        finally:
            for sock in silent:
                sock.close()
        assert b"text/event-stream" in received and b": ping" in received
        assert b"status" in received and b"event: end" not in received  # still pending
    store.close()
