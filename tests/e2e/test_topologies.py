"""`qmill up` in both topologies (``[embedded] topology``): the combined default (one API
process) and split (qmill-gateway and a process per function, as deployments run them)
run the processes they say, and answer the same requests with the same bytes."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator

import httpx
import psutil
import pytest

from tests.conftest import BELL, wait_for
from tests.e2e.system import System, running_system

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    tmp = tmp_path_factory.mktemp("split")
    one_worker = {"QMILL_WORKER__PROCESSES": "1"}
    with running_system(tmp, QMILL_EMBEDDED__TOPOLOGY="split", **one_worker) as running:
        yield running


def _commands(system: System) -> list[str]:
    found = []
    for proc in system.tree():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                found.append(" ".join(proc.cmdline()))
        except psutil.Error:
            continue
    return found


def _api(system: System) -> list[psutil.Process]:
    found = []
    for proc in system.tree():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and "qmill.server.combined" in proc.cmdline():
                found.append(proc)
        except psutil.Error:
            continue
    return found


def test_each_topology_runs_its_processes(default_system: System, split: System) -> None:
    combined = _commands(default_system)
    assert sum("qmill.server.combined" in c for c in combined) == 1
    assert not any("qmill-gateway" in c or "functions-framework" in c for c in combined)
    apart = _commands(split)
    assert sum("qmill-gateway" in c for c in apart) == 1
    targets = {c.split("--target ")[1].split()[0] for c in apart if "functions-framework" in c}
    assert targets == {"submit", "result", "health"}
    assert not any("qmill.server.combined" in c for c in apart)
    for system, topology in ((default_system, "combined"), (split, "split")):
        assert f"topology {topology}" in system.log.read_text()


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(request)
        if len(request) > 1 << 20:  # refused unread: the server lingers until we are done
            sock.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
        return out


def _request(method: str, path: str, body: bytes = b"", *headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *headers, "Connection: close"]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return "\r\n".join(lines).encode() + b"\r\n\r\n" + body


# What differs between two systems for the same request: dates, ids, times, counts.
_VARYING = [
    (rb"date: [^\r]*", b"date: -"),
    (rb"x-request-id: [0-9a-f]{32}", b"x-request-id: -"),  # made by the front door
    (rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", b"ID"),
    (rb'"(\w+_at|\w+_seconds|worker_id)":("[^"]*"|[0-9.e-]+)', rb'"\1":-'),
    (rb'"result":\{[^}]*\}', b'"result":-'),
    (rb"\r\n[0-9a-f]+\r\n", b"\r\nCHUNK\r\n"),  # an event stream's chunk sizes
    # An event's version: one counter per system, so it depends on what ran before.
    (rb"id: \d+", b"id: -"),
    (rb'"seq":\s*\d+', b'"seq":-'),
]


def _normal(answer: bytes) -> bytes:
    """The answer with what varies masked; its Content-Length checked against its body
    first (a HEAD's is checked against its GET's by the test)."""
    head, _, body = answer.partition(b"\r\n\r\n")
    length = re.search(rb"content-length: (\d+)", head)
    if length is not None and body:
        assert int(length.group(1)) == len(body), answer[:300]
    head = re.sub(rb"content-length: \d+", b"content-length: -", head)
    answer = head + b"\r\n\r\n" + body
    for pattern, replacement in _VARYING:
        answer = re.sub(pattern, replacement, answer)
    return answer


def _length(answer: bytes) -> bytes:
    found = re.search(rb"content-length: (\d+)", answer.partition(b"\r\n\r\n")[0])
    assert found is not None, answer[:300]
    return found.group(1)


def test_the_topologies_answer_alike(default_system: System, split: System) -> None:
    body = json.dumps({"quantum_circuit": BELL, "shots": 10, "seed": 7}).encode()
    as_json = "Content-Type: application/json"
    tasks = {}
    for system in (default_system, split):
        with httpx.Client(base_url=system.url, timeout=30) as client:
            task_id = client.post(
                "/tasks", content=body, headers={"content-type": "application/json"}
            ).json()["task_id"]
            done = client.get(f"/tasks/{task_id}", params={"wait": "20"}).json()
            assert done["status"] == "completed"
            tasks[system.url] = task_id
    cases = [
        ("GET", "/health", b""),
        ("HEAD", "/health", b""),
        ("GET", "/nope", b""),
        ("TRACE", "/tasks", b""),
        ("DELETE", "/health", b""),
        ("POST", "/tasks", b"{bad", as_json),
        ("POST", "/tasks", body, "Content-Type: text/plain"),
        ("POST", "/tasks", b"x" * 2_000_000, as_json),
        ("POST", "/tasks", body, as_json, "Idempotency-Key: same"),
        ("POST", "/tasks", body, as_json, "Idempotency-Key: same"),
        ("POST", "/tasks", body, as_json, "Origin: https://evil.example"),
        ("POST", "/tasks", body, as_json, "Transfer-Encoding: chunked"),
        ("GET", "/health", b"", "Host: 127.0.0.1"),  # a second Host
        ("GET", "/health", b"", "X-Padded:  v "),
        ("GET", "/tasks/{id}", b""),
        ("HEAD", "/tasks/{id}", b""),
        ("GET", "/tasks/{id}?wait=1", b"", "Accept-Encoding: gzip"),
        ("GET", "/tasks/{id}?bogus=1", b""),
        ("GET", "/tasks/a%2Fb", b""),
        ("GET", "/events?task={id}", b""),
        ("GET", "/openapi.json", b""),
    ]
    for method, path, content, *headers in cases:
        answers = []
        for system in (default_system, split):
            target = path.replace("{id}", tasks[system.url])
            port = int(system.url.rsplit(":", 1)[1])
            answers.append(_normal(_raw(port, _request(method, target, content, *headers))))
        assert answers[0] == answers[1], (method, path, headers)
    for system in (default_system, split):  # a HEAD says the length its GET has
        port = int(system.url.rsplit(":", 1)[1])
        lengths = {
            _length(_raw(port, _request(m, f"/tasks/{tasks[system.url]}"))) for m in ("GET", "HEAD")
        }
        assert len(lengths) == 1, lengths


async def test_a_killed_api_process_is_restarted(default_system: System) -> None:
    (victim,) = _api(default_system)
    victim.kill()

    def replaced() -> bool:
        # One look at the process list: between two looks the restart may have begun.
        now = _api(default_system)
        return len(now) == 1 and now[0].pid != victim.pid

    await wait_for(replaced, 30)

    async def healthy() -> bool:
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                return (await client.get(default_system.url + "/health")).status_code == 200
        except httpx.HTTPError:
            return False

    await wait_for(healthy, 30)
    async with httpx.AsyncClient(base_url=default_system.url, timeout=30) as client:
        task_id = (await client.post("/tasks", json={"quantum_circuit": BELL})).json()["task_id"]
        done = await client.get(f"/tasks/{task_id}", params={"wait": "20"})
        assert done.json()["status"] == "completed"
