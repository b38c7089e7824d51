"""Slots and the memory budget: capacity comes back however a handling task ends."""

from __future__ import annotations

import asyncio

import pytest

from qmill_worker.admission import MemoryBudget, Slots
from qmill_worker.errors import FailureReason


async def test_a_slot_is_taken_at_start_and_given_back_when_the_task_ends() -> None:
    slots = Slots(2)
    gate = asyncio.Event()
    task = slots.start(gate.wait())  # counted before it first runs
    assert slots.free == 1 and len(slots) == 1
    gate.set()
    await task
    await asyncio.sleep(0)  # done callbacks run on the next loop pass
    assert slots.free == 2


async def test_a_task_cancelled_before_it_ran_gives_its_slot_back() -> None:
    slots = Slots(1)
    task = slots.start(asyncio.sleep(10))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)
    assert slots.free == 1


async def test_a_failed_task_gives_its_slot_back() -> None:
    async def broken() -> None:
        raise RuntimeError("bug")

    slots = Slots(1)
    task = slots.start(broken())
    with pytest.raises(RuntimeError):
        await task
    await asyncio.sleep(0)
    assert slots.free == 1


async def test_starting_past_the_free_slots_is_refused() -> None:
    slots = Slots(1)
    gate = asyncio.Event()
    task = slots.start(gate.wait())
    with pytest.raises(RuntimeError):
        slots.start(gate.wait())
    gate.set()
    await task


async def test_wait_free_waits_for_a_slot_and_answers_zero_once_stopping() -> None:
    slots, stopping, gate = Slots(1), asyncio.Event(), asyncio.Event()
    slots.start(gate.wait())
    waiting = asyncio.create_task(slots.wait_free(stopping))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    gate.set()
    assert await asyncio.wait_for(waiting, 1) == 1
    busy = slots.start(asyncio.Event().wait())
    waiting = asyncio.create_task(slots.wait_free(stopping))
    await asyncio.sleep(0.01)
    stopping.set()
    assert await asyncio.wait_for(waiting, 1) == 0  # full, and stopping: no fetch
    busy.cancel()
    with pytest.raises(asyncio.CancelledError):
        await busy


async def test_memory_waits_until_it_fits_and_clamps_to_the_budget() -> None:
    budget = MemoryBudget(100)
    order: list[str] = []

    async def hold(name: str, nbytes: int, gate: asyncio.Event) -> None:
        async with budget.reserve(nbytes):
            order.append(name)
            await gate.wait()

    first_gate, second_gate = asyncio.Event(), asyncio.Event()
    first = asyncio.create_task(hold("huge", 10**9, first_gate))  # more than the budget
    await asyncio.sleep(0.01)
    second = asyncio.create_task(hold("small", 1, second_gate))
    await asyncio.sleep(0.01)
    assert order == ["huge"] and budget.used == 100  # runs alone rather than never
    first_gate.set()
    await first
    await asyncio.sleep(0.01)
    assert order == ["huge", "small"] and budget.used == 1
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    assert budget.used == 0


def test_an_unknown_failure_reason_from_a_child_counts_as_other() -> None:
    assert FailureReason.parse("timeout") is FailureReason.TIMEOUT
    assert FailureReason.parse("from a newer child") is FailureReason.OTHER
    assert FailureReason.parse(None) is FailureReason.OTHER
