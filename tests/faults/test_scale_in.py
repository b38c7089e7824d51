"""Scenario 9: scale-in under a short termination deadline, more times than a task has attempts.

One long task, and workers whose grace period (0.5 s) is shorter than it, as on Cloud
Run (SIGKILL 10 s after SIGTERM; the worker gets 8 s of grace there, and a simulation
may take ``max_execution_seconds``). Each round SIGTERMs the worker that runs the task,
as a scale-in would; the others are idle. Each victim must hand the task back cleanly:
released at once (another worker starts it well before ack_wait would have), its
attempt not counted, exit 0. Stopped more times than it has attempts (before, JetStream's
max_deliver, one more than the attempts, ended its deliveries and it stayed
`processing` for ever), it still completes, once, with ``attempts`` 1 and the hand-backs
counted in its record's ``releases``.

Short form (`make test`, ~11 s): ``max_attempts`` 1 and 2 stops; when a stop still cost
an attempt, the first one alone failed the task. Full form (`make faults`): ``max_attempts`` 3,
5 stops, then a SIGKILL of the holder: a crash, unlike a hand-back, costs an attempt.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import httpx
import redis.asyncio as aioredis

from qmill.server import constants
from tests.faults.harness import (
    BASE_SETTINGS,
    Checker,
    Cluster,
    LoadStats,
    WorkerProc,
    messages,
    pattern,
    post_task,
    scaled,
)

GRACE = 0.5
# Attempts are the workers' to count (the consumer's max_deliver is unbounded), so the
# fast form lowers them to show "more stops than attempts" with few workers to start.
MAX_ATTEMPTS = scaled(1, 3)
ENV = {
    "QMILL_WORKER__GRACE_PERIOD_SECONDS": str(GRACE),
    "QMILL_WORKER__MAX_CONCURRENT_TASKS": "1",
    "QMILL_WORKER__MAX_ATTEMPTS": str(MAX_ATTEMPTS),
}
# ~1.5 s of simulation alone here (21 qubits, 4 rounds), well past the grace period, so
# each SIGTERM finds it running and hands it back.
LONG = pattern(21, tag=7, rounds=4)


async def holder(cluster: Cluster, task_id: str, not_by: str | None, timeout: float) -> str:
    """The worker that runs ``task_id`` now, other than ``not_by``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for worker_id, held in (await cluster.holdings([task_id])).items():
            if task_id in held and worker_id != not_by:
                return worker_id
        await asyncio.sleep(0.02)
    raise TimeoutError(f"no worker but {not_by} started {task_id} within {timeout:g} s")


async def sigterm(worker: WorkerProc) -> tuple[float, int]:
    sent = time.monotonic()
    worker.proc.terminate()
    code = await asyncio.to_thread(worker.proc.wait, 60)
    return time.monotonic() - sent, code


async def test_scale_in(cluster: Cluster) -> None:
    ack_wait = float(BASE_SETTINGS["nats"]["ack_wait_seconds"])
    stops = MAX_ATTEMPTS + scaled(1, 2)
    # One worker per stop and one more, all started (and warm) at once: each stop finds
    # an idle worker to take the task, as after a scale-in.
    await cluster.start(workers=stops + 1, **ENV)
    by_id = {w.worker_id: w for w in cluster.workers}
    gaps: list[float] = []  # SIGTERM -> another worker has started the task
    exits: list[tuple[float, int]] = []
    async with (
        httpx.AsyncClient(base_url=cluster.url, timeout=15) as client,
        Checker(cluster.scenario, cluster.redis_url) as checker,
    ):
        sample = await post_task(client, LONG, checker, LoadStats())
        assert sample.status == 201 and sample.task_id is not None, sample
        task_id = sample.task_id
        current = await holder(cluster, task_id, None, 60)
        for _ in range(stops):
            victim = by_id[current]
            sent = time.monotonic()
            stopping = asyncio.create_task(sigterm(victim))
            current = await holder(cluster, task_id, victim.worker_id, 60)
            gaps.append(time.monotonic() - sent)
            exits.append(await stopping)
        killed = 0
        if scaled(False, True):
            cluster.add_worker()  # the next holder
            cluster.kill(by_id[current])  # no hand-back: redelivered after ack_wait
            killed = 1
        report = await checker.verify(client, timeout=scaled(90.0, 180.0))
    async with aioredis.Redis.from_url(cluster.redis_url) as redis:
        releases = int(await redis.hget(constants.task_key(task_id), "releases") or 0)
    left = cluster.shutdown()
    handed_back = [e for e in messages(cluster.events(), "task handed back")]
    report.publish(
        stops=stops,
        releases=releases,
        killed=killed,
        handback_median=f"{statistics.median(gaps):.2f}s",
        handback_max=f"{max(gaps):.2f}s",
        exit_max=f"{max(s for s, _ in exits):.1f}s",
        leaked=len(left),
    )
    report.assert_ok()
    assert report.completed == report.accepted == 1
    view = report.views[task_id]
    # Only the run that finished (and a crash's) counts: the hand-backs do not.
    assert view["attempts"] == 1 + killed, view
    assert releases == stops == len(handed_back), (releases, handed_back)
    assert all(e["task_id"] == task_id and e["started"] for e in handed_back), handed_back
    assert [code for _, code in exits] == [0] * stops, exits
    # Released at once, not left for ack_wait (which, counted from the last in-progress
    # mark, would bring it back 2.7 s or more after the stop here).
    assert max(gaps) < GRACE + ack_wait / 2, gaps
