"""Long-polls against a real redis-server: the per-tenant cap on open ones (store/polls.py)
and the one listener that wakes them (store/waiters.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import pytest

from qmill.server import constants
from qmill.server.errors import RateLimited, TaskNotFound
from qmill.server.models import TaskStatus
from qmill.server.store import Outcome, Stores, polls
from tests.conftest import BELL


async def test_a_tenant_holds_at_most_cap_polls_and_a_slot_frees_when_one_answers(
    stores: Stores,
) -> None:
    async with contextlib.AsyncExitStack() as held:
        for _ in range(3):
            await held.enter_async_context(stores.polls.hold("t1", 3, 30))
        with pytest.raises(RateLimited) as refused:
            await held.enter_async_context(stores.polls.hold("t1", 3, 30))
        # Told to come back soon (a slot frees as any poll answers), never at once, and
        # never so late that a client gives up instead.
        retry_after = refused.value.retry_after
        assert retry_after is not None and 1 <= retry_after <= polls.RETRY_AFTER_MAX_SECONDS
        assert refused.value.status_code == 429 and "max_long_polls_per_tenant" in str(
            refused.value
        )
        # Another tenant (or everyone, with auth off) has slots of its own.
        await held.enter_async_context(stores.polls.hold(constants.ANONYMOUS_TENANT, 3, 30))
    # Every poll released its slot as it ended.
    assert await stores.client.redis.zcard(constants.long_polls_key("t1")) == 0
    async with stores.polls.hold("t1", 3, 30):
        pass


async def test_a_slot_of_a_poll_that_never_ended_lapses(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A function killed mid-poll never releases its slot: the lease runs out instead."""
    monkeypatch.setattr(polls, "LEASE_MARGIN_SECONDS", 0.0)
    abandoned = stores.polls.hold("t2", 1, 0.3)
    await abandoned.__aenter__()  # and never __aexit__, as if the process died
    with pytest.raises(RateLimited):
        await stores.polls.hold("t2", 1, 0.3).__aenter__()
    await asyncio.sleep(0.5)
    async with stores.polls.hold("t2", 1, 0.3):
        pass


async def test_long_polls_arriving_together_share_one_listener(stores: Stores) -> None:
    """The first waits of a process, arriving together, each started a listener on one
    shared pub/sub connection (and leaked the others): "readuntil() called while another
    coroutine is already waiting", the listener died, and every long-poll ran its full
    wait however soon the task finished."""
    task_id = str(uuid.uuid4())
    await stores.tasks.create(task_id, BELL, 100, qubits=2, depth=3)
    waits = [asyncio.create_task(stores.waiters.wait(task_id, 30)) for _ in range(50)]
    await asyncio.sleep(0.5)
    clients = await stores.client.redis.client_list()
    assert sum(int(c.get("psub", 0)) > 0 for c in clients) == 1
    started = time.monotonic()
    assert await stores.tasks.cancel(task_id, None) == Outcome.APPLIED
    views = await asyncio.wait_for(asyncio.gather(*waits), 10)
    assert {view.status for view in views} == {TaskStatus.CANCELLED}
    assert time.monotonic() - started < 5


async def test_a_wait_holds_its_slot_until_it_answers_and_gives_it_back_with_the_answer(
    stores: Stores,
) -> None:
    """The slot is taken with the wait's first read and given back with its last (one
    round trip each); a wait on a finished task, or on a missing one, holds none after."""
    key = constants.long_polls_key("t3")
    task_id = str(uuid.uuid4())
    await stores.tasks.create(task_id, BELL, 100, qubits=2, depth=3)
    waiting = asyncio.create_task(stores.waiters.wait(task_id, 30, slot=stores.polls.slot("t3", 1)))
    for _ in range(500):  # until the wait has taken its slot
        if await stores.client.redis.zcard(key):
            break
        await asyncio.sleep(0.01)
    with pytest.raises(RateLimited):  # the tenant's one slot is held by the wait
        await stores.waiters.wait(task_id, 30, slot=stores.polls.slot("t3", 1))
    assert await stores.tasks.cancel(task_id, None) == Outcome.APPLIED
    view = await asyncio.wait_for(waiting, 10)
    assert view.status is TaskStatus.CANCELLED
    assert await stores.client.redis.zcard(key) == 0
    view = await stores.waiters.wait(task_id, 30, slot=stores.polls.slot("t3", 1))
    assert view.status is TaskStatus.CANCELLED
    with pytest.raises(TaskNotFound):
        await stores.waiters.wait(str(uuid.uuid4()), 30, slot=stores.polls.slot("t3", 1))
    assert await stores.client.redis.zcard(key) == 0
