"""The real `Worker` in the test's event loop, on the real NATS and Redis, with a fake executor.

What only processes show (a SIGKILLed worker, a simulation child killed by a signal,
the health check, SIGTERM) stays in ``test_worker.py``. The worker's own decisions
(retry, the last attempt, drain, cancel, memory admission) are tested here, where a
fake executor fails or blocks on cue and each test takes well under a second or two.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import REGISTRY

from qmill.server import constants, tasks
from qmill.server.bus import Bus
from qmill.server.config import Settings
from qmill.server.errors import LimitExceeded
from qmill.server.models import TaskStatus, TaskView
from qmill.server.store import Stores
from qmill_worker import consumer
from qmill_worker.consumer import Worker
from qmill_worker.errors import FailureReason, SimulationError, SimulationTimeout
from qmill_worker.simulator import SimJob, SimResult
from tests.conftest import BELL, submit_task, wait_for

# What one `run` of a task does: fail with the error, or wait for the event and then
# succeed. None (or no step left) succeeds at once.
Step = SimulationError | asyncio.Event | None

CRASH = "simulator process died (signal 9)"


def crash() -> SimulationError:
    return SimulationError(CRASH, FailureReason.CRASHED, retryable=True)


def wide(qubits: int) -> str:
    """A statevector (non-Clifford) circuit: its state takes 16 * 2**qubits bytes."""
    return (
        f'OPENQASM 3.0; include "stdgates.inc"; qubit[{qubits}] q; bit[{qubits}] c; '
        "t q[0]; c = measure q;"
    )


class FakeExecutor:
    """The `Executor` protocol with scripted runs: each task follows its own steps."""

    name = "fake"

    def __init__(self) -> None:
        self.steps: dict[str, list[Step]] = {}
        self.runs: list[str] = []  # task ids, one per `run`, in call order
        self.running: set[str] = set()
        self.stopped: list[str] = []  # runs cancelled (a user's cancel, a drain's end)
        self.groups: list[list[str]] = []  # task ids, one list per `run_group`

    def plan(self, task_id: str, *steps: Step) -> None:
        self.steps[task_id] = list(steps)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def run(self, job: SimJob, timeout: float) -> SimResult:
        self.runs.append(job.task_id)
        planned = self.steps.get(job.task_id) or [None]
        step = planned.pop(0)
        self.running.add(job.task_id)
        try:
            if isinstance(step, SimulationError):
                raise step
            if step is not None:
                await step.wait()
        except asyncio.CancelledError:
            self.stopped.append(job.task_id)
            raise
        finally:
            self.running.discard(job.task_id)
        return SimResult(
            counts={"00": job.shots}, qubits=2, depth=2, method="fake", execution_seconds=0.001
        )

    async def run_group(
        self, jobs: Sequence[SimJob], timeout: float
    ) -> list[SimResult | SimulationError]:
        """Each job's steps in turn; a job's error is its own answer."""
        self.groups.append([job.task_id for job in jobs])
        answers: list[SimResult | SimulationError] = []
        for job in jobs:
            try:
                answers.append(await self.run(job, timeout))
            except SimulationError as exc:
                answers.append(exc)
        return answers


@dataclass
class Running:
    """A `Worker` running in the test's event loop, on its own NATS and Redis clients."""

    worker: Worker
    executor: FakeExecutor
    task: asyncio.Task[None]
    clients: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.worker.worker_id

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop it as SIGTERM would, and wait until `run` returned."""
        self.worker.stop()
        await asyncio.wait_for(asyncio.shield(self.task), timeout)


StartWorker = Callable[..., Awaitable[Running]]


def tuned(settings: Settings, **sections: dict[str, Any]) -> Settings:
    """``settings`` with some keys of some sections changed."""
    data = settings.model_dump()
    for section, values in sections.items():
        data[section] = {**data[section], **values}
    return Settings.model_validate(data)


@pytest.fixture
async def start_worker(
    settings: Settings, clean: None, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[StartWorker]:
    """Starts in-process workers; each is stopped and its clients closed afterwards."""
    # An idle fetch waits this long before the loop sees a stop: keep stops quick.
    monkeypatch.setattr(consumer, "FETCH_TIMEOUT_SECONDS", 0.1)
    started: list[Running] = []

    async def start(executor: FakeExecutor, custom: Settings | None = None) -> Running:
        tuned_settings = custom or settings
        worker_id = f"inproc-{uuid.uuid4().hex[:8]}"
        stores = Stores.open(
            tuned_settings.redis.url,
            result_ttl_seconds=tuned_settings.redis.result_ttl_seconds,
            socket_timeout=2.0,
        )
        bus = Bus(tuned_settings, name=worker_id)
        worker = Worker(tuned_settings, stores, bus, executor, worker_id)
        running = Running(worker, executor, asyncio.create_task(worker.run()))
        running.clients += [bus.close, stores.close]
        started.append(running)
        return running

    try:
        yield start
    finally:
        for running in started:
            running.worker.stop()
            # Whatever a test left blocked must not hold the teardown for the grace period.
            for gate in running.executor.steps.values():
                for step in gate:
                    if isinstance(step, asyncio.Event):
                        step.set()
            await asyncio.wait_for(running.task, 30)
            for close in running.clients:
                await close()


async def submit(
    settings: Settings, stores: Stores, bus: Bus, circuit: str = BELL, shots: int = 100
) -> str:
    return await submit_task(settings, stores, bus, circuit, shots)


async def until(stores: Stores, task_id: str, status: TaskStatus, timeout: float = 10) -> TaskView:
    async def reached() -> bool:
        return (await stores.tasks.get(task_id)).status == status

    await wait_for(reached, timeout, interval=0.01)
    return await stores.tasks.get(task_id)


async def running(executor: FakeExecutor, task_id: str, timeout: float = 10) -> None:
    await wait_for(lambda: task_id in executor.running, timeout, interval=0.01)


async def settled(bus: Bus, timeout: float = 10) -> None:
    """Every message acked: none queued, none held unacked by a worker."""
    await bus.ensure_consumer()  # a worker may not have created it yet

    async def none_left() -> bool:
        return await bus.pending() == 0

    await wait_for(none_left, timeout, interval=0.02)


def counted(metric: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(metric, labels) or 0.0


async def test_a_task_completes_is_counted_and_acked(
    settings: Settings, stores: Stores, bus: Bus, start_worker: StartWorker
) -> None:
    w = await start_worker(FakeExecutor())
    task_id = await submit(settings, stores, bus)
    view = await until(stores, task_id, TaskStatus.COMPLETED)
    assert view.result == {"00": 100} and view.attempts == 1 and view.worker_id == w.id
    await settled(bus)
    assert counted("qmill_tasks_completed_total", worker=w.id) == 1


async def test_a_malformed_message_is_dropped_and_its_slot_given_back(
    settings: Settings, stores: Stores, bus: Bus, start_worker: StartWorker
) -> None:
    one_slot = tuned(settings, worker={"max_concurrent_tasks": 1})
    w = await start_worker(FakeExecutor(), one_slot)
    js = await bus.connect()
    await js.publish(constants.TASK_SUBJECT, b"not json")
    await settled(bus)  # terminated, never redelivered
    task_id = await submit(one_slot, stores, bus)
    await until(stores, task_id, TaskStatus.COMPLETED)
    assert w.executor.runs == [task_id]


async def test_a_redelivered_finished_task_is_acked_without_running(
    settings: Settings, stores: Stores, bus: Bus, start_worker: StartWorker
) -> None:
    executor = FakeExecutor()
    await start_worker(executor)
    task_id = await submit(settings, stores, bus)
    before = await until(stores, task_id, TaskStatus.COMPLETED)
    # The same task again (as after a lost ack), under a new message id.
    js = await bus.connect()
    await js.publish(constants.TASK_SUBJECT, json.dumps({"task_id": task_id}).encode())
    await settled(bus)
    assert executor.runs == [task_id]
    assert await stores.tasks.get(task_id) == before


async def test_a_retryable_failure_is_retried_and_counted_as_a_retry(
    settings: Settings, stores: Stores, bus: Bus, start_worker: StartWorker
) -> None:
    executor = FakeExecutor()
    task_id = await submit(settings, stores, bus)
    executor.plan(task_id, crash(), None)
    w = await start_worker(executor)
    view = await until(stores, task_id, TaskStatus.COMPLETED)
    assert view.attempts == 2 and executor.runs == [task_id, task_id]
    assert counted("qmill_tasks_retried_total", worker=w.id, reason="crashed") == 1
    assert counted("qmill_tasks_failed_total", worker=w.id, reason="crashed") == 0


async def test_a_retryable_failure_on_the_last_attempt_fails_the_task(
    settings: Settings, stores: Stores, bus: Bus, start_worker: StartWorker
) -> None:
    executor = FakeExecutor()
    task_id = await submit(settings, stores, bus)
    executor.plan(task_id, *[crash()] * settings.worker.max_attempts)
    w = await start_worker(executor)
    view = await until(stores, task_id, TaskStatus.FAILED)
    assert view.error == CRASH and view.attempts == settings.worker.max_attempts
    await settled(bus)  # acked: no delivery after the last attempt
    assert executor.runs == [task_id] * settings.worker.max_attempts
    assert counted("qmill_tasks_failed_total", worker=w.id, reason="crashed") == 1


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (SimulationTimeout(30), "timeout"),
        (
            SimulationError("invalid OpenQASM: line 1", FailureReason.INVALID_CIRCUIT),
            "invalid_circuit",
        ),
        (
            SimulationError("simulator error: boom", FailureReason.SIMULATOR_ERROR),
            "simulator_error",
        ),
    ],
)
async def test_a_final_failure_is_not_retried_and_counted_by_its_reason(
    settings: Settings,
    stores: Stores,
    bus: Bus,
    start_worker: StartWorker,
    error: SimulationError,
    reason: str,
) -> None:
    executor = FakeExecutor()
    task_id = await submit(settings, stores, bus)
    executor.plan(task_id, error)
    w = await start_worker(executor)
    view = await until(stores, task_id, TaskStatus.FAILED)
    assert view.error == error.message and view.attempts == 1
    await settled(bus)
    assert executor.runs == [task_id]
    assert counted("qmill_tasks_failed_total", worker=w.id, reason=reason) == 1


async def test_a_task_whose_attempts_were_all_spent_is_failed_without_running(
    settings: Settings, stores: Stores, bus: Bus, start_worker: StartWorker
) -> None:
    """Workers that crash mid-task started it (an attempt each) and never ack nor nak;
    the delivery after the last attempt only marks the task failed."""
    task_id = await submit(settings, stores, bus)
    sub = await bus.pull_subscription()
    for _ in range(settings.worker.max_attempts):
        (msg,) = await sub.fetch(batch=1, timeout=5)
        await stores.tasks.start(task_id, "w-crashed")
        await msg.nak()  # a redelivery now, where a crashed worker's would wait ack_wait
    await sub.unsubscribe()
    executor = FakeExecutor()
    w = await start_worker(executor)
    view = await until(stores, task_id, TaskStatus.FAILED)
    assert view.error is not None and view.error.startswith(
        f"gave up after {settings.worker.max_attempts} attempts"
    )
    await settled(bus)
    assert executor.runs == []
    assert counted("qmill_tasks_failed_total", worker=w.id, reason="gave_up") == 1


async def test_stop_lets_the_running_task_finish_and_leaves_the_rest_queued(
    settings: Settings, stores: Stores, bus: Bus, start_worker: StartWorker
) -> None:
    # One task at a time: with batching both queued tasks would be taken as one batch.
    one_slot = tuned(settings, worker={"max_concurrent_tasks": 1, "batch_max_tasks": 1})
    first, second = [await submit(one_slot, stores, bus) for _ in range(2)]
    executor, gate = FakeExecutor(), asyncio.Event()
    executor.plan(first, gate)
    w = await start_worker(executor, one_slot)
    await running(executor, first)
    w.worker.stop()
    await asyncio.sleep(0.2)
    assert not w.task.done()  # waiting for the running task, within the grace period
    gate.set()
    await w.stop()
    assert (await stores.tasks.get(first)).status == TaskStatus.COMPLETED
    assert executor.runs == [first]
    # Never fetched, so still queued for another worker (never moved to processing).
    assert (await stores.tasks.get(second)).status == TaskStatus.PENDING
    assert await bus.pending() == 1
    other = await start_worker(FakeExecutor(), one_slot)
    view = await until(stores, second, TaskStatus.COMPLETED)
    assert view.worker_id == other.id and view.attempts == 1


async def test_stop_past_the_grace_period_hands_the_running_task_back(
    settings: Settings, stores: Stores, bus: Bus, start_worker: StartWorker
) -> None:
    brief = tuned(settings, worker={"grace_period_seconds": 0.2})
    task_id = await submit(brief, stores, bus)
    executor = FakeExecutor()
    executor.plan(task_id, asyncio.Event())  # never set while this worker runs
    w = await start_worker(executor, brief)
    await running(executor, task_id)
    await w.stop()
    assert executor.stopped == [task_id]
    assert (await stores.tasks.get(task_id)).status == TaskStatus.PROCESSING
    # Released at once (nak), not after ack_wait: the next worker finishes it, and the
    # hand-back was not an attempt.
    other = await start_worker(FakeExecutor(), brief)
    view = await until(stores, task_id, TaskStatus.COMPLETED)
    assert view.worker_id == other.id and view.attempts == 1
    await settled(bus)


async def test_cancel_stops_the_running_task_and_acks_it(
    settings: Settings, stores: Stores, bus: Bus, start_worker: StartWorker
) -> None:
    task_id = await submit(settings, stores, bus)
    executor = FakeExecutor()
    executor.plan(task_id, asyncio.Event())  # runs until cancelled
    await start_worker(executor)
    await running(executor, task_id)
    await tasks.cancel(stores, bus, task_id)
    await wait_for(lambda: executor.stopped == [task_id], 5, interval=0.01)
    await settled(bus)
    assert (await stores.tasks.get(task_id)).status == TaskStatus.CANCELLED
    after = await submit(settings, stores, bus)
    await until(stores, after, TaskStatus.COMPLETED)  # its slot was given back
    assert executor.runs == [task_id, after]


async def test_a_task_waits_until_its_state_fits_the_memory_budget(
    settings: Settings, stores: Stores, bus: Bus, start_worker: StartWorker
) -> None:
    """Two 20-qubit statevectors (16 MiB each) on a 16 MiB budget: one at a time, although
    two slots are free; the other waits, still `pending`, its message held."""
    small = tuned(settings, worker={"memory_budget_mb": 16, "max_concurrent_tasks": 2})
    ids = [await submit(small, stores, bus, wide(20)) for _ in range(2)]
    executor = FakeExecutor()
    gates = {task_id: asyncio.Event() for task_id in ids}
    for task_id, gate in gates.items():
        executor.plan(task_id, gate)
    w = await start_worker(executor, small)
    await wait_for(lambda: executor.runs, 5, interval=0.01)
    (first,) = executor.runs
    (waiting,) = set(ids) - {first}
    await asyncio.sleep(0.3)
    assert executor.runs == [first] and w.worker.memory.used == 16 * 2**20
    assert (await stores.tasks.get(waiting)).status == TaskStatus.PENDING
    gates[first].set()
    await running(executor, waiting)
    gates[waiting].set()
    for task_id in ids:
        await until(stores, task_id, TaskStatus.COMPLETED)
    await settled(bus)
    assert w.worker.memory.used == 0


async def test_a_state_over_the_budget_is_refused_at_submit_and_runs_alone_if_queued(
    settings: Settings, stores: Stores, bus: Bus, start_worker: StartWorker
) -> None:
    """A 21-qubit statevector (32 MiB) can never fit a 16 MiB budget: submit refuses it.
    One queued before the budget shrank runs alone rather than never."""
    small = tuned(settings, worker={"memory_budget_mb": 16, "max_concurrent_tasks": 2})
    with pytest.raises(LimitExceeded):
        await submit(small, stores, bus, wide(21))
    big = await submit(settings, stores, bus, wide(21))  # the default budget fits it
    executor, gate = FakeExecutor(), asyncio.Event()
    executor.plan(big, gate)
    await start_worker(executor, small)
    await running(executor, big)
    bell = await submit(small, stores, bus)
    await asyncio.sleep(0.3)
    assert executor.runs == [big]  # the Bell circuit waits although a slot is free
    assert (await stores.tasks.get(bell)).status == TaskStatus.PENDING
    gate.set()
    for task_id in (big, bell):
        await until(stores, task_id, TaskStatus.COMPLETED)


async def test_a_task_delivered_while_every_slot_is_busy_is_kept_not_redelivered(
    settings: Settings,
    stores: Stores,
    bus: Bus,
    start_worker: StartWorker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pull request that outlives its fetch makes the server push the next task into a
    worker whose slots are full. The worker keeps that delivery alive until a slot frees,
    so JetStream never gives it to a second worker (which would run it twice)."""
    subscriptions: list[Any] = []
    pull_subscription = Bus.pull_subscription

    async def capture(self: Bus) -> Any:
        sub = await pull_subscription(self)
        subscriptions.append(sub)
        return sub

    monkeypatch.setattr(Bus, "pull_subscription", capture)
    short = tuned(settings, worker={"max_concurrent_tasks": 1}, nats={"ack_wait_seconds": 2.0})
    busy = await submit(short, stores, bus)
    executor, gate = FakeExecutor(), asyncio.Event()
    executor.plan(busy, gate)
    w = await start_worker(executor, short)
    await running(executor, busy)
    (sub,) = subscriptions
    # A request the client no longer waits for, as one left open by a fetch that returned.
    linger = json.dumps({"batch": 1, "expires": 30_000_000_000}).encode()
    nc = w.worker.bus._nc
    assert nc is not None
    await nc.publish(sub._nms, linger, reply=sub._deliver)
    held = await submit(short, stores, bus)
    await wait_for(lambda: w.worker.bus.undelivered(sub), 5)
    await asyncio.sleep(2 * short.ack_wait_seconds)  # long past ack_wait
    # A second worker asking now gets nothing: the held task was never given up.
    other = await bus.pull_subscription()
    with pytest.raises(TimeoutError):
        await other.fetch(batch=1, timeout=short.ack_wait_seconds)
    await other.unsubscribe()
    gate.set()
    view = await until(stores, held, TaskStatus.COMPLETED)
    assert view.worker_id == w.id and view.attempts == 1
    assert executor.runs == [busy, held]
