"""Scenario 3: redis-server SIGKILLed under load, kept down, then restarted.

Redis runs with its append-only file on (``appendfsync always``, as `make run` and
compose start it), so a restart on the same directory must bring back every result
that was written: the checker snapshots each task when it first sees it terminal and
fails if it later differs. While Redis is down the functions answer 503. Redis is
kept down longer than the worker's store retries (~9 s), so a task that finished
during the outage cannot record its result: it must be released (nak) for
redelivery, not acked, and complete after Redis is back.
"""

from __future__ import annotations

import asyncio
import os
import time

import httpx

from tests.faults.harness import (
    Checker,
    Cluster,
    LoadStats,
    completed,
    messages,
    mixed,
    pattern,
    run_load,
    scaled,
    until,
)

# The worker's Redis client retries a failed call for about this long before it gives up.
WORKER_STORE_RETRY_SECONDS = 9.1
# Results stored before the kill (the restart must bring each back unchanged), and
# submits accepted once redis-server is back before the load stops.
BEFORE = 10
RECOVERED = 10


async def test_redis_kill(cluster: Cluster) -> None:
    down_for = float(os.environ.get("FAULTS_REDIS_DOWN", 0)) or scaled(12.0, 20.0)
    assert down_for > WORKER_STORE_RETRY_SECONDS + 2
    await cluster.start(workers=2)
    stop = asyncio.Event()
    stats = LoadStats()

    def circuit(i: int) -> object:
        return pattern(19, tag=i, rounds=4) if i % 4 == 3 else mixed(i)

    async with (
        httpx.AsyncClient(base_url=cluster.url, timeout=15) as client,
        Checker(cluster.scenario, cluster.redis_url) as checker,
    ):
        load = asyncio.create_task(
            run_load(
                client,
                checker,
                circuit,
                clients=4,
                rate=scaled(12.0, 15.0),
                stop=stop,
                stats=stats,
            )
        )
        await asyncio.sleep(scaled(0.0, 10.0))
        # Kill it once results are stored, and while workers have tasks in flight.
        await until(
            lambda: completed(checker) >= BEFORE, 60, f"{BEFORE} tasks completed before the kill"
        )
        for _ in range(100):
            if await cluster.holdings(list(checker.accepted)):
                break
            await asyncio.sleep(0.05)
        completed_before = completed(checker)
        cluster.redis.kill()
        down_at = time.monotonic()
        await asyncio.sleep(down_for / 2)
        health = await client.get("/health")
        await asyncio.sleep(down_for / 2)
        # Liveness must not depend on it: a healthy worker is not to be restarted.
        alive = await asyncio.gather(*(asyncio.to_thread(w.check) for w in cluster.workers))
        up_at = time.monotonic()
        cluster.redis.start()
        await asyncio.sleep(scaled(0.0, 15.0))
        await until(
            lambda: stats.codes([s for s in stats.samples if s.started > up_at])[201] >= RECOVERED,
            60,
            f"{RECOVERED} submits accepted after the restart",
        )
        stop.set()
        await load
        report = await checker.verify(client, timeout=scaled(90.0, 180.0))
    left = cluster.shutdown()
    events = cluster.events()
    released = {
        str(e["task_id"]) for e in messages(events, "could not store outcome; task released")
    }
    while_down = stats.between(down_at, up_at)
    slowest = max((s.seconds for s in stats.samples if s.status == 503), default=0.0)
    report.publish(
        down=f"{down_for:g}s",
        completed_before_kill=completed_before,
        refused_while_down=stats.codes(while_down)[503],
        max_503_latency=f"{slowest:.2f}s",
        result_writes_released=len(released),
        http_5xx=len(stats.server_errors()),
        leaked=len(left),
    )
    report.assert_ok()
    assert report.completed == report.accepted
    assert completed_before > 0
    assert not stats.server_errors(), stats.server_errors()[:3]
    assert not stats.unavailable_without_retry_after()
    assert while_down and {s.status for s in while_down} == {503}, stats.codes(while_down)
    assert alive == [0] * len(alive), f"worker liveness failed during the outage: {alive}"
    assert (health.status_code, health.json()["services"]["redis"]) == (503, False)
    assert released, "no result write failed: the outage did not hit a finishing task"
    after_up = [s for s in stats.samples if s.started > up_at]
    assert stats.codes(after_up)[201] > 0, "nothing accepted after redis-server came back"
    # A write may land with its reply lost as the server dies: the redelivery then
    # finds the task completed and acks it without running it again.
    found_done = {str(e["task_id"]) for e in messages(events, "task already completed; acking")}
    # A submit whose confirm hit the dying server answered 503 although its task was
    # queued (a 503 never promised the task does not exist): such a task may run and be
    # released too. The promise is about the accepted ones.
    for task_id in released & set(report.views):
        view = report.views[task_id]
        # Released, redelivered, and run again or found done: a task that had been acked
        # without its outcome stored would be lost.
        assert view["status"] == "completed", view
        assert view["attempts"] >= 2 or task_id in found_done, (view, "never redelivered")
