"""Scenario 4: a poison task, one that kills whatever runs it.

The poison is a 25-qubit statevector simulation (512 MiB of amplitudes). The test
plays the kernel's OOM killer under a per-simulation memory limit: it SIGKILLs any
simulation child of the cluster whose resident memory passes `MEMORY_LIMIT` (no
healthy task here comes near it: a warm child is ~100 MiB, a 20-qubit state 16 MiB).
The task must end `failed` with the reason after ``max_attempts`` attempts, the
workers must survive, and healthy tasks must keep flowing: their rate with the poison
in the queue is compared with their rate without it, in the same run (asserted at
80% or more in the full campaign; the fast version records it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

import httpx
import psutil

from tests.faults.harness import (
    FULL,
    Checker,
    Circuit,
    Cluster,
    LoadStats,
    pattern,
    run_load,
    scaled,
    terminal,
)

MEMORY_LIMIT = 300 * 2**20


def poison() -> Circuit:
    source = pattern(25, tag=1, rounds=1).source
    return Circuit(
        "poison", source, 10, None, expect="failed", reason="simulator process died (signal 9)"
    )


def healthy(i: int) -> Circuit:
    return pattern(18, tag=i, rounds=3)  # ~0.3 s of statevector simulation here


async def oom_killer(cluster: Cluster, killed: list[int]) -> None:
    """SIGKILL any simulation child over the memory limit, as the OOM killer would."""
    while True:
        for worker in cluster.workers:
            for child in cluster.sim_children(worker):
                with contextlib.suppress(psutil.Error):
                    if child.memory_info().rss > MEMORY_LIMIT:
                        child.kill()
                        killed.append(child.pid)
        await asyncio.sleep(0.02)


async def healthy_rate(
    client: httpx.AsyncClient, checker: Checker, count: int, offset: int
) -> float:
    """Submit ``count`` healthy tasks at once; tasks per second until all are done."""
    stats = LoadStats()
    begin = time.monotonic()
    await run_load(
        client, checker, lambda i: healthy(offset + i), clients=4, count=count, stats=stats
    )
    ids = [s.task_id for s in stats.samples if s.task_id]
    end = await terminal(checker, ids, timeout=240)
    return count / (end - begin)


async def test_poison(cluster: Cluster) -> None:
    # Healthy tasks per phase: in the fast form enough to flow beside the poison's
    # attempts (~3 s) and to record the ratio; the full form asserts it, over more.
    count = scaled(12, 100)
    poisons = int(os.environ.get("FAULTS_POISONS", scaled(1, 2)))
    await cluster.start(workers=2)
    max_attempts = cluster.settings.worker.max_attempts
    pids = {w.worker_id: w.proc.pid for w in cluster.workers}
    killed: list[int] = []
    async with (
        httpx.AsyncClient(base_url=cluster.url, timeout=15) as client,
        Checker(cluster.scenario, cluster.redis_url) as checker,
    ):
        killer = asyncio.create_task(oom_killer(cluster, killed))
        try:
            # Baseline before and after the poisoned phase: this machine's speed drifts
            # with whatever else runs on it, and the mean of the two brackets that.
            before = await healthy_rate(client, checker, count, offset=0)
            stats = LoadStats()
            for _ in range(poisons):
                await run_load(client, checker, lambda i: poison(), clients=1, count=1, stats=stats)
            poisoned = await healthy_rate(client, checker, count, offset=count)
            poison_ids = [s.task_id for s in stats.samples if s.task_id]
            await terminal(checker, poison_ids, timeout=120)
            after = await healthy_rate(client, checker, count, offset=2 * count)
        finally:
            killer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await killer
        report = await checker.verify(client)
    left = cluster.shutdown()
    baseline = (before + after) / 2
    ratio = poisoned / baseline
    report.publish(
        poison_tasks=poisons,
        oom_kills=len(killed),
        healthy_rate=f"{before:.1f}/{after:.1f}/s",
        with_poison=f"{poisoned:.1f}/s",
        ratio=f"{ratio:.2f}",
        leaked=len(left),
    )
    report.assert_ok()
    assert report.failed == poisons and report.completed == report.accepted - poisons
    for task_id in poison_ids:
        assert report.views[task_id]["attempts"] == max_attempts, report.views[task_id]
    assert len(killed) == poisons * max_attempts
    # The workers survived: the poison only ever killed their simulation children.
    assert all(w.proc.pid == pids[w.worker_id] for w in cluster.workers)
    assert all(w.proc.returncode == 0 for w in cluster.workers)
    if FULL:
        assert ratio >= 0.8, f"healthy tasks slowed to {ratio:.0%} of their rate"
