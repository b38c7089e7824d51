"""A stopping worker's hand-back is not an attempt, on the real NATS and Redis.

Scale-in and a platform's termination deadline stop workers that hold running tasks;
past its grace period a worker hands them back (`HandedBack`: the release recorded in
the task record, then a nak with no delay). Before, each such nak was a JetStream
delivery that ``max_deliver`` (``max_attempts`` + 1) bounded, so every scale-in burnt
one of a task's attempts and a task stopped that often was silently dropped. What a
real process shows (SIGTERM, how fast another worker starts the task) is in
tests/faults/test_graceful_stop.py and test_scale_in.py.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from qmill.server import constants
from qmill.server.bus import Bus
from qmill.server.config import Settings
from qmill.server.models import TaskStatus
from qmill.server.store import Stores
from qmill.server.store.worker_tasks import WorkerTasks
from qmill_worker import consumer
from tests.conftest import BELL
from tests.integration.test_worker_inprocess import (  # noqa: F401 (fixture)
    CRASH,
    FakeExecutor,
    StartWorker,
    counted,
    crash,
    running,
    settled,
    start_worker,
    submit,
    tuned,
    until,
)


async def releases(stores: Stores, task_id: str) -> int:
    raw = await stores.tasks._redis.hget(constants.task_key(task_id), "releases")
    return int(raw or 0)


def brief(settings: Settings) -> Settings:
    """A grace period shorter than any task here: every stop hands its task back."""
    return tuned(settings, worker={"grace_period_seconds": 0.1, "max_concurrent_tasks": 1})


async def test_a_task_handed_back_more_times_than_its_attempts_still_completes(
    settings: Settings,
    stores: Stores,
    bus: Bus,
    start_worker: StartWorker,  # noqa: F811
) -> None:
    short = brief(settings)
    task_id = await submit(short, stores, bus)
    stops = settings.worker.max_attempts + 2
    for n in range(1, stops + 1):
        w = await start_worker(FakeExecutor(), short)
        w.executor.plan(task_id, asyncio.Event())  # runs until the stop
        await running(w.executor, task_id)
        await w.stop()
        view = await stores.tasks.get(task_id)
        assert view.status == TaskStatus.PROCESSING and view.attempts == 0, view
        assert await releases(stores, task_id) == n
        assert counted("qmill_tasks_handed_back_total", worker=w.id) == 1
    last = await start_worker(FakeExecutor(), short)
    view = await until(stores, task_id, TaskStatus.COMPLETED)
    assert view.worker_id == last.id and view.attempts == 1
    assert await releases(stores, task_id) == stops
    await settled(bus)


async def test_a_poison_task_handed_back_still_fails_after_its_attempts(
    settings: Settings,
    stores: Stores,
    bus: Bus,
    start_worker: StartWorker,  # noqa: F811
) -> None:
    """Hand-backs do not count, crashes do: one hand-back, then max_attempts crashes."""
    short = brief(settings)
    task_id = await submit(short, stores, bus)
    first = await start_worker(FakeExecutor(), short)
    first.executor.plan(task_id, asyncio.Event())
    await running(first.executor, task_id)
    await first.stop()
    executor = FakeExecutor()
    executor.plan(task_id, *[crash()] * settings.worker.max_attempts)
    await start_worker(executor, short)
    view = await until(stores, task_id, TaskStatus.FAILED)
    assert view.error == CRASH and view.attempts == settings.worker.max_attempts
    assert executor.runs == [task_id] * settings.worker.max_attempts
    await settled(bus)


async def test_a_batch_stopped_past_the_grace_period_hands_every_task_back(
    settings: Settings,
    stores: Stores,
    bus: Bus,
    start_worker: StartWorker,  # noqa: F811
) -> None:
    batching = tuned(settings, worker={"grace_period_seconds": 0.1, "batch_max_tasks": 8})
    ids = [await submit(batching, stores, bus) for _ in range(4)]
    executor, gate = FakeExecutor(), asyncio.Event()
    for task_id in ids:
        executor.plan(task_id, gate)
    w = await start_worker(executor, batching)
    await running(executor, ids[0])
    await w.stop()
    (started,) = executor.groups  # one batch: every task started, one running
    assert sorted(started) == sorted(ids)
    for task_id in started:
        view = await stores.tasks.get(task_id)
        assert view.status == TaskStatus.PROCESSING and view.attempts == 0, view
        assert await releases(stores, task_id) == 1
    await start_worker(FakeExecutor(), batching)
    for task_id in ids:
        assert (await until(stores, task_id, TaskStatus.COMPLETED)).attempts == 1


async def test_a_release_is_recorded_only_by_the_worker_that_holds_the_task(
    settings: Settings, stores: Stores, bus: Bus
) -> None:
    task_id = await submit(settings, stores, bus, BELL)
    releasing = WorkerTasks(stores.tasks)
    assert await releasing.release(task_id, "w-a") == 0  # pending: nobody holds it
    await stores.tasks.start(task_id, "w-a")
    await stores.tasks.start(task_id, "w-b")  # redelivered after w-a stalled
    assert await releasing.release(task_id, "w-a") == 0
    assert (await stores.tasks.get(task_id)).attempts == 2
    assert await releasing.release(task_id, "w-b") == 1
    assert (await stores.tasks.get(task_id)).attempts == 1
    await stores.tasks.fail(task_id, "boom")
    assert await releasing.release(task_id, "w-b") == 0  # final: left alone
    assert await releasing.release(str(task_id) + "-gone", "w-b") == 0


async def test_a_task_delivered_to_a_stopping_worker_is_handed_back(
    settings: Settings,
    stores: Stores,
    bus: Bus,
    start_worker: StartWorker,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stop cancels the idle worker's fetch, but its pull request stays open on the
    server until it expires (`FETCH_TIMEOUT_SECONDS`): a task queued meanwhile (or a
    task another stopping worker hands back) is delivered to this worker, which must
    hand it back too rather than leave it for ack_wait (5 s here)."""
    monkeypatch.setattr(consumer, "FETCH_TIMEOUT_SECONDS", 1.0)
    task_id = str(uuid.uuid4())
    await stores.tasks.create(task_id, BELL, 100)  # recorded; queued only after the stop
    idle = await start_worker(FakeExecutor())
    await asyncio.sleep(0.5)  # pulling: a lingering request is open
    idle.worker.stop()
    await bus.publish(task_id)
    await asyncio.wait_for(asyncio.shield(idle.task), 5)
    other = await start_worker(FakeExecutor())
    view = await until(stores, task_id, TaskStatus.COMPLETED, timeout=3)
    assert view.worker_id == other.id and idle.executor.runs == []
    assert view.attempts == 1
