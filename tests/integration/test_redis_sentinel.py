"""The store through Redis Sentinel: a primary, a replica, three Sentinels (tests/clusters).

One cluster for the module, whose tests run in order: the store works through the
Sentinels; a task submitted before the primary is SIGKILLed is read, and new tasks
are written, after the failover, by the same `Stores` (no restart); a submit that no
replica acknowledges (the new primary has none left) is a 503 that leaves nothing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from qmill.server import tasks
from qmill.server.bus import Bus
from qmill.server.config import Settings
from qmill.server.errors import DependencyUnavailable
from qmill.server.store import Stores
from qmill.server.store.worker_tasks import Finish, WorkerTasks
from tests.clusters.redis import RedisCluster
from tests.conftest import BELL, submit_task


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    cluster = RedisCluster(Path(tmp_path_factory.mktemp("redis-sentinel")))
    try:
        cluster.start()
        yield cluster
    finally:
        assert cluster.stop() == []


@pytest.fixture(scope="module")
def through_sentinel(replicated: RedisCluster) -> dict[str, object]:
    # Every write of a submit waits for the replica: the first task must survive.
    return {**replicated.settings(), "min_replicas_to_ack": 1}


@pytest.fixture
def sentinel_settings(settings: Settings, through_sentinel: dict[str, object]) -> Settings:
    return settings.model_copy(
        update={"redis": settings.redis.model_validate(through_sentinel)}, deep=True
    )


@pytest.fixture(scope="module")
async def module_stores(through_sentinel: dict[str, object]) -> AsyncIterator[Stores]:
    """One client for the whole module, as a function process keeps one."""
    stores = Stores.connect(
        Settings.model_validate({"redis": through_sentinel}).redis, socket_timeout=1.0
    )
    try:
        yield stores
    finally:
        await stores.close()


SUBMITTED: list[str] = []


async def test_the_store_works_through_sentinel(
    sentinel_settings: Settings, module_stores: Stores, bus: Bus, replicated: RedisCluster
) -> None:
    assert await module_stores.ping()
    task_id = await submit_task(sentinel_settings, module_stores, bus, BELL, shots=10)
    view = await module_stores.tasks.get(task_id)
    assert view.status == "pending"
    SUBMITTED.append(task_id)


async def test_a_task_submitted_before_a_failover_is_read_after_it(
    sentinel_settings: Settings, module_stores: Stores, bus: Bus, replicated: RedisCluster
) -> None:
    assert SUBMITTED, "runs after the test above"
    old = replicated.primary()
    replicated.kill_primary()
    killed = time.monotonic()
    replicated.wait_failover(old)
    failover = time.monotonic() - killed
    # The same client: the calls that went to the dead primary fail (503), the next ones
    # ask the Sentinels again and reach the new primary.
    refused = 0
    followed = time.monotonic()
    deadline = followed + 10
    while True:
        try:
            view = await module_stores.tasks.get(SUBMITTED[0])
            break
        except DependencyUnavailable:
            refused += 1
            assert time.monotonic() < deadline, "the store did not follow the failover"
    assert view.status == "pending"
    late = time.monotonic() - followed
    print(f"failover took {failover:.1f} s; then {refused} reads refused in {late:.2f} s")
    # Writes go to the new primary too (no replica left to wait for: none is asked).
    unwaited = sentinel_settings.model_copy(
        update={"redis": sentinel_settings.redis.model_copy(update={"min_replicas_to_ack": 0})}
    )
    async with _connected(unwaited) as stores:
        task_id = await submit_task(unwaited, stores, bus, BELL, shots=10)
        assert (await stores.tasks.get(task_id)).status == "pending"


async def test_a_submit_no_replica_acknowledges_is_a_503_that_leaves_nothing(
    sentinel_settings: Settings, module_stores: Stores, bus: Bus, replicated: RedisCluster
) -> None:
    # After the failover the new primary has no replica (the old primary is dead).
    body = {"quantum_circuit": BELL, "shots": 10}
    with pytest.raises(DependencyUnavailable, match="acknowledged by 0 of 1 replicas"):
        await tasks.submit(body, sentinel_settings, module_stores, bus, idempotency_key="k-1")
    # The record the submit wrote was withdrawn, and its Idempotency-Key released (a
    # retry is a new attempt): only the two tasks above exist.
    keys = [key async for key in module_stores.client.redis.scan_iter("qmill:task:*")]
    assert len(keys) == 2, keys
    idem = [key async for key in module_stores.client.redis.scan_iter("qmill:idem:*")]
    assert idem == []


@contextlib.asynccontextmanager
async def _connected(settings: Settings) -> AsyncIterator[Stores]:
    stores = Stores.connect(settings.redis, socket_timeout=1.0)
    try:
        yield stores
    finally:
        await stores.close()


async def test_an_outcome_no_replica_acknowledges_is_refused_so_the_worker_releases_it(
    module_stores: Stores, replicated: RedisCluster
) -> None:
    # Still no replica: a worker's result (then acked to NATS) must not be taken as
    # stored, alone or in a batch; the worker releases the task for another attempt.
    task_id = SUBMITTED[0]
    assert (await module_stores.tasks.start(task_id, "w-1")).task is not None
    with pytest.raises(DependencyUnavailable, match="replicas"):
        await module_stores.tasks.fail(task_id, "boom", worker_id="w-1")
    batch = WorkerTasks(module_stores.tasks)
    with pytest.raises(DependencyUnavailable, match="replicas"):
        await batch.finish_many([Finish(task_id, None, "w-1", None, error="boom")])
