"""Each function also runs on its own under the functions-framework CLI."""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
import time
from pathlib import Path

import httpx
import pytest

from qmill.server.bus import Bus
from qmill.server.store import Stores
from tests.conftest import BELL, REPO, Processes, free_port, wait_port
from tests.openapi_check import off_contract

pytestmark = pytest.mark.e2e


def serve(procs: Processes, name: str, **env: str) -> str:
    return _serve(procs, name, **env)[0]


def _serve(procs: Processes, name: str, **env: str) -> tuple[str, int]:
    """The function's address, and the pid of its functions-framework (gunicorn's arbiter)."""
    port = free_port()
    cli = shutil.which("functions-framework", path=str(Path(sys.executable).parent))
    assert cli is not None
    proc = procs.start(
        [
            cli,
            "--asgi",
            "--target",
            name,
            "--source",
            str(REPO / "functions" / name / "main.py"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        **env,
    )
    wait_port(port, timeout=60)
    return f"http://127.0.0.1:{port}", proc.pid


async def test_each_function_serves_its_route(procs: Processes, stores: Stores, bus: Bus) -> None:
    submit, result, health = (serve(procs, n) for n in ("submit", "result", "health"))
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.get(f"{health}/health")).json()["status"] == "healthy"
        created = await client.post(f"{submit}/tasks", json={"quantum_circuit": BELL, "shots": 8})
        assert created.status_code == 201
        task_id = created.json()["task_id"]
        got = await client.get(f"{result}/tasks/{task_id}")
        assert got.status_code == 200 and got.json()["status"] == "pending"
        # Each function exposes its own Prometheus metrics.
        scraped = (await client.get(f"{submit}/metrics")).text
        assert 'qmill_tasks_accepted_total{function="submit"} 1.0' in scraped
        assert 'qmill_http_requests_total{function="submit",method="POST",status="201"}' in (
            scraped
        )
        # Each answers its probes about itself (no Host check: kubelet asks by address),
        # and echoes a valid request id, or makes one.
        for base in (submit, result, health):
            live = await client.get(f"{base}/livez", headers={"host": "10.1.2.3:8080"})
            assert (live.status_code, live.json()) == (200, {"status": "alive"})
            ready = (await client.get(f"{base}/readyz")).json()
            assert ready == {"status": "ready", "down": [], "checks": {"nats": True, "redis": True}}
        echoed = await client.get(f"{result}/tasks/{task_id}", headers={"x-request-id": "req-1"})
        assert echoed.headers["x-request-id"] == "req-1"
        made = await client.get(f"{result}/tasks/{task_id}", headers={"x-request-id": "a b"})
        assert len(made.headers["x-request-id"]) == 32
        # A function answers only for its own route.
        assert (await client.put(f"{submit}/tasks")).status_code == 405
        listed = await client.get(f"{submit}/tasks")  # the listing is the submit function's
        assert listed.status_code == 200
        assert task_id in [task["task_id"] for task in listed.json()["tasks"]]
        with off_contract("a function called directly, for another function's path"):
            assert (await client.post(f"{health}/tasks", json={})).status_code == 404
            assert (await client.get(f"{result}/health")).status_code == 404
        spec = await client.get(f"{health}/openapi.json")
        assert spec.json()["openapi"] == "3.1.0" and {} in spec.json()["security"]


_LISTED = re.compile(
    r'^qmill_http_requests_total\{function="submit",method="GET",status="200"\} (\S+)$'
)


def _listed(exposition: str) -> float | None:
    found = [float(m[1]) for line in exposition.splitlines() if (m := _LISTED.match(line))]
    return found[0] if found else None


async def test_a_function_in_several_processes_reports_their_sum(
    procs: Processes, tmp_path: Path
) -> None:
    """Under WORKERS=2 a scrape is answered by either gunicorn process: each counting
    alone, 40 requests were scraped as 35, 35, 5, 5. Now every scrape gives the sum, from
    the instance's directory under the temporary directory, which the arbiter empties."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    base, arbiter = _serve(procs, "submit", WORKERS="2", TMPDIR=str(temp))
    shared = temp / f"qmill-metrics-{arbiter}"
    sent = 0
    # Requests, on new connections (no keep-alive), a few at once, until both processes
    # have counted some: the port opens before gunicorn's processes are ready, and the
    # first one up may take them all.
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient(
        timeout=10, limits=httpx.Limits(max_keepalive_connections=0)
    ) as client:
        while (counted := len(list(shared.glob("counter_*.db")))) < 2 or sent < 10:
            assert time.monotonic() < deadline, f"{sent} requests, {counted} processes' counts"
            answers = await asyncio.gather(*(client.get(f"{base}/tasks") for _ in range(5)))
            assert [a.status_code for a in answers] == [200] * 5
            sent += 5
        scraped = [_listed((await client.get(f"{base}/metrics")).text) for _ in range(8)]
    assert scraped == [float(sent)] * 8
    assert len(list(shared.glob("counter_*.db"))) == 2  # the two processes', no more
