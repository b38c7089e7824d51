"""The parse processes (`qmill.server.qasm.pool`), as real processes: the deadline is a
SIGKILL, the event loop stays free, slots are bounded per process and per tenant, parse
time is charged to the tenant's rate limit (real Redis), and no process outlives the pool.

Issue 13: a 145-byte program parsed for 39.8 s on the submit function's event loop (a
Bell submit meanwhile waited 38.8 s); three 586 KB programs held the one big-parse slot
for 15 s each, and a normal program behind them got a 503 after 45 s.
"""

from __future__ import annotations

import asyncio
import time

import psutil
import pytest
import uvloop

from qmill.server import tasks
from qmill.server.config import Settings
from qmill.server.errors import (
    DependencyUnavailable,
    LimitExceeded,
    RateLimited,
    TooLargeToDraw,
)
from qmill.server.models import SubmitRequest
from qmill.server.qasm import pool, zygote
from qmill.server.store import Stores

Q3 = 'OPENQASM 3.0; include "stdgates.inc"; '
BELL = Q3 + "qubit[2] q; bit[2] c; h q[0]; cx q[0], q[1]; c = measure q;"
# A gate definition: never inline. Parsed in a few ms.
SMALL = Q3 + "gate g a { h a; } qubit[2] q; bit[2] c; g q[0]; cx q[0], q[1]; c = measure q;"
# Each call of g13 copies its 16384-gate definition (~1 s): many seconds of parsing in
# 500 bytes, in calls no deadline check interrupts quickly.
_CHAIN = "gate g0 a { x a; x a; } " + " ".join(
    f"gate g{i} a {{ g{i - 1} a; g{i - 1} a; }}" for i in range(1, 14)
)
SLOW = Q3 + _CHAIN + " qubit q; bit c; " + "g13 q; " * 30 + "c = measure q;"
DEADLINE = 2.0
# SLOW builds 16384 gates per call: under the default max_gates (20,000) its second call
# meets the gate limit after ~1.9 s here, a race with the deadline. With this bound only
# the deadline can stop it.
GATES = 30 * 16384 + 1


def limits(**values: object) -> Settings:
    return Settings.model_validate(
        {
            "limits": {
                "max_parse_seconds": DEADLINE,
                "max_parse_wait_seconds": 0.3,
                "max_gates": GATES,
                **values,
            }
        }
    )


def requests(program: str) -> list[SubmitRequest]:
    return [SubmitRequest(quantum_circuit=program)]


