"""Whole batches on real Redis and NATS (issue 14): an idempotent POST /batches, the batch
seed and tags, a wait on every task at once, a cancel of what has not finished, and
another tenant's batch reported as missing. Workers run in-process with a fake executor
(`tests.integration.test_worker_inprocess`), so a task runs, blocks or ends on cue."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from qmill.server import batches, constants, tasks
from qmill.server.bus import Bus
from qmill.server.config import Settings
from qmill.server.errors import (
    IdempotencyConflict,
    IdempotencyInProgress,
    InvalidRequest,
    RateLimited,
    RequestError,
    TaskNotFound,
)
from qmill.server.models import BatchRequest, TaskStatus
from qmill.server.store import Stores
from tests.conftest import BELL, wait_for
from tests.integration.test_batches_rollback import damage, raw
from tests.integration.test_worker_inprocess import (
    FakeExecutor,
    StartWorker,
    running,
    start_worker,
    tuned,
    until,
)

__all__ = ["raw", "start_worker"]  # fixtures

TENANT, OTHER = "tenant-a", "tenant-b"


def body(n: int, **batch: object) -> dict[str, object]:
    return {"tasks": [{"quantum_circuit": BELL, "shots": 10} for _ in range(n)], **batch}


async def test_a_retried_batch_returns_the_first_and_creates_nothing(
    settings: Settings, stores: Stores, bus: Bus, raw: aioredis.Redis
) -> None:
    first = await batches.submit_batch(body(3), settings, stores, bus, TENANT, "k1")
    before = await damage(raw)
    again = await batches.submit_batch(body(3), settings, stores, bus, TENANT, "k1")
    assert (again.batch_id, again.task_ids, again.replayed) == (
        first.batch_id,
        first.task_ids,
        True,
    )
    assert not first.replayed
    assert (
        await damage(raw)
        == before
        == {
            "records": 3,
            "batches": 1,
            "idempotency": 1,
            "listing": 3,
            "in_flight": 3,
        }
    )
    js = await bus.connect()
    assert (await js.stream_info(constants.STREAM_NAME)).state.messages == 3
    with pytest.raises(IdempotencyConflict):  # same key, other body
        await batches.submit_batch(body(2), settings, stores, bus, TENANT, "k1")
    # Keys are per tenant: another tenant's "k1" is its own batch.
    theirs = await batches.submit_batch(body(3), settings, stores, bus, OTHER, "k1")
    assert theirs.batch_id != first.batch_id and not theirs.replayed
    # A key first used for one task never replays as a batch, nor the reverse.
    await tasks.submit({"quantum_circuit": BELL}, settings, stores, bus, "k2", TENANT)
    with pytest.raises(IdempotencyConflict):
        await batches.submit_batch(body(1), settings, stores, bus, TENANT, "k2")
    with pytest.raises(IdempotencyConflict):
        await tasks.submit({"quantum_circuit": BELL}, settings, stores, bus, "k1", TENANT)


async def test_a_key_in_flight_is_409_and_a_refusal_releases_it(
    settings: Settings, stores: Stores, bus: Bus, raw: aioredis.Redis
) -> None:
    digest = tasks.idempotency_digest(TENANT, "busy")
    pending = batches.batch_hash(BatchRequest.model_validate(body(1)))
    await stores.idempotency.claim(digest, "other-request", pending, 30)
    with pytest.raises(IdempotencyInProgress):
        await batches.submit_batch(body(1), settings, stores, bus, TENANT, "busy")
    capped = tuned(settings, auth={"max_in_flight": 2})
    with pytest.raises(RateLimited):
        await batches.submit_batch(body(3), capped, stores, bus, TENANT, "k3")
    assert (await damage(raw))["idempotency"] == 1  # only "busy": "k3" was released
    retried = await batches.submit_batch(body(2), capped, stores, bus, TENANT, "k3")
    assert not retried.replayed and len(retried.task_ids) == 2


async def test_each_task_gets_the_batch_seed_plus_its_index_unless_its_own(
    settings: Settings, stores: Stores, bus: Bus
) -> None:
    request = body(3, seed=100)
    request["tasks"][1]["seed"] = 7  # type: ignore[index]
    batch = await batches.submit_batch(request, settings, stores, bus)
    seeds = [v.seed for v in (await batches.get_batch(stores, batch.batch_id)).tasks]
    assert seeds == [100, 7, 102]
    top = 2**63 - 1
    with pytest.raises(InvalidRequest) as over:
        await batches.submit_batch(body(3, seed=top - 1), settings, stores, bus)
    assert over.value.index == 2 and "tasks[2]" in over.value.message
    last = body(3, seed=top - 1)
    last["tasks"][2]["seed"] = 1  # type: ignore[index]
    await batches.submit_batch(last, settings, stores, bus)  # task 2's own seed: no overflow


async def test_bad_batch_tags_are_refused(settings: Settings, stores: Stores, bus: Bus) -> None:
    for tags in ({"a:b": "x"}, {"k": "\x07"}, {"k": 1}, ["k"], {f"k{i}": "v" for i in range(17)}):
        with pytest.raises(RequestError) as refused:
            await batches.submit_batch(body(1, tags=tags), settings, stores, bus)
        assert refused.value.status_code == 422


async def test_wait_returns_when_the_last_task_ends_and_not_before(
    settings: Settings, stores: Stores, bus: Bus, start_worker: StartWorker
) -> None:
    executor = FakeExecutor()
    batch = await batches.submit_batch(body(3), settings, stores, bus)
    first, second, third = batch.task_ids
    gates = {task_id: asyncio.Event() for task_id in (second, third)}
    for task_id, gate in gates.items():
        executor.plan(task_id, gate)
    other = await batches.submit_batch(body(1), settings, stores, bus)
    never = asyncio.Event()
    executor.plan(other.task_ids[0], never)
    # One task per simulation (worker batching off): the fake's gates hold single tasks;
    # a batch's tasks run together would finish together (tests/integration/test_worker_batches.py).
    one_each = {"max_concurrent_tasks": 4, "batch_max_tasks": 1}
    await start_worker(executor, tuned(settings, worker=one_each))
    await until(stores, first, TaskStatus.COMPLETED)
    await running(executor, second)
    waiting = asyncio.create_task(batches.get_batch(stores, batch.batch_id, wait_seconds=20))
    gates[second].set()
    await until(stores, second, TaskStatus.COMPLETED)
    await asyncio.sleep(0.2)
    assert not waiting.done()  # one task still runs
    gates[third].set()
    started = time.monotonic()
    view = await asyncio.wait_for(waiting, 5)
    assert time.monotonic() - started < 2  # woken by the finish, not by its 20 s
    assert view.done and view.counts.completed == 3
    assert [t.status for t in view.tasks] == [TaskStatus.COMPLETED] * 3
    # An unfinished batch answers after the wait runs out, not done.
    timed = await batches.get_batch(stores, other.batch_id, wait_seconds=0.3)
    assert not timed.done and timed.counts.processing == 1
    never.set()


async def test_cancel_stops_running_and_pending_tasks_and_keeps_finished_ones(
    settings: Settings,
    stores: Stores,
    bus: Bus,
    start_worker: StartWorker,
    raw: aioredis.Redis,
) -> None:
    executor = FakeExecutor()
    batch = await batches.submit_batch(body(3), settings, stores, bus, TENANT)
    done, runs, waits = batch.task_ids
    executor.plan(runs, asyncio.Event())  # runs until stopped
    # One task per simulation: a task running in a shared simulation is not stopped by a
    # cancel, only its result discarded (tests/integration/test_worker_batches.py).
    one_each = {"max_concurrent_tasks": 1, "batch_max_tasks": 1}
    await start_worker(executor, tuned(settings, worker=one_each))
    await until(stores, done, TaskStatus.COMPLETED)
    await running(executor, runs)
    with pytest.raises(TaskNotFound):  # another tenant's batch is a missing one
        await batches.cancel_batch(stores, bus, batch.batch_id, OTHER)
    view = await batches.cancel_batch(stores, bus, batch.batch_id, TENANT)
    assert [t.status for t in view.tasks] == [
        TaskStatus.COMPLETED,
        TaskStatus.CANCELLED,
        TaskStatus.CANCELLED,
    ]
    assert view.done and view.counts.cancelled == 2 and view.counts.completed == 1
    await wait_for(lambda: runs in executor.stopped, 5)  # the bus signal stopped it
    assert waits not in executor.runs
    assert (await damage(raw))["in_flight"] == 0
    again = await batches.cancel_batch(stores, bus, batch.batch_id, TENANT)  # nothing left
    assert again.counts == view.counts


async def test_another_tenants_batch_is_missing_to_every_operation(
    settings: Settings, stores: Stores, bus: Bus
) -> None:
    batch = await batches.submit_batch(body(2), settings, stores, bus, TENANT)
    for wait in (0.0, 5.0):
        started = time.monotonic()
        with pytest.raises(TaskNotFound):
            await batches.get_batch(stores, batch.batch_id, OTHER, wait_seconds=wait)
        assert time.monotonic() - started < 2  # refused before any wait
    with pytest.raises(TaskNotFound):
        await batches.cancel_batch(stores, bus, batch.batch_id, OTHER)
    for unknown in ("5b8e3f4e-0000-4000-8000-000000000000", "not-a-uuid"):
        with pytest.raises(TaskNotFound):
            await batches.get_batch(stores, unknown, wait_seconds=5.0)
        with pytest.raises(TaskNotFound):
            await batches.cancel_batch(stores, bus, unknown)
    assert (await batches.get_batch(stores, batch.batch_id, TENANT)).counts.pending == 2
