"""Small tasks run together (`qmill_worker.batches`), on the real NATS and Redis.

Each task of a batch keeps its own result, seed and failure: a program that does not
parse and an experiment Aer fails end only their own tasks, a seeded task's counts are
the ones it gets alone, and a cancel inside a running batch discards only that result.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from qmill.server import constants, tasks
from qmill.server.bus import Bus
from qmill.server.config import Settings
from qmill.server.models import TaskStatus
from qmill.server.store import Stores
from qmill_worker.executors import ThreadExecutor
from qmill_worker.grouped import Answer
from qmill_worker.simulator import SimJob, simulate
from tests.conftest import BELL, submit_task
from tests.integration.test_worker_inprocess import (  # noqa: F401 (fixture)
    FakeExecutor,
    StartWorker,
    running,
    settled,
    start_worker,
    tuned,
    until,
)

# Not Clifford (an rx), so it runs on the statevector method, and its counts show a seed.
SKEWED = BELL.replace("cx q[0],q[1];", "cx q[0],q[1]; rx(0.4) q[1];")


class RecordingExecutor(ThreadExecutor):
    """Real simulations in a thread; records the task ids of each group it ran."""

    def __init__(self) -> None:
        super().__init__(slots=1, threads=1)
        self.groups: list[list[str]] = []
        self.steps: dict[str, list[object]] = {}  # what the fixture's teardown reads

    async def run_group(self, jobs: Sequence[SimJob], timeout: float) -> list[Answer]:
        self.groups.append([job.task_id for job in jobs])
        return await super().run_group(jobs, timeout)


async def test_a_batch_keeps_each_tasks_result_seed_and_failure(
    settings: Settings,
    stores: Stores,
    bus: Bus,
    start_worker: StartWorker,  # noqa: F811
) -> None:
    one_slot = tuned(settings, worker={"max_concurrent_tasks": 1})
    seeds = [11, None, 12, 11 + 2113, None, None]
    ids = []
    for seed in seeds:
        body = {"quantum_circuit": SKEWED, "shots": 200, "seed": seed, "memory": True}
        ids.append((await tasks.submit(body, one_slot, stores, bus)).task_id)
    poisoned, too_wide = ids[4], ids[5]
    # Their records as a broken store (or a changed parser) might leave them: a program
    # that does not parse, and one Aer cannot hold (40 qubits) under a small plan.
    redis = stores.client.redis
    await redis.hset(constants.task_key(poisoned), "circuit", "OPENQASM 3.0; qubit[2] q; nope q;")
    wide = 'OPENQASM 3.0; include "stdgates.inc"; qubit[40] q; bit[40] c; h q; c = measure q;'
    await redis.hset(constants.task_key(too_wide), "circuit", wide)
    executor = RecordingExecutor()
    await start_worker(executor, one_slot)  # type: ignore[arg-type]
    views = [await until(stores, t, TaskStatus.COMPLETED, 20) for t in ids[:4]]
    failed = [await until(stores, t, TaskStatus.FAILED, 20) for t in (poisoned, too_wide)]
    await settled(bus)
    assert sorted(executor.groups[0]) == sorted(ids)  # one simulation for all six
    assert failed[0].error is not None and "nope" in failed[0].error
    assert failed[1].error is not None and failed[1].error.startswith("simulator error:")
    assert "memory" in failed[1].error.lower()
    for view, seed in zip(views, seeds, strict=False):
        assert view.result is not None and sum(view.result.values()) == 200
        if seed is not None:
            plan = str(await redis.hget(constants.task_key(view.task_id), "plan"))
            alone = simulate(SimJob(view.task_id, SKEWED, 200, seed, True, plan), threads=1)
            assert (view.result, view.memory) == (alone.counts, alone.memory)


async def test_a_cancel_inside_a_running_batch_discards_only_that_result(
    settings: Settings,
    stores: Stores,
    bus: Bus,
    start_worker: StartWorker,  # noqa: F811
) -> None:
    one_slot = tuned(settings, worker={"max_concurrent_tasks": 1})
    first, second, third = [await submit_task(one_slot, stores, bus, BELL, 10) for _ in range(3)]
    executor, gate = FakeExecutor(), asyncio.Event()
    executor.plan(first, gate)
    await start_worker(executor, one_slot)
    await running(executor, first)
    await tasks.cancel(stores, bus, second)
    await asyncio.sleep(0.05)  # the cancel signal reached the worker, which let it run on
    gate.set()
    await until(stores, third, TaskStatus.COMPLETED)
    await settled(bus)
    assert executor.groups == [[first, second, third]] and executor.stopped == []
    assert (await stores.tasks.get(first)).status == TaskStatus.COMPLETED
    assert (await stores.tasks.get(second)).status == TaskStatus.CANCELLED


RY = (
    'OPENQASM 3.0; include "stdgates.inc"; input float theta; qubit[2] q; bit[2] c; '
    "ry(theta) q[0]; cx q[0], q[1]; c = measure q;"
)


async def test_a_sweep_fetched_with_a_batch_runs_alone_and_its_cancel_stops_it(
    settings: Settings,
    stores: Stores,
    bus: Bus,
    start_worker: StartWorker,  # noqa: F811
) -> None:
    one_slot = tuned(settings, worker={"max_concurrent_tasks": 1})
    first = await submit_task(one_slot, stores, bus, BELL, 10)
    sweep_body = {"quantum_circuit": RY, "shots": 10, "parameters": {"theta": [0.1, 0.2]}}
    sweep = (await tasks.submit(sweep_body, one_slot, stores, bus)).task_id
    third = await submit_task(one_slot, stores, bus, BELL, 10)
    executor, gate, sweeping = FakeExecutor(), asyncio.Event(), asyncio.Event()
    executor.plan(first, gate)
    executor.plan(sweep, sweeping)  # runs until its cancel stops it
    await start_worker(executor, one_slot)
    await running(executor, first)
    gate.set()
    await running(executor, sweep)
    await tasks.cancel(stores, bus, sweep)
    await until(stores, third, TaskStatus.COMPLETED)
    for _ in range(100):  # the cancel signal reaches the worker, which stops the run
        if executor.stopped:
            break
        await asyncio.sleep(0.02)
    await settled(bus)
    # The small tasks ran as one simulation; the sweep alone, in the batch's slot, and
    # its user's cancel stopped it instead of letting it run on.
    assert executor.groups == [[first, third]]
    assert executor.stopped == [sweep]
    assert (await stores.tasks.get(sweep)).status == TaskStatus.CANCELLED