def parse_processes() -> list[psutil.Process]:
    """The zygote and its children (not the session's nats-server and redis-server)."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and (
                proc.name() == pool.CHILD_NAME or zygote.__name__ in " ".join(proc.cmdline())
            ):
                found.append(proc)
        except psutil.Error:
            continue
    return found


@pytest.fixture(scope="module", autouse=True)
def _warm() -> None:
    """The zygote imports qiskit once per process (~1.5 s): not inside a timed test."""

    async def parse() -> None:
        await tasks.validate(requests(SMALL), limits())

    asyncio.run(parse())


async def test_the_deadline_kills_the_parse_and_other_requests_go_on() -> None:
    settings = limits(parse_processes=2)
    started = time.monotonic()
    slow = asyncio.ensure_future(tasks.validate(requests(SLOW), settings))
    await asyncio.sleep(0.05)
    # Meanwhile: a Bell program inline, and another one out of line, both answered.
    bell_started = time.monotonic()
    (bell,) = await tasks.validate(requests(BELL), settings)
    (small,) = await tasks.validate(requests(SMALL), settings)
    assert bell.parsed.qubits == small.parsed.qubits == 2
    assert time.monotonic() - bell_started < DEADLINE
    assert not slow.done()
    with pytest.raises(LimitExceeded) as info:
        await slow
    assert info.value.limit == "parse seconds"
    # Within the budget (and a margin for a loaded machine), not after the parse.
    assert time.monotonic() - started < DEADLINE + 2
    # The killed child was replaced: the next program out of line is parsed.
    (again,) = await tasks.validate(requests(SMALL), settings)
    assert again.plan.method.value == "statevector"


async def test_a_full_pool_answers_503_at_once_and_a_tenant_gets_its_share() -> None:
    settings = limits(parse_processes=2, tenant_parse_share=0.5, max_parse_seconds=2.5)
    hog = asyncio.ensure_future(tasks.validate(requests(SLOW), settings, owner="a"))
    await asyncio.sleep(0.1)
    # Tenant a holds its share (one of two): its next big parse waits briefly, then 429.
    with pytest.raises(RateLimited) as limited:
        await tasks.validate(requests(SMALL), settings, owner="a")
    assert limited.value.retry_after is not None
    # Tenant b gets the other process.
    (accepted,) = await tasks.validate(requests(SMALL), settings, owner="b")
    assert accepted.parsed.qubits == 2
    # With auth off (one tenant) a request may use every process; when all are busy,
    # the wait is bounded: a 503 with Retry-After in well under a second, not 45 s.
    other = asyncio.ensure_future(tasks.validate(requests(SLOW), settings))
    await asyncio.sleep(0.1)
    waited = time.monotonic()
    with pytest.raises(DependencyUnavailable) as busy:
        await tasks.validate(requests(SMALL), settings)
    assert busy.value.service == "parser" and busy.value.retry_after
    assert time.monotonic() - waited < 2
    for job in (hog, other):
        with pytest.raises(LimitExceeded):
            await job


async def test_parse_time_is_charged_to_the_tenants_rate_limit(stores: Stores) -> None:
    settings = Settings.model_validate(
        {
            "limits": {"max_parse_seconds": 1, "parse_seconds_per_token": 0.1},
            "auth": {"rate_per_second": 0.5, "burst": 5},
        }
    )
    # The slow program (cut off at 1 s) costs its tenant ~10 tokens: the bucket of 5 and
    # ~5 in debt, so the next request waits ~12 s at 0.5/s; its 422 stands.
    with pytest.raises(LimitExceeded):
        await tasks.validate(requests(SLOW), settings, owner="t", rate=stores.limits)
    with pytest.raises(RateLimited) as limited:
        await stores.limits.take_tokens("t", 0.5, 5, 1)
    assert limited.value.retry_after >= 8
    # Another tenant's bucket is untouched.
    await stores.limits.take_tokens("u", 0.5, 5, 5)


async def test_a_drawing_is_made_out_of_line_within_the_deadline() -> None:
    """GET /tasks/{id}/diagram.txt parses and draws in a parse process: a program that
    would parse for minutes is killed at the deadline, a Bell drawing meanwhile is
    answered, and a circuit too wide to draw is refused without drawing it."""
    deadline = 1.0
    settings = limits(parse_processes=2, max_parse_seconds=deadline)

    def job(program: str) -> pool.DrawJob:
        return pool.DrawJob(settings, program, deadline)

    started = time.monotonic()
    slow = asyncio.ensure_future(tasks.parse_out_of_line(job(SLOW), settings))
    await asyncio.sleep(0.05)
    bell = await tasks.parse_out_of_line(job(BELL), settings)
    assert "q_0: ┤ H ├──■──" in bell["diagram"] and not slow.done()
    with pytest.raises(TooLargeToDraw):
        await tasks.parse_out_of_line(job(Q3 + "qubit[1000] q; h q;"), settings)
    with pytest.raises(LimitExceeded) as info:
        await slow
    assert info.value.limit == "parse seconds"
    assert time.monotonic() - started < deadline + 2


def test_big_replies_from_a_reused_child_under_the_functions_event_loop() -> None:
    """The functions run on uvloop, which makes the child's socket non-blocking: a
    blocking read of a reply bigger than the socket buffer failed half-way (EAGAIN,
    "the parse process died"), so a 1000-program batch after a 300-program one was a
    400. Replies are read with the loop's own socket calls."""

    async def batches() -> list[int]:
        sizes = []
        for count in (300, 1000, 1000):
            accepted = await tasks.validate(
                [SubmitRequest(quantum_circuit=BELL)] * count, limits(), batch=True
            )
            sizes.append(len(accepted))
        return sizes

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(batches()) == [300, 1000, 1000]


def test_no_parse_process_outlives_the_pool() -> None:
    async def parse() -> None:
        await tasks.validate(requests(SMALL), limits())

    asyncio.run(parse())
    running = parse_processes()
    assert {p.name() for p in running} >= {pool.CHILD_NAME}
    pool.shutdown()
    _gone, alive = psutil.wait_procs(running, timeout=5)
    assert not alive, alive
