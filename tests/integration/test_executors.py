"""The process executor and its fork server, with real simulation processes.

Every simulation child is forked from one warm fork server per executor; these tests
hold it to what the worker relies on: a killed or runaway child costs one task, not
the executor; a dead fork server is replaced; nothing outlives the executor or its
owner, even when the owner is SIGKILLed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import psutil
import pytest

from qmill_worker.errors import FailureReason, SimulationError, SimulationTimeout
from qmill_worker.executors import ProcessExecutor
from qmill_worker.simulator import SimJob
from tests.conftest import BELL, wait_for

# ~1 s or more of statevector simulation on one thread here: long enough to be caught
# running, and far too long for the 0.3 s limit below.
SLOW = (
    'OPENQASM 3.0; include "stdgates.inc"; qubit[23] q; bit[23] c; '
    + "h q; t q; rx(0.3) q; " * 6
    + "c = measure q;"
)


def bell(task_id: str = "bell") -> SimJob:
    return SimJob(task_id=task_id, circuit=BELL, shots=200)


def descendants(pid: int | None = None) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def fork_server(pid: int | None = None) -> psutil.Process:
    direct = [p for p in psutil.Process(pid).children() if "qmill_worker.simproc" in p.cmdline()]
    assert len(direct) == 1, direct
    return direct[0]


async def busy_child(server: psutil.Process) -> psutil.Process:
    """The child that is simulating right now."""
    for _ in range(100):
        for child in server.children():
            with contextlib.suppress(psutil.Error):
                if child.cpu_percent(0.05) > 20:
                    return child
        await asyncio.sleep(0.02)
    raise AssertionError("no child is simulating")


def assert_bell(counts: dict[str, int], shots: int = 200) -> None:
    assert set(counts) <= {"00", "11"} and sum(counts.values()) == shots


def simulation_processes(pid: int | None = None) -> list[psutil.Process]:
    found = []
    for proc in descendants(pid):
        with contextlib.suppress(psutil.Error):
            if "qmill_worker.simproc" in proc.cmdline() and proc.status() != "zombie":
                found.append(proc)
    return found


@pytest.fixture
async def executor() -> AsyncIterator[ProcessExecutor]:
    ex = ProcessExecutor(2, 1)
    await ex.start()
    try:
        yield ex
    finally:
        await ex.close()
    assert not simulation_processes()


async def test_children_are_forked_from_one_server(executor: ProcessExecutor) -> None:
    server = fork_server()
    children = server.children()
    assert len(children) == 2
    # Forked, not started: a child runs the server's program, the worker has one child.
    assert all(c.cmdline() == server.cmdline() for c in children)
    results = await asyncio.gather(*(executor.run(bell(f"t{i}"), 30) for i in range(6)))
    for result in results:
        assert_bell(result.counts)
    assert {c.pid for c in fork_server().children()} == {c.pid for c in children}


async def test_a_killed_child_fails_its_task_retryably_and_is_replaced(
    executor: ProcessExecutor,
) -> None:
    server = fork_server()
    running = asyncio.create_task(executor.run(SimJob("slow", SLOW, 10), 60))
    victim = await busy_child(server)
    victim.kill()
    with pytest.raises(SimulationError) as caught:
        await running
    assert caught.value.retryable
    assert caught.value.message == "simulator process died (signal 9)"
    assert caught.value.reason is FailureReason.CRASHED
    results = await asyncio.gather(*(executor.run(bell(f"a{i}"), 30) for i in range(4)))
    for result in results:
        assert_bell(result.counts)
    assert fork_server().pid == server.pid  # the server itself was untouched
    assert victim.pid not in {c.pid for c in server.children()}


async def test_a_failure_in_the_child_keeps_its_reason(executor: ProcessExecutor) -> None:
    """The reason crosses the child's JSON line protocol with the message."""
    with pytest.raises(SimulationError) as caught:
        await executor.run(SimJob("bad", "OPENQASM 3.0; qubit[1] q; nonsense q[0];", 10), 30)
    assert caught.value.reason is FailureReason.INVALID_CIRCUIT
    assert caught.value.message.startswith("invalid OpenQASM") and not caught.value.retryable


def live_children(server: psutil.Process) -> set[int]:
    found = set()
    for child in server.children():
        with contextlib.suppress(psutil.Error):
            if child.status() != psutil.STATUS_ZOMBIE:
                found.add(child.pid)
    return found


async def test_a_runaway_is_killed_at_its_limit(executor: ProcessExecutor) -> None:
    server = fork_server()
    await wait_for(lambda: len(live_children(server)) == 2, 10)
    before = live_children(server)
    begin = time.monotonic()
    with pytest.raises(SimulationTimeout):
        await executor.run(SimJob("runaway", SLOW, 10), 0.3)
    assert time.monotonic() - begin < 5  # stopped, not waited for
    assert_bell((await executor.run(bell(), 30)).counts)
    # The replacement is forked in the background: the other child may run the Bell task
    # before it exists.
    await wait_for(lambda: len(live_children(server)) == 2, 10)
    after = live_children(server)
    assert len(before - after) == 1  # one child replaced


async def test_a_dead_fork_server_is_replaced(executor: ProcessExecutor) -> None:
    old = fork_server()
    old_children = old.children()
    old.kill()
    _gone, alive = psutil.wait_procs([old, *old_children], timeout=10)
    assert not alive  # its children died with it (PR_SET_PDEATHSIG)
    await asyncio.sleep(0.2)  # the executor's loop sees the server's pipe close
    # The next tasks find their children dead and get new ones from a new server.
    results = await asyncio.gather(*(executor.run(bell(f"n{i}"), 30) for i in range(4)))
    for result in results:
        assert_bell(result.counts)
    assert fork_server().pid != old.pid


_OWNER = """
import asyncio, sys
from qmill_worker.executors import ProcessExecutor

async def main():
    ex = ProcessExecutor(2, 1)
    await ex.start()
    print("ready", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def test_a_sigkilled_owner_leaves_no_simulation_process() -> None:
    with subprocess.Popen(
        [sys.executable, "-c", _OWNER], stdout=subprocess.PIPE, text=True
    ) as owner:
        try:
            assert owner.stdout is not None and owner.stdout.readline().strip() == "ready"
            left = simulation_processes(owner.pid)
            assert len(left) == 3  # the fork server and its two children
            os.kill(owner.pid, signal.SIGKILL)
            owner.wait(10)
            _gone, alive = psutil.wait_procs(left, timeout=10)
            assert not alive, alive
        finally:
            if owner.poll() is None:
                owner.kill()
