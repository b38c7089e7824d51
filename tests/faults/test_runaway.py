"""Scenario 5: runaway simulations pass ``[limits] max_execution_seconds``.

Each runaway is stopped (its simulation child is killed: a thread could not be) and
marked `failed` with a reason starting with ``timeout``, after one attempt (a timeout
is final, not retried); the worker that ran it goes on with the next task, and the
healthy tasks around it all complete. The scenario also measures what running in a
killable child costs: how long a replacement child takes to be ready after a kill,
and how much a Bell task's run adds on top of the simulation itself.
"""

from __future__ import annotations

import statistics
import time
from datetime import datetime

import httpx

from qmill_worker.executors import ForkServer
from tests.faults.harness import (
    Checker,
    Circuit,
    Cluster,
    LoadStats,
    bell,
    messages,
    pattern,
    run_load,
    runaway,
    scaled,
    terminal,
)

LIMIT_SECONDS = scaled(2.0, 3.0)


def healthy(i: int) -> Circuit:
    # Far below the limit even on a loaded machine: Bell pairs and up to 14 qubits.
    return bell() if i % 2 == 0 else pattern(3 + i % 12, tag=i, rounds=2)


async def child_ready_seconds(server: ForkServer) -> float:
    """Time for a fresh simulation child to be ready, as the executor replaces one:
    forked by its fork server, then warmed up."""
    begin = time.monotonic()
    child = await server.spawn()
    ready = time.monotonic() - begin
    await child.kill()
    return ready


def overhead_ms(view: dict[str, object]) -> float:
    """Time a task spent started but not simulating: dispatch to the child and back,
    and the Redis write of its outcome."""
    started = datetime.fromisoformat(str(view["started_at"]))
    completed = datetime.fromisoformat(str(view["completed_at"]))
    return ((completed - started).total_seconds() - float(str(view["execution_seconds"]))) * 1e3


async def test_runaway(cluster: Cluster) -> None:
    runaways = scaled(2, 4)
    count = scaled(40, 200)
    await cluster.start(workers=2, QMILL_LIMITS__MAX_EXECUTION_SECONDS=str(LIMIT_SECONDS))
    pids = {w.worker_id: w.proc.pid for w in cluster.workers}
    async with (
        httpx.AsyncClient(base_url=cluster.url, timeout=15) as client,
        Checker(cluster.scenario, cluster.redis_url) as checker,
    ):
        stats = LoadStats()
        await run_load(client, checker, lambda i: runaway(), clients=1, count=runaways, stats=stats)
        runaway_ids = [s.task_id for s in stats.samples if s.task_id]
        # Healthy tasks while the runaways run, and more once they were stopped.
        await run_load(client, checker, healthy, clients=2, count=count // 2, rate=10)
        await terminal(checker, runaway_ids, timeout=120)
        await run_load(client, checker, lambda i: healthy(i + count), clients=2, count=count // 2)
        report = await checker.verify(client)
    left = cluster.shutdown()
    events = cluster.events()
    server = await ForkServer.start()
    try:
        spawn = statistics.median([await child_ready_seconds(server) for _ in range(5)])
    finally:
        await server.close()
    bells = [
        overhead_ms(v)
        for t, v in report.views.items()
        if checker.accepted[t].kind == "bell" and v["status"] == "completed"
    ]
    report.publish(
        runaways=runaways,
        limit=f"{LIMIT_SECONDS:g}s",
        child_respawn=f"{spawn:.2f}s",
        bell_overhead_p50=f"{statistics.median(bells):.1f}ms",
        leaked=len(left),
    )
    report.assert_ok()
    assert report.failed == runaways and report.completed == report.accepted - runaways
    for task_id in runaway_ids:
        view = report.views[task_id]
        assert str(view["error"]).startswith("timeout"), view
        assert view["attempts"] == 1, view  # a timeout is final, not retried
    # The workers are the same processes, and each that stopped a runaway went on.
    assert all(w.proc.pid == pids[w.worker_id] for w in cluster.workers)
    assert all(w.proc.returncode == 0 for w in cluster.workers)
    failed = [e for e in messages(events, "task failed") if e["task_id"] in runaway_ids]
    assert len(failed) == runaways
    for stop in failed:
        later = [
            e
            for e in messages(events, "task completed")
            if e["worker_id"] == stop["worker_id"] and e["time"] > stop["time"]
        ]
        assert later, f"{stop['worker_id']} ran nothing after stopping a runaway"
