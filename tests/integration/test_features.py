"""Cancel, batches, seeds and per-shot memory against real servers and workers."""

from __future__ import annotations

import pytest

from qmill.server import batches, tasks
from qmill.server.bus import Bus
from qmill.server.config import Settings
from qmill.server.errors import InvalidCircuit, RateLimited, TaskConflict, TaskNotFound
from qmill.server.models import TaskStatus
from qmill.server.store import Stores
from tests.conftest import BELL, Processes
from tests.integration.test_worker import assert_bell, slow_circuit, submit, until, wide_circuit


async def test_cancel_pending_task_never_runs(
    settings: Settings, stores: Stores, bus: Bus, procs: Processes
) -> None:
    task_id = await submit(settings, stores, bus)
    view = await tasks.cancel(stores, bus, task_id)
    assert view.status == TaskStatus.CANCELLED
    procs.worker()
    after = await submit(settings, stores, bus)  # queued behind the cancelled one
    assert_bell(await until(stores, after, TaskStatus.COMPLETED, 60))
    cancelled = await stores.tasks.get(task_id)
    assert cancelled.status == TaskStatus.CANCELLED and cancelled.attempts == 0


async def test_cancel_running_task_stops_it_and_the_worker_goes_on(
    settings: Settings, stores: Stores, bus: Bus, procs: Processes
) -> None:
    procs.worker()
    task_id = await submit(settings, stores, bus, slow_circuit(), shots=10)
    await until(stores, task_id, TaskStatus.PROCESSING, 60)
    assert (await tasks.cancel(stores, bus, task_id)).status == TaskStatus.CANCELLED
    after = await submit(settings, stores, bus)
    assert_bell(await until(stores, after, TaskStatus.COMPLETED, 60))
    view = await stores.tasks.get(task_id)
    assert view.status == TaskStatus.CANCELLED and view.result is None


async def test_cancel_finished_or_unknown_task(
    settings: Settings, stores: Stores, bus: Bus, procs: Processes
) -> None:
    procs.worker()
    task_id = await submit(settings, stores, bus)
    await until(stores, task_id, TaskStatus.COMPLETED, 60)
    with pytest.raises(TaskConflict):
        await tasks.cancel(stores, bus, task_id)
    with pytest.raises(TaskNotFound):
        await tasks.cancel(stores, bus, "0b0e3b0a-0000-4000-8000-000000000000")


async def test_batch_runs_every_task_in_order(
    settings: Settings, stores: Stores, bus: Bus, procs: Processes
) -> None:
    procs.worker()
    body = {"tasks": [{"quantum_circuit": BELL, "shots": s} for s in (10, 20, 30)]}
    batch = await batches.submit_batch(body, settings, stores, bus)
    assert len(batch.task_ids) == 3
    for task_id in batch.task_ids:
        await until(stores, task_id, TaskStatus.COMPLETED, 60)
    views = (await batches.get_batch(stores, batch.batch_id)).tasks
    assert [v.task_id for v in views] == batch.task_ids
    assert [sum((v.result or {}).values()) for v in views] == [10, 20, 30]


async def test_batch_is_all_or_nothing(settings: Settings, stores: Stores, bus: Bus) -> None:
    body = {"tasks": [{"quantum_circuit": BELL}, {"quantum_circuit": "OPENQASM 3.0;\nfoo;"}]}
    with pytest.raises(InvalidCircuit) as info:
        await batches.submit_batch(body, settings, stores, bus)
    assert "tasks[1]" in info.value.message and info.value.line == 2
    js = await bus.connect()
    assert (await js.stream_info("QMILL_TASKS")).state.messages == 0


async def test_largest_batch_is_accepted(settings: Settings, stores: Stores, bus: Bus) -> None:
    """A batch of max_batch_tasks writes its records over a bounded number of Redis
    connections: written all at once, more than the pool's 100 answered 503."""
    size = settings.limits.max_batch_tasks
    body = {"tasks": [{"quantum_circuit": BELL, "shots": 1}] * size}
    batch = await batches.submit_batch(body, settings, stores, bus)
    assert len(set(batch.task_ids)) == size
    js = await bus.connect()
    assert (await js.stream_info("QMILL_TASKS")).state.messages == size
    views = (await batches.get_batch(stores, batch.batch_id)).tasks
    assert [v.task_id for v in views] == batch.task_ids


async def test_seed_reproduces_counts_and_memory_lists_every_shot(
    settings: Settings, stores: Stores, bus: Bus, procs: Processes
) -> None:
    procs.worker()
    h = 'OPENQASM 3.0; include "stdgates.inc"; qubit[3] q; bit[3] c; h q; c = measure q;'
    body = {"quantum_circuit": h, "shots": 200, "seed": 1234, "memory": True}
    ids = [(await tasks.submit(body, settings, stores, bus)).task_id for _ in range(2)]
    first, second = [await until(stores, t, TaskStatus.COMPLETED, 60) for t in ids]
    assert first.result == second.result and first.seed == 1234
    assert first.memory is not None and len(first.memory) == 200
    assert first.memory == second.memory
    assert {m: first.memory.count(m) for m in set(first.memory)} == first.result


async def test_memory_budget_keeps_wide_circuits_from_running_together(
    settings: Settings, stores: Stores, bus: Bus, procs: Processes
) -> None:
    """Two slots, but a budget that holds one 21-qubit statevector (32 MiB) at a time."""
    tight = settings.model_copy(
        update={"worker": settings.worker.model_copy(update={"memory_budget_mb": 48})}
    )
    procs.worker(QMILL_WORKER__MEMORY_BUDGET_MB="48")
    # ~1 s each: were the budget not kept, the second would start within milliseconds.
    ids = [await submit(tight, stores, bus, wide_circuit(), shots=10) for _ in range(2)]
    first, second = sorted(
        [await until(stores, t, TaskStatus.COMPLETED, 120) for t in ids],
        key=lambda v: v.started_at or v.created_at,
    )
    assert first.completed_at is not None and second.started_at is not None
    assert second.started_at >= first.completed_at


async def test_hundred_qubit_ghz_runs_on_the_stabilizer_method(
    settings: Settings, stores: Stores, bus: Bus, procs: Processes
) -> None:
    from tests.unit.test_limits import ghz

    procs.worker()
    task_id = await submit(settings, stores, bus, ghz(100), shots=100)
    view = await until(stores, task_id, TaskStatus.COMPLETED, 60)
    assert view.method == "stabilizer" and view.qubits == 100
    assert set(view.result or {}) <= {"0" * 100, "1" * 100}


async def test_in_flight_cap_per_tenant(settings: Settings, stores: Stores, bus: Bus) -> None:
    capped = settings.model_copy(
        update={"auth": settings.auth.model_copy(update={"max_in_flight": 2})}
    )
    body = {"quantum_circuit": BELL}
    first = await tasks.submit(body, capped, stores, bus, owner="tenant-a")
    await tasks.submit(body, capped, stores, bus, owner="tenant-a")
    with pytest.raises(RateLimited) as info:
        await tasks.submit(body, capped, stores, bus, owner="tenant-a")
    assert "at most 2" in info.value.message
    await tasks.submit(body, capped, stores, bus, owner="tenant-b")  # other tenants unaffected
    await tasks.cancel(stores, bus, first.task_id, owner="tenant-a")  # finishing frees a slot
    await tasks.submit(body, capped, stores, bus, owner="tenant-a")
    with pytest.raises(TaskNotFound):
        await tasks.get(stores, first.task_id, owner="tenant-b")
