"""Atomic status transitions against a real redis-server."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from qmill.server.errors import DependencyUnavailable, TaskNotFound
from qmill.server.models import TaskStatus
from qmill.server.store import Store
from tests.conftest import BELL, Server, free_port


async def new_task(store: Store) -> str:
    task_id = str(uuid.uuid4())
    await store.create(task_id, BELL, 100, qubits=2, depth=3)
    return task_id


async def test_lifecycle(store: Store) -> None:
    task_id = await new_task(store)
    view = await store.get(task_id)
    assert (view.status, view.shots, view.qubits, view.attempts) == (TaskStatus.PENDING, 100, 2, 0)

    started = await store.start(task_id, "w1")
    assert started.task is not None and started.task.circuit == BELL and started.task.attempts == 1
    assert (await store.get(task_id)).status == TaskStatus.PROCESSING

    assert await store.complete(task_id, {"00": 60, "11": 40}, worker_id="w1") == "ok"
    view = await store.get(task_id)
    assert view.status == TaskStatus.COMPLETED
    assert view.result == {"00": 60, "11": 40}
    assert view.completed_at is not None and view.started_at is not None


async def test_terminal_state_is_never_overwritten(store: Store) -> None:
    task_id = await new_task(store)
    await store.start(task_id, "w1")
    assert await store.complete(task_id, {"00": 100}) == "ok"
    assert await store.fail(task_id, "late failure") == "completed"
    assert await store.complete(task_id, {"11": 100}) == "completed"
    again = await store.start(task_id, "w2")
    assert again.task is None and again.status == "completed"
    view = await store.get(task_id)
    assert view.result == {"00": 100} and view.error is None and view.worker_id == "w1"


async def test_failed_is_terminal_too(store: Store) -> None:
    task_id = await new_task(store)
    assert await store.fail(task_id, "boom") == "ok"
    assert await store.complete(task_id, {"00": 1}) == "failed"
    assert (await store.get(task_id)).error == "boom"


async def test_redelivery_counts_attempts(store: Store) -> None:
    task_id = await new_task(store)
    await store.start(task_id, "w1")
    second = await store.start(task_id, "w2")
    assert second.task is not None and second.task.attempts == 2


async def test_missing_task(store: Store) -> None:
    with pytest.raises(TaskNotFound):
        await store.get(str(uuid.uuid4()))
    assert (await store.start(str(uuid.uuid4()), "w")).status == "missing"
    assert await store.complete(str(uuid.uuid4()), {}) == "missing"


async def test_records_expire(store: Store, settings: object) -> None:
    task_id = await new_task(store)
    ttl = await store._redis.ttl(f"qmill:task:{task_id}")
    assert 0 < ttl <= 7 * 24 * 3600


async def test_wait_returns_when_the_task_finishes(store: Store) -> None:
    task_id = await new_task(store)
    waiter = asyncio.create_task(store.wait(task_id, 10.0))
    await asyncio.sleep(0.2)
    assert not waiter.done()
    await store.complete(task_id, {"00": 100})
    view = await asyncio.wait_for(waiter, 2.0)
    assert view.status == TaskStatus.COMPLETED


async def test_wait_times_out_with_current_state(store: Store) -> None:
    task_id = await new_task(store)
    view = await store.wait(task_id, 0.3)
    assert view.status == TaskStatus.PENDING


async def test_unreachable_redis_is_dependency_unavailable() -> None:
    from tests.conftest import free_port

    dead = Store(f"redis://127.0.0.1:{free_port()}", result_ttl_seconds=60, socket_timeout=0.5)
    try:
        with pytest.raises(DependencyUnavailable):
            await dead.get(str(uuid.uuid4()))
        assert await dead.ping() is False
    finally:
        await dead.close()


async def test_a_retrying_store_rides_out_a_redis_restart(tmp_path: Path) -> None:
    """The worker's Store (retries > 0) waits for a restarting Redis instead of failing.

    Regression: the retry policy was redis-py's synchronous ``Retry``, which the asyncio
    client awaits without ever retrying, so every call failed at the first error.
    """
    server = Server("redis", free_port(), tmp_path / "redis")
    server.start()
    store = Store(
        f"redis://127.0.0.1:{server.port}", result_ttl_seconds=60, socket_timeout=None, retries=8
    )
    try:
        task_id = await new_task(store)
        server.kill()
        restart = asyncio.get_running_loop().call_later(1.0, server.start)
        try:
            started = await store.start(task_id, "w1")  # issued while Redis is down
        finally:
            restart.cancel()
        assert started.task is not None and started.task.attempts == 1
    finally:
        await store.close()
        server.stop()


async def test_an_idempotency_key_is_pending_until_committed(store: Store) -> None:
    """A replay must not get the task of a request still in flight: it may be refused."""
    assert await store.claim_idempotency("d1", "task-1", "h1", 30) is None
    assert await store.claim_idempotency("d1", "task-2", "h1", 30) == ("task-1", "h1", False)
    assert not await store.commit_idempotency("d1", "task-2", "h1", 60)  # not its claim
    assert await store.commit_idempotency("d1", "task-1", "h1", 60)
    assert await store.claim_idempotency("d1", "task-3", "h1", 30) == ("task-1", "h1", True)
