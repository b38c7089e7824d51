"""Scenario 6: SIGTERM to a busy worker.

The worker must stop pulling, finish what it holds within its grace period (or, past
it, release it for another worker), and exit 0; nothing may be lost or run twice to
completion. Each round SIGTERMs two workers, each as soon as it holds tasks, and the
two at once (each is judged on its own tasks):

* ``finish``: the grace period (30 s) covers the tasks it holds: they complete on that
  worker, after one attempt. The first round's is started with the cluster.
* ``release``: a fresh worker with one slot, whose grace period (0.5 s) is shorter than
  the task it has just started: it hands it back (nak) and another worker completes it.
  (Holding a task in its one slot, it has no fetch in flight, which a worker with a
  free slot waits out, up to 1 s, before its grace period starts.) A hand-back is not
  an attempt: the task ends with the attempts it had when the victim held it, and its
  record counts the release.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import redis.asyncio as aioredis

from qmill.server import constants
from tests.faults.harness import (
    Checker,
    Circuit,
    Cluster,
    WorkerProc,
    executions,
    messages,
    pattern,
    run_load,
    scaled,
)

# The `finish` victim's grace period covers its tasks even on a machine so busy that
# they take ten times as long as alone; the `release` victim's is shorter than them.
LONG_GRACE = 30.0
SHORT_GRACE = 0.5
RELEASE_ENV = {
    "QMILL_WORKER__GRACE_PERIOD_SECONDS": str(SHORT_GRACE),
    "QMILL_WORKER__MAX_CONCURRENT_TASKS": "1",
}


def long_task(i: int) -> Circuit:
    # ~0.95 s (fast) or ~1.7 s (full) of simulation alone here, more while simulations
    # share the cores: well past the short grace period.
    return pattern(20, tag=i, rounds=scaled(5, 9))


@dataclass
class Stopped:
    kind: str
    victim: WorkerProc
    # What it held at SIGTERM, with each task's attempts then; and since when it held them.
    held: dict[str, int]
    since: datetime
    seconds: float  # from SIGTERM to exit
    code: int


async def busy(
    cluster: Cluster, checker: Checker, worker: WorkerProc
) -> tuple[dict[str, int], datetime]:
    """Wait until ``worker`` holds tasks; return them with their attempt counts then, and
    the time just before the look that found them.

    A task may already be on its second attempt when the worker gets it (released by
    a `release` victim), so "finished without another attempt" is judged against this
    count, not against 1.
    """
    for _ in range(600):
        since = datetime.now(UTC)
        held = (await cluster.holdings(list(checker.accepted))).get(worker.worker_id)
        if held:
            async with aioredis.Redis.from_url(cluster.redis_url) as client:
                counts = [await client.hget(constants.task_key(t), "attempts") for t in held]
            return {t: int(c or 0) for t, c in zip(held, counts, strict=True)}, since
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{worker.worker_id} never held a task")


async def sigterm(worker: WorkerProc) -> tuple[float, int]:
    """SIGTERM; returns (seconds until exit, exit code)."""
    sent = time.monotonic()
    worker.proc.terminate()
    code = await asyncio.to_thread(worker.proc.wait, 120)
    return time.monotonic() - sent, code


async def test_graceful_stop(cluster: Cluster) -> None:
    rounds = scaled(1, 3)
    # Workers that are never stopped (they complete what is released), and the first
    # `finish` victim. Every worker started without a setting of its own gets the long
    # grace period.
    others = scaled(1, 2)
    await cluster.start(workers=others + 1, QMILL_WORKER__GRACE_PERIOD_SECONDS=str(LONG_GRACE))
    slots = cluster.settings.worker.concurrency
    stop = asyncio.Event()
    stopped: list[Stopped] = []
    async with (
        httpx.AsyncClient(base_url=cluster.url, timeout=15) as client,
        Checker(cluster.scenario, cluster.redis_url) as checker,
    ):

        async def stop_one(kind: str, victim: WorkerProc) -> None:
            await cluster.wait_ready(victim)
            held, since = await busy(cluster, checker, victim)
            seconds, code = await sigterm(victim)
            stopped.append(Stopped(kind, victim, held, since, seconds, code))

        load = asyncio.create_task(
            run_load(
                client,
                checker,
                long_task,
                clients=2,
                rate=2.0,
                stop=stop,
                # The other workers busy and a task or two queued, which only a victim
                # can take then; not a backlog of simulations slowing each other down
                # for the checker to wait out.
                max_outstanding=scaled(others * slots + 2, None),
            )
        )
        for r in range(rounds):
            victims = {
                "finish": cluster.workers[-1] if r == 0 else cluster.add_worker(),
                "release": cluster.add_worker(**RELEASE_ENV),
            }
            await asyncio.gather(*(stop_one(kind, victim) for kind, victim in victims.items()))
        stop.set()
        await load
        report = await checker.verify(client, timeout=scaled(120.0, 240.0))
        async with aioredis.Redis.from_url(cluster.redis_url) as redis:
            releases = {
                task_id: int(await redis.hget(constants.task_key(task_id), "releases") or 0)
                for s in stopped
                if s.kind == "release"
                for task_id in s.held
                if report.views[task_id].get("worker_id") != s.victim.worker_id
            }
    left = cluster.shutdown()
    events = cluster.events()
    started = executions(events)
    completions = Counter(str(e["task_id"]) for e in messages(events, "task completed"))
    discarded = [e for e in events if "outcome discarded" in str(e.get("message"))]
    slowest = {
        kind: max(s.seconds for s in stopped if s.kind == kind) for kind in ("finish", "release")
    }
    released = [
        task_id
        for s in stopped
        if s.kind == "release"
        for task_id in s.held
        if report.views[task_id].get("worker_id") != s.victim.worker_id
    ]
    report.publish(
        sigterms=len(stopped),
        held=sum(len(s.held) for s in stopped),
        released=len(released),
        exit_finish=f"{slowest['finish']:.1f}s",
        exit_release=f"{slowest['release']:.1f}s",
        leaked=len(left),
    )
    report.assert_ok()
    assert report.completed == report.accepted
    assert [s.code for s in stopped] == [0] * len(stopped)
    # Each task ran to completion exactly once: one completion logged, none discarded.
    assert all(completions[t] == 1 for t in checker.accepted), completions.most_common(3)
    assert not discarded, discarded[:3]
    # The short grace really released a running task, which another worker completed.
    assert released, "every task a `release` victim held finished inside its grace period"
    assert min(releases.values(), default=1) >= 1, releases
    handed_back = {str(e["task_id"]) for e in messages(events, "task handed back")}
    assert set(released) <= handed_back, (released, handed_back)
    for s in stopped:
        # It stopped pulling: besides what it held, at most one fetch (its free slots)
        # was in flight at SIGTERM.
        later = [
            e
            for runs in started.values()
            for e in runs
            if e["worker_id"] == s.victim.worker_id
            and str(e["task_id"]) not in s.held
            and datetime.fromisoformat(str(e["time"])) >= s.since
        ]
        assert len(later) <= (slots if s.kind == "finish" else 1), later
        for task_id, attempts in s.held.items():
            view = report.views[task_id]
            if s.kind == "finish":
                assert view["worker_id"] == s.victim.worker_id, view
                assert view["attempts"] == attempts, (attempts, view)
            else:
                # Released past the grace period and run by another worker, unless the
                # simulation happened to end inside the 0.5 s grace: then the victim
                # finished it, once. Either way it completed exactly once (checked above),
                # and the hand-back cost no attempt.
                assert view["attempts"] == attempts, (attempts, view)
        if s.kind == "finish":
            assert s.seconds < LONG_GRACE, f"{s.victim.worker_id} took {s.seconds:.1f} s to stop"
