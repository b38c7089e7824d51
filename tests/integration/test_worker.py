"""The worker against real nats-server, redis-server and worker processes."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import uuid
from functools import cache
from pathlib import Path

import psutil
import pytest

from qmill.server import constants, tasks
from qmill.server.bus import Bus
from qmill.server.config import Settings
from qmill.server.errors import IdempotencyConflict
from qmill.server.models import TaskStatus, TaskView
from qmill.server.store import Stores
from tests.conftest import BELL, Processes, submit_task, wait_for
from tests.metrics_check import dashboard_metrics, exported_names


@cache
def slow_circuit() -> str:
    """A 21-qubit random circuit: ~3 s of single-threaded statevector simulation here."""
    from qiskit import qasm3
    from qiskit.circuit.random import random_circuit

    return str(qasm3.dumps(random_circuit(21, 20, measure=True, seed=7)))


@cache
def wide_circuit() -> str:
    """A 21-qubit random circuit like `slow_circuit` (a 32 MiB statevector), but of ~1 s:
    for a test that needs it running for a moment, then waits for it to complete."""
    from qiskit import qasm3
    from qiskit.circuit.random import random_circuit

    return str(qasm3.dumps(random_circuit(21, 5, measure=True, seed=7)))


@cache
def runaway_circuit() -> str:
    """A 23-qubit random circuit: well over a minute of single-threaded simulation."""
    from qiskit import qasm3
    from qiskit.circuit.random import random_circuit

    return str(qasm3.dumps(random_circuit(23, 60, measure=True, seed=11)))


submit = submit_task


async def until(stores: Stores, task_id: str, status: TaskStatus, timeout: float) -> TaskView:
    async def reached() -> bool:
        return (await stores.tasks.get(task_id)).status == status

    await wait_for(reached, timeout)
    return await stores.tasks.get(task_id)


# For tests that wait for a killed worker's task to be redelivered: ack_wait is how long
# that takes. 3 s instead of the tests' 5 s still leaves a live worker's task alone (it
# marks the task in progress every max(1 s, ack_wait / 3)). Every worker of such a test
# gets it, since they share one consumer.
SHORT_ACK_WAIT = {"QMILL_NATS__ACK_WAIT_SECONDS": "3"}


def assert_bell(view: TaskView, shots: int = 1024) -> None:
    assert view.status == TaskStatus.COMPLETED, view
    assert view.result is not None
    assert set(view.result) <= {"00", "11"} and sum(view.result.values()) == shots
    assert min(view.result.values()) > shots * 0.3  # both outcomes, roughly balanced


@pytest.mark.parametrize("executor", ["process", "thread"])
async def test_submit_runs_to_completed_with_bell_counts(
    settings: Settings, stores: Stores, bus: Bus, procs: Processes, executor: str
) -> None:
    procs.worker(QMILL_WORKER__EXECUTOR=executor)
    task_id = await submit(settings, stores, bus)
    view = await until(stores, task_id, TaskStatus.COMPLETED, 60)
    assert_bell(view)
    assert view.attempts == 1 and view.method and view.worker_id
    assert view.queue_seconds is not None and view.execution_seconds is not None


async def test_custom_gates_and_qasm2_run(
    settings: Settings, stores: Stores, bus: Bus, procs: Processes
) -> None:
    procs.worker()
    custom = (
        'OPENQASM 3.0; include "stdgates.inc"; gate bell a, b { h a; cx a, b; } '
        "qubit[2] q; bit[2] c; bell q[0], q[1]; c = measure q;"
    )
    qasm2 = (
        'OPENQASM 2.0; include "qelib1.inc"; qreg q[2]; creg c[2]; h q[0]; cx q[0],q[1]; '
        "measure q -> c;"
    )
    ids = [await submit(settings, stores, bus, c) for c in (custom, qasm2)]
    for task_id in ids:
        assert_bell(await until(stores, task_id, TaskStatus.COMPLETED, 60))


async def test_task_submitted_with_no_worker_completes_once_one_starts(
    settings: Settings, stores: Stores, bus: Bus, procs: Processes
) -> None:
    task_id = await submit(settings, stores, bus)
    assert (await stores.tasks.get(task_id)).status == TaskStatus.PENDING
    procs.worker()
    assert_bell(await until(stores, task_id, TaskStatus.COMPLETED, 60))


async def test_worker_killed_mid_task_is_redelivered_to_another(
    settings: Settings, stores: Stores, bus: Bus, procs: Processes
) -> None:
    first = procs.worker(**SHORT_ACK_WAIT)
    task_id = await submit(settings, stores, bus, wide_circuit(), shots=100)
    await until(stores, task_id, TaskStatus.PROCESSING, 60)
    first.send_signal(signal.SIGKILL)
    first.wait()
    procs.worker(**SHORT_ACK_WAIT)
    view = await until(stores, task_id, TaskStatus.COMPLETED, settings.ack_wait_seconds + 60)
    assert view.attempts == 2
    assert view.result is not None and sum(view.result.values()) == 100


async def test_redelivery_of_a_completed_task_changes_nothing(
    settings: Settings, stores: Stores, bus: Bus, procs: Processes
) -> None:
    procs.worker()
    task_id = await submit(settings, stores, bus)
    before = await until(stores, task_id, TaskStatus.COMPLETED, 60)
    # The same task arrives again (as after a lost ack), under a new message id.
    js = await bus.connect()
    await js.publish(
        constants.TASK_SUBJECT,
        json.dumps({"task_id": task_id}).encode(),
        headers={"Nats-Msg-Id": str(uuid.uuid4())},
    )

    async def drained() -> bool:
        return (await js.stream_info(constants.STREAM_NAME)).state.messages == 0

    await wait_for(drained, 30)
    after = await stores.tasks.get(task_id)
    assert after.result == before.result
    assert after.completed_at == before.completed_at
    assert after.attempts == 1


async def test_task_that_kills_every_worker_ends_failed_with_reason(
    settings: Settings, stores: Stores, bus: Bus, procs: Processes
) -> None:
    task_id = await submit(settings, stores, bus, slow_circuit(), shots=10)
    for attempt in range(1, settings.worker.max_attempts + 1):
        worker = procs.worker(**SHORT_ACK_WAIT)

        async def running(n: int = attempt) -> bool:
            view = await stores.tasks.get(task_id)
            return view.status == TaskStatus.PROCESSING and view.attempts == n

        await wait_for(running, settings.ack_wait_seconds + 60)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    procs.worker(**SHORT_ACK_WAIT)
    view = await until(stores, task_id, TaskStatus.FAILED, settings.ack_wait_seconds + 60)
    assert view.error is not None and "gave up after 2 attempts" in view.error
    assert view.result is None


async def test_malformed_message_is_dropped_not_redelivered(
    settings: Settings, stores: Stores, bus: Bus, procs: Processes
) -> None:
    procs.worker()
    js = await bus.connect()
    await js.publish(constants.TASK_SUBJECT, b"not json")
    task_id = await submit(settings, stores, bus)  # the queue keeps flowing behind it
    assert_bell(await until(stores, task_id, TaskStatus.COMPLETED, 60))


async def test_heartbeat_file_drives_the_health_check(
    settings: Settings, procs: Processes, tmp_path: Path, clean: None
) -> None:
    beat = tmp_path / "alive"
    qmill_worker = str(Path(sys.executable).parent / "qmill-worker")

    def check() -> int:
        env = {**procs.env, "QMILL_WORKER__HEARTBEAT_FILE": str(beat)}
        return subprocess.run([qmill_worker, "--check"], env=env, capture_output=True).returncode

    assert check() == 1  # no worker yet
    procs.worker(QMILL_WORKER__HEARTBEAT_FILE=str(beat))
    await wait_for(lambda: check() == 0, 60, interval=0.5)


@pytest.mark.parametrize("executor", ["process", "thread"])
async def test_sigterm_lets_a_running_task_finish_then_exits_zero(
    settings: Settings, stores: Stores, bus: Bus, procs: Processes, executor: str
) -> None:
    # A grace period that comfortably covers the run, even on a loaded machine.
    worker = procs.worker(QMILL_WORKER__EXECUTOR=executor, QMILL_WORKER__GRACE_PERIOD_SECONDS="90")
    task_id = await submit(settings, stores, bus, slow_circuit(), shots=10)
    await until(stores, task_id, TaskStatus.PROCESSING, 60)
    worker.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(worker.wait, 120) == 0
    view = await stores.tasks.get(task_id)
    assert view.status == TaskStatus.COMPLETED and view.attempts == 1


async def test_runaway_simulation_is_stopped_and_the_worker_goes_on(
    settings: Settings, stores: Stores, bus: Bus, procs: Processes
) -> None:
    procs.worker(QMILL_LIMITS__MAX_EXECUTION_SECONDS="2")
    runaway = await submit(settings, stores, bus, runaway_circuit(), shots=10)
    view = await until(stores, runaway, TaskStatus.FAILED, 60)
    assert view.error is not None and view.error.startswith("timeout")
    assert view.attempts == 1  # a timeout is final, not retried
    after = await submit(settings, stores, bus)
    assert_bell(await until(stores, after, TaskStatus.COMPLETED, 60))


async def test_simulator_crash_is_retried_then_failed_with_reason(
    settings: Settings, stores: Stores, bus: Bus, procs: Processes
) -> None:
    """A simulation child that dies (here: SIGKILLed, as the OOM killer would) costs an
    attempt; the worker survives, and after max_attempts the task fails with the reason."""
    worker = procs.worker()
    task_id = await submit(settings, stores, bus, slow_circuit(), shots=10)
    for attempt in range(1, settings.worker.max_attempts + 1):

        async def running(n: int = attempt) -> bool:
            view = await stores.tasks.get(task_id)
            return view.status == TaskStatus.PROCESSING and view.attempts == n

        await wait_for(running, 60)
        await asyncio.sleep(0.3)  # let the child pick the job up
        busy = [
            c
            for c in psutil.Process(worker.pid).children(recursive=True)
            if c.cpu_percent(0.2) > 10
        ]
        assert busy, "no simulating child found"
        for child in busy:
            child.kill()
    view = await until(stores, task_id, TaskStatus.FAILED, 60)
    assert view.error is not None and "simulator process died (signal 9)" in view.error
    assert worker.poll() is None  # the worker itself survived
    after = await submit(settings, stores, bus)
    assert_bell(await until(stores, after, TaskStatus.COMPLETED, 60))


async def test_idempotency_key_returns_the_same_task_and_runs_it_once(
    settings: Settings, stores: Stores, bus: Bus, procs: Processes
) -> None:
    body = {"quantum_circuit": BELL, "shots": 100}
    first = await tasks.submit(body, settings, stores, bus, idempotency_key="k-1")
    again = await tasks.submit(body, settings, stores, bus, idempotency_key="k-1")
    assert again.task_id == first.task_id and again.replayed and not first.replayed
    js = await bus.connect()
    assert (await js.stream_info(constants.STREAM_NAME)).state.messages == 1
    other = await tasks.submit(body, settings, stores, bus, idempotency_key="k-2")
    assert other.task_id != first.task_id
    with pytest.raises(IdempotencyConflict):
        await tasks.submit({**body, "shots": 101}, settings, stores, bus, idempotency_key="k-1")
    procs.worker()
    view = await until(stores, first.task_id, TaskStatus.COMPLETED, 60)
    assert view.attempts == 1


async def test_worker_metrics(
    settings: Settings, stores: Stores, bus: Bus, procs: Processes
) -> None:
    import httpx

    from tests.conftest import free_port, wait_port

    port = free_port()
    procs.worker(QMILL_WORKER__METRICS_PORT=str(port))
    await asyncio.to_thread(wait_port, port, 60)
    task_id = await submit(settings, stores, bus)
    await until(stores, task_id, TaskStatus.COMPLETED, 60)
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    assert "qmill_tasks_completed_total{worker=" in text
    assert "qmill_task_execution_seconds_count{worker=" in text
    # The Grafana dashboard (infra/grafana) queries only what a running worker exports.
    assert dashboard_metrics() <= exported_names(text)
    # Its probes, on the same server: alive, and ready with NATS and Redis answering.
    async with httpx.AsyncClient() as client:
        live = await client.get(f"http://127.0.0.1:{port}/livez")
        ready = await client.get(f"http://127.0.0.1:{port}/readyz")
    assert (live.status_code, live.json()) == (200, {"status": "alive"})
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "down": [], "checks": {"nats": True, "redis": True}}
