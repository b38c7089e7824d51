"""Scenario 1: workers SIGKILLed mid-run, k times, under load.

Several workers run a mix of 2- to 20-qubit tasks while the test repeatedly picks a
worker that holds tasks and SIGKILLs it (its simulation children die with it), then
starts a replacement, as compose or Kubernetes would. Every task must complete, and
each kill may cost at most one more execution of each task the victim held: a task's
``attempts`` is at most 1 + the number of kills that hit it.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx

from tests.faults.harness import (
    Checker,
    Circuit,
    Cluster,
    executions,
    mixed,
    pattern,
    run_load,
    scaled,
)

HEAVY = frozenset({"pattern18", "pattern19", "pattern20"})


def load_circuit(i: int) -> Circuit:
    # One task in three is a heavier 18- to 20-qubit statevector run (~0.2-0.8 s), so
    # that a kill usually finds tasks in flight.
    if i % 3 == 2:
        return pattern(18 + i % 3, tag=i, rounds=4)
    return mixed(i)


async def test_worker_kill(cluster: Cluster) -> None:
    rate = scaled(6.0, 7.5)  # tasks per second
    # Spread over the kills as the load between them (and after the last).
    duration = scaled(4.0, 40.0)
    kills = scaled(3, 8)
    await cluster.start(workers=3, QMILL_WORKER__MAX_ATTEMPTS="5")
    hits: Counter[str] = Counter()
    victims = []
    replacements = []
    # The load runs until the last kill, and until the replacements pull: a fixed load
    # duration could end before the kills (finding a busy worker may take a moment).
    stop = asyncio.Event()
    async with (
        httpx.AsyncClient(base_url=cluster.url, timeout=15) as client,
        Checker(cluster.scenario, cluster.redis_url) as checker,
    ):
        load = asyncio.create_task(
            run_load(
                client,
                checker,
                load_circuit,
                clients=3,
                rate=rate,
                stop=stop,
                # A task in each slot and a few queued: enough for every kill to find
                # tasks in flight, and no backlog for the checker to wait out.
                max_outstanding=scaled(8, None),
            )
        )
        spacing = duration / (kills + 1)
        for _ in range(kills):
            await asyncio.sleep(spacing)
            # A worker that holds tasks right now, preferably a heavy one: a Bell task
            # may well be done by the time the SIGKILL lands.
            victim = None
            for attempt in range(100):
                held = await cluster.holdings(list(checker.accepted))
                busy = [w for w in cluster.workers if w.alive() and held.get(w.worker_id)]
                heavy = [
                    w
                    for w in busy
                    if any(checker.accepted[t].kind in HEAVY for t in held[w.worker_id])
                ]
                if heavy or (busy and attempt >= 50):
                    victim = max(heavy or busy, key=lambda w: len(held[w.worker_id]))
                    break
                await asyncio.sleep(0.05)
            assert victim is not None, "no worker held a task to kill"
            cluster.kill(victim)
            # Read what it held after it died: nothing of it can change any more, and no
            # redelivery happens before ack_wait. Every task record, not only those whose
            # 201 the load has read: a worker may start a task before that.
            held_now = (await cluster.holdings()).get(victim.worker_id, [])
            hits.update(held_now)
            victims.append((victim.worker_id, len(held_now)))
            # Its replacement starts at once, as compose or Kubernetes would start one,
            # and the next kill does not wait for it: it may find fewer workers.
            replacements.append(cluster.add_worker())
        await asyncio.sleep(spacing)  # load after the last kill too
        for worker in replacements:
            if worker.alive():
                await cluster.wait_ready(worker)
        stop.set()
        stats = await load
        report = await checker.verify(client, timeout=scaled(90.0, 180.0))
    left = cluster.shutdown()
    started = executions(cluster.events())
    # attempts counts the store's start transitions; the logs count runs that got going.
    logged_over = {
        task_id: (len(runs), hits[task_id])
        for task_id, runs in started.items()
        if len(runs) > 1 + hits[task_id]
    }
    over = {
        task_id: (view.get("attempts"), hits[task_id])
        for task_id, view in report.views.items()
        if int(view.get("attempts") or 0) > 1 + hits[task_id]
    }
    report.publish(
        kills=kills,
        held_at_kills=sum(hits.values()),
        reexecutions=sum(max(0, int(v.get("attempts") or 0) - 1) for v in report.views.values()),
        http_5xx=len(stats.server_errors()),
        leaked=len(left),
    )
    report.assert_ok()
    assert report.completed == report.accepted
    assert sum(hits.values()) >= 1, f"no kill hit a running task: {victims}"
    # Workers were SIGKILLed mid-task more than once, not just once by luck.
    assert sum(1 for _, n in victims if n) >= 2, f"fewer than two kills hit a task: {victims}"
    assert not over, f"more executions than 1 + kills that hit them (attempts, hits): {over}"
    # And no fewer: a SIGKILLed worker hands nothing back, so each kill that hit a task
    # costs it an attempt (unlike a SIGTERM's hand-back, tests/faults/test_scale_in.py).
    under = {
        task_id: (report.views[task_id].get("attempts"), n)
        for task_id, n in hits.items()
        if task_id in report.views and int(report.views[task_id].get("attempts") or 0) != 1 + n
    }
    assert not under, f"a kill that hit a task did not cost an attempt (attempts, hits): {under}"
    assert not logged_over, f"more runs logged than 1 + kills that hit them: {logged_over}"
    assert not stats.server_errors(), stats.server_errors()[:3]
