"""Atomic status transitions against a real redis-server."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from qmill.server.errors import DependencyUnavailable, RateLimited, TaskNotFound
from qmill.server.models import TaskStatus
from qmill.server.store import Answer, Outcome, Stores
from tests.conftest import BELL, Server, free_port


async def new_task(stores: Stores) -> str:
    task_id = str(uuid.uuid4())
    await stores.tasks.create(task_id, BELL, 100, qubits=2, depth=3)
    return task_id


async def test_lifecycle(stores: Stores) -> None:
    task_id = await new_task(stores)
    view = await stores.tasks.get(task_id)
    assert (view.status, view.shots, view.qubits, view.attempts) == (TaskStatus.PENDING, 100, 2, 0)

    started = await stores.tasks.start(task_id, "w1")
    assert started.task is not None and started.task.circuit == BELL and started.task.attempts == 1
    assert (await stores.tasks.get(task_id)).status == TaskStatus.PROCESSING

    assert (
        await stores.tasks.complete(task_id, Answer(counts={"00": 60, "11": 40}), worker_id="w1")
        == Outcome.APPLIED
    )
    view = await stores.tasks.get(task_id)
    assert view.status == TaskStatus.COMPLETED
    assert view.result == {"00": 60, "11": 40}
    assert view.completed_at is not None and view.started_at is not None


async def test_terminal_state_is_never_overwritten(stores: Stores) -> None:
    task_id = await new_task(stores)
    await stores.tasks.start(task_id, "w1")
    assert await stores.tasks.complete(task_id, Answer(counts={"00": 100})) == Outcome.APPLIED
    assert await stores.tasks.fail(task_id, "late failure") == Outcome.COMPLETED
    assert await stores.tasks.complete(task_id, Answer(counts={"11": 100})) == Outcome.COMPLETED
    again = await stores.tasks.start(task_id, "w2")
    assert again.task is None and again.status == Outcome.COMPLETED
    view = await stores.tasks.get(task_id)
    assert view.result == {"00": 100} and view.error is None and view.worker_id == "w1"


async def test_failed_is_terminal_too(stores: Stores) -> None:
    task_id = await new_task(stores)
    assert await stores.tasks.fail(task_id, "boom") == Outcome.APPLIED
    assert await stores.tasks.complete(task_id, Answer(counts={"00": 1})) == Outcome.FAILED
    assert (await stores.tasks.get(task_id)).error == "boom"


async def test_redelivery_counts_attempts(stores: Stores) -> None:
    task_id = await new_task(stores)
    await stores.tasks.start(task_id, "w1")
    second = await stores.tasks.start(task_id, "w2")
    assert second.task is not None and second.task.attempts == 2


async def test_missing_task(stores: Stores) -> None:
    with pytest.raises(TaskNotFound):
        await stores.tasks.get(str(uuid.uuid4()))
    assert (await stores.tasks.start(str(uuid.uuid4()), "w")).status == Outcome.MISSING
    assert await stores.tasks.complete(str(uuid.uuid4()), Answer(counts={})) == Outcome.MISSING


async def test_records_expire(stores: Stores, settings: object) -> None:
    task_id = await new_task(stores)
    ttl = await stores.client.redis.ttl(f"qmill:task:{task_id}")
    assert 0 < ttl <= 7 * 24 * 3600


async def test_wait_returns_when_the_task_finishes(stores: Stores) -> None:
    task_id = await new_task(stores)
    waiter = asyncio.create_task(stores.waiters.wait(task_id, 10.0))
    await asyncio.sleep(0.2)
    assert not waiter.done()
    await stores.tasks.complete(task_id, Answer(counts={"00": 100}))
    view = await asyncio.wait_for(waiter, 2.0)
    assert view.status == TaskStatus.COMPLETED


async def test_wait_times_out_with_current_state(stores: Stores) -> None:
    task_id = await new_task(stores)
    view = await stores.waiters.wait(task_id, 0.3)
    assert view.status == TaskStatus.PENDING


async def test_unreachable_redis_is_dependency_unavailable() -> None:
    from tests.conftest import free_port

    dead = Stores.open(
        f"redis://127.0.0.1:{free_port()}", result_ttl_seconds=60, socket_timeout=0.5
    )
    try:
        with pytest.raises(DependencyUnavailable):
            await dead.tasks.get(str(uuid.uuid4()))
        assert await dead.ping() is False
    finally:
        await dead.close()


async def test_a_retrying_store_rides_out_a_redis_restart(tmp_path: Path) -> None:
    """The worker's stores (retries > 0) waits for a restarting Redis instead of failing.

    Regression: the retry policy was redis-py's synchronous ``Retry``, which the asyncio
    client awaits without ever retrying, so every call failed at the first error.
    """
    server = Server("redis", free_port(), tmp_path / "redis")
    server.start()
    stores = Stores.open(
        f"redis://127.0.0.1:{server.port}", result_ttl_seconds=60, socket_timeout=None, retries=8
    )
    try:
        task_id = await new_task(stores)
        server.kill()
        restart = asyncio.get_running_loop().call_later(1.0, server.start)
        try:
            started = await stores.tasks.start(task_id, "w1")  # issued while Redis is down
        finally:
            restart.cancel()
        assert started.task is not None and started.task.attempts == 1
    finally:
        await stores.close()
        server.stop()


async def test_an_idempotency_key_is_pending_until_committed(stores: Stores) -> None:
    """A replay must not get the task of a request still in flight: it may be refused."""
    assert await stores.idempotency.claim("d1", "task-1", "h1", 30) is None
    assert await stores.idempotency.claim("d1", "task-2", "h1", 30) == ("task-1", "h1", False)
    assert not await stores.idempotency.commit("d1", "task-2", "h1", 60)  # not its claim
    assert await stores.idempotency.commit("d1", "task-1", "h1", 60)
    assert await stores.idempotency.claim("d1", "task-3", "h1", 30) == ("task-1", "h1", True)


async def test_limits_refuse_past_the_burst_and_the_cap(stores: Stores) -> None:
    """Auth rate-limits with the limits module alone; the cap counts task records that
    exist (an entry whose record is gone holds no work, so it is swept, not counted)."""
    for _ in range(3):
        await stores.limits.take_tokens("tenant-a", rate=0.1, burst=3, cost=1)
    with pytest.raises(RateLimited) as refused:
        await stores.limits.take_tokens("tenant-a", rate=0.1, burst=3, cost=1)
    assert refused.value.retry_after == 10
    await stores.limits.take_tokens("tenant-b", rate=0.1, burst=3, cost=1)

    for task_id in ("t1", "t2"):
        await stores.tasks.create(task_id, BELL, 1)
    await stores.limits.admit("tenant-a", ["t1", "t2"], cap=2, stale_seconds=3600)
    with pytest.raises(RateLimited):
        await stores.limits.admit("tenant-a", ["t3"], cap=2, stale_seconds=3600)
    await stores.tasks.delete("t2")
    await stores.limits.admit("tenant-a", ["t3"], cap=2, stale_seconds=3600)
