"""`qmill.Client`, `qmill.AsyncClient` and the `qmill` CLI against the real system.

The system runs with API keys on, so every call here also proves the key is sent (and
that a missing one is refused the documented way). The CLI runs as a real process, so
its exit codes and its stdout/stderr split are what a shell script would see.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from qiskit import QuantumCircuit

from qmill import AsyncClient, Client
from qmill import client as qc
from qmill.server.auth import hash_key
from tests.conftest import BELL, free_port
from tests.e2e.system import System, running_system
from tests.integration.test_worker import runaway_circuit

pytestmark = pytest.mark.e2e

KEY = "qm_client-e2e-key-0001"
UNKNOWN = "5b8e3f4e-0000-4000-8000-000000000000"
BAD_QASM = "OPENQASM 3.0;\nqubit q;\nfoo q;\n"


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with running_system(
        tmp_path_factory.mktemp("client"),
        QMILL_AUTH__ENABLED="true",
        QMILL_AUTH__API_KEY_HASHES=json.dumps([hash_key(KEY)]),
    ) as running:
        yield running


@pytest.fixture
def qm(system: System) -> Iterator[Client]:
    with Client(system.url, api_key=KEY, timeout=30) as client:
        yield client


def qmill(system: System, *args: str, key: str | None = KEY, stdin: str | None = None) -> Run:
    """Run the installed `qmill` CLI as a script would, configured by the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QMILL_")}
    env["QMILL_URL"] = system.url
    if key is not None:
        env["QMILL_API_KEY"] = key
    done = subprocess.run(
        [str(Path(sys.executable).parent / "qmill"), *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return Run(done.returncode, done.stdout, done.stderr)


class Run:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:  # shown when an assertion fails
        return f"exit {self.code}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


def ghz(n: int) -> QuantumCircuit:
    circuit = QuantumCircuit(n, n)
    circuit.h(0)
    for i in range(n - 1):
        circuit.cx(i, i + 1)
    circuit.measure(range(n), range(n))
    return circuit


# --- Python ----------------------------------------------------------------------------------


def test_run_a_qasm_string_and_a_quantum_circuit(qm: Client) -> None:
    bell = qm.run(BELL, shots=256)
    assert bell.status == "completed" and set(bell.counts or {}) <= {"00", "11"}
    assert sum((bell.counts or {}).values()) == 256
    assert bell.qubits == 2 and bell.completed_at is not None
    three = qm.run(ghz(3), shots=300)
    assert set(three.counts or {}) <= {"000", "111"} and sum((three.counts or {}).values()) == 300


def test_batch_then_results(qm: Client) -> None:
    task_ids = qm.submit_batch([BELL, ghz(3), BELL], shots=64)
    assert len(task_ids) == 3
    counts = [qm.result(t, timeout=60).counts or {} for t in task_ids]
    assert [sum(c.values()) for c in counts] == [64, 64, 64]
    assert set(counts[1]) <= {"000", "111"}


# Three qubits in superposition: 8 outcomes, so two seeds practically never agree.
SPREAD = 'OPENQASM 3.0; include "stdgates.inc"; qubit[3] q; bit[3] c; h q; c = measure q;'


class Recording(httpx.HTTPTransport):
    """The real transport, remembering each request's method and path with its query."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(f"{request.method} {request.url.raw_path.decode()}")
        return super().handle_request(request)


def test_a_batch_waited_on_has_a_seed_per_circuit(system: System, qm: Client) -> None:
    batch = qm.submit_batch([SPREAD, SPREAD], shots=200, seed=11)
    recording = Recording()
    seen: list[dict[str, int]] = []
    with Client(system.url, api_key=KEY, timeout=30, transport=recording) as streaming:
        done = streaming.wait_batch(batch, timeout=60, on_update=lambda b: seen.append(b.counts))
    # One event stream for the whole batch, then one read of it: no long-poll.
    assert recording.requests == [
        f"GET /events?batch={batch.batch_id}",
        f"GET /batches/{batch.batch_id}",
    ]
    assert seen and sum(seen[-1].values()) == 2 and seen[-1].get("completed") == 2
    assert done.done and done.counts["completed"] == 2 and done.task_ids == batch.task_ids
    first, second = done.tasks
    assert (first.seed, second.seed) == (11, 12)
    assert first.counts != second.counts  # identical circuits, their own seeds
    again = qm.wait_batch(qm.submit_batch([SPREAD, SPREAD], shots=200, seed=11), timeout=60)
    assert [t.counts for t in again.tasks] == [first.counts, second.counts]
    assert qm.get_batch(batch.batch_id or "").done


def test_cancel_a_batch_and_read_it_back(qm: Client) -> None:
    batch = qm.submit_batch([BELL, runaway_circuit()], shots=10)
    qm.wait(batch[0], timeout=60)
    with pytest.raises(qc.BatchTimeoutError) as waited:
        qm.wait_batch(batch, timeout=0.5)
    assert not waited.value.batch.done
    cancelled = qm.cancel_batch(batch)
    assert [t.status for t in cancelled.tasks] == ["completed", "cancelled"]
    assert cancelled.done and cancelled.counts["cancelled"] == 1
    with pytest.raises(qc.TaskNotFoundError):
        qm.cancel_batch(UNKNOWN)


async def test_async_client_runs_tasks_concurrently(system: System) -> None:
    async with AsyncClient(system.url, api_key=KEY) as qm:
        tasks = await asyncio.gather(*(qm.run(BELL, shots=100, seed=42) for _ in range(4)))
    assert {t.status for t in tasks} == {"completed"}
    assert len({t.task_id for t in tasks}) == 4
    assert all(t.counts == tasks[0].counts for t in tasks)  # same seed, same counts


def test_api_errors_are_typed(qm: Client, system: System) -> None:
    with pytest.raises(qc.InvalidCircuitError) as bad:
        qm.submit(BAD_QASM)
    assert (bad.value.line, bad.value.column) == (3, 1)
    with pytest.raises(qc.LimitExceededError) as big:
        qm.submit(BELL, shots=10**9)
    assert big.value.limit == "shots"
    with pytest.raises(qc.TaskNotFoundError):
        qm.get(UNKNOWN)
    with Client(system.url, api_key="qm_wrong") as stranger, pytest.raises(qc.AuthenticationError):
        stranger.submit(BELL)


def test_cancel_and_timeout(qm: Client) -> None:
    task_id = qm.submit(runaway_circuit(), shots=10)  # minutes of simulation
    with pytest.raises(qc.ResultTimeoutError) as waited:
        qm.result(task_id, timeout=1)
    assert waited.value.task.status in ("pending", "processing")
    assert qm.cancel(task_id).status == "cancelled"
    with pytest.raises(qc.TaskCancelledError):
        qm.result(task_id, timeout=30)
    with pytest.raises(qc.ConflictError, match="already cancelled"):
        qm.cancel(task_id)


def test_histogram_svg(qm: Client, system: System) -> None:
    task = qm.run(BELL, shots=128)
    svg = qm.histogram_svg(task.task_id)
    assert svg.startswith("<svg") and 'data-outcome="00"' in svg and 'data-outcome="11"' in svg
    path = f"/tasks/{task.task_id}/histogram.svg"
    with httpx.Client(base_url=system.url, timeout=30) as http:
        response = http.get(path, headers={"Authorization": f"Bearer {KEY}"})
        assert response.headers["content-type"] == "image/svg+xml"
        assert (
            response.headers["content-security-policy"]
            == "default-src 'none'; frame-ancestors 'none'"
        )
        assert http.get(path).status_code == 401  # the picture is guarded like the task
        slow = qm.submit(runaway_circuit(), shots=10)
        try:
            early = http.get(f"/tasks/{slow}/histogram.svg", headers={"X-API-Key": KEY})
            assert early.status_code == 409 and "no counts" in early.json()["detail"]
        finally:
            qm.cancel(slow)


# --- CLI -------------------------------------------------------------------------------------


def test_cli_health(system: System) -> None:
    run = qmill(system, "health")
    assert run.code == 0 and run.out.startswith("healthy"), run
    as_json = qmill(system, "health", "--json")
    assert json.loads(as_json.out)["services"] == {"nats": True, "redis": True}
    down = qmill(system, "health", "--url", f"http://127.0.0.1:{free_port()}")
    assert down.code == 3 and "no answer" in down.err, down


def test_cli_submit_wait_prints_a_counts_table(system: System, tmp_path: Path) -> None:
    program = tmp_path / "bell.qasm"
    program.write_text(BELL)
    run = qmill(system, "submit", str(program), "--shots", "500", "--wait")
    assert run.code == 0, run
    lines = run.out.splitlines()
    assert "completed" in lines[0] and "500 shots" in lines[0]
    table = lines[lines.index("outcome  count   share") + 1 :]
    assert {line.split()[0] for line in table} <= {"00", "11"}
    counts = [int(line.split()[1]) for line in table]
    assert sum(counts) == 500 and counts == sorted(counts, reverse=True)
    assert all("█" in line for line in table)
    # Progress went to stderr (one line per status here: stderr is not a terminal).
    assert "completed" in run.err and "█" not in run.err


def test_cli_submit_then_get(system: System) -> None:
    submitted = qmill(system, "submit", "-", "--shots", "32", stdin=BELL)
    assert submitted.code == 0, submitted
    task_id = submitted.out.strip()
    assert len(task_id) == 36  # only the id on stdout: ID=$(qmill submit ...) works
    got = qmill(system, "get", task_id, "--wait", "--json")
    assert got.code == 0, got
    body = json.loads(got.out)
    assert body["status"] == "completed" and sum(body["result"].values()) == 32


def test_cli_exit_codes_for_errors(system: System, tmp_path: Path) -> None:
    bad = tmp_path / "bad.qasm"
    bad.write_text(BAD_QASM)
    invalid = qmill(system, "submit", str(bad))
    assert invalid.code == 2 and "line 3, column 1" in invalid.err, invalid
    as_json = qmill(system, "submit", str(bad), "--json")
    assert json.loads(as_json.out)["line"] == 3
    missing_file = qmill(system, "submit", str(tmp_path / "nope.qasm"))
    assert missing_file.code == 2 and "cannot read" in missing_file.err
    not_found = qmill(system, "get", UNKNOWN)
    assert not_found.code == 4, not_found
    no_key = qmill(system, "submit", "-", stdin=BELL, key=None)
    assert no_key.code == 2 and "API key" in no_key.err, no_key
    unreachable = qmill(
        system, "submit", "-", "--url", f"http://127.0.0.1:{free_port()}", "--retries", "1"
    )
    assert unreachable.code == 3, unreachable


def test_cli_wait_for_a_task_or_a_batch(system: System, qm: Client) -> None:
    batch = qm.submit_batch([BELL, BELL], shots=16)
    waited = qmill(system, "wait", batch.batch_id or "", "--quiet")
    assert waited.code == 0, waited
    lines = waited.out.splitlines()
    assert lines[0].startswith(f"batch {batch.batch_id}  2 tasks  (2 completed)")
    assert [line.split()[:2] for line in lines[1:]] == [[t, "completed"] for t in batch]
    task = qmill(system, "wait", batch[0], "--json")
    assert task.code == 0 and json.loads(task.out)["status"] == "completed", task
    assert qmill(system, "wait", UNKNOWN).code == 4
    bad_tag = qmill(system, "submit", "-", "--tag", "no-colon", stdin=BELL)
    assert bad_tag.code == 2 and "KEY:VALUE" in bad_tag.err, bad_tag


def test_cli_cancel_and_wait_timeout(system: System) -> None:
    submitted = qmill(system, "submit", "-", "--shots", "10", stdin=runaway_circuit())
    task_id = submitted.out.strip()
    timed_out = qmill(system, "get", task_id, "--wait", "--timeout", "1")
    assert timed_out.code == 5 and "keeps running" in timed_out.err, timed_out
    cancelled = qmill(system, "cancel", task_id)
    assert cancelled.code == 0 and cancelled.out.strip() == f"task {task_id} cancelled"
    shown = qmill(system, "get", task_id)
    assert shown.code == 1 and "cancelled" in shown.out, shown
    again = qmill(system, "cancel", task_id)
    assert again.code == 1 and "already cancelled" in again.err, again
