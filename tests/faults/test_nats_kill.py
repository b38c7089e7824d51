"""Scenario 2: nats-server SIGKILLed under load, kept down, then restarted.

While it is down every ``POST /tasks`` must be refused with 503 and ``Retry-After``,
quickly (the API promises an answer within 2 s: never a 500, never a hang), and
nothing may be accepted that cannot be queued. Once nats-server is back on the same
store directory, the functions and the workers reconnect by themselves and every
accepted task completes. JetStream fsyncs every write (``sync_interval: always``), so
even a power loss would not lose a task that got its 201; see docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import redis.asyncio as aioredis

from qmill.server import constants
from tests.faults.harness import (
    Checker,
    Cluster,
    LoadStats,
    completed,
    mixed,
    run_load,
    scaled,
    until,
)

API_BOUND_SECONDS = 2.0
# Tasks accepted before the kill, and once nats-server is back before the load stops
# (the functions publish again, and the workers must run these too).
BEFORE = 20
RECOVERED = 10


async def test_nats_kill(cluster: Cluster) -> None:
    warm = scaled(0.0, 10.0)
    # Long enough for every client of it (functions, workers) to lose its connection and
    # fail its reconnects (one a second), and for ~45 submits to be refused.
    down_for = scaled(3.0, 15.0)
    after = scaled(0.0, 15.0)
    await cluster.start(workers=2)
    stop = asyncio.Event()
    stats = LoadStats()
    async with (
        httpx.AsyncClient(base_url=cluster.url, timeout=15) as client,
        Checker(cluster.scenario, cluster.redis_url) as checker,
    ):
        load = asyncio.create_task(
            run_load(
                client, checker, mixed, clients=4, rate=scaled(15.0, 20.0), stop=stop, stats=stats
            )
        )
        # Kill it once the system is at work: tasks accepted, completed, and in flight.
        await asyncio.sleep(warm)
        await until(
            lambda: len(checker.accepted) >= BEFORE and completed(checker) > 0,
            60,
            f"{BEFORE} tasks accepted and one completed before the kill",
        )
        for _ in range(100):
            if await cluster.holdings(list(checker.accepted)):
                break
            await asyncio.sleep(0.05)
        accepted_before = len(checker.accepted)
        cluster.nats.kill()
        down_at = time.monotonic()
        await asyncio.sleep(down_for / 2)
        health = await client.get("/health")
        await asyncio.sleep(down_for / 2)
        # Liveness must not depend on it: a healthy worker is not to be restarted.
        alive = await asyncio.gather(*(asyncio.to_thread(w.check) for w in cluster.workers))
        up_at = time.monotonic()
        cluster.nats.start()
        await asyncio.sleep(after)
        await until(
            lambda: stats.codes([s for s in stats.samples if s.started > up_at])[201] >= RECOVERED,
            60,
            f"{RECOVERED} submits accepted after the restart",
        )
        stop.set()
        await load
        report = await checker.verify(client, timeout=scaled(90.0, 180.0))
        async with aioredis.Redis.from_url(cluster.redis_url, decode_responses=True) as r:
            records = {
                key.removeprefix(constants.TASK_KEY_PREFIX)
                async for key in r.scan_iter(constants.TASK_KEY_PREFIX + "*")
            }
    left = cluster.shutdown()
    while_down = stats.between(down_at, up_at)
    after_up = [s for s in stats.samples if s.started > up_at]
    # Requests made while it was down fail fast; those in flight when it died wait out
    # their publish timeout ([nats] publish_timeout_seconds).
    slowest = max((s.seconds for s in while_down), default=0.0)
    slowest_any = max((s.seconds for s in stats.samples if s.status == 503), default=0.0)
    recovered = min((s.ended for s in after_up if s.status == 201), default=float("inf"))
    report.publish(
        down=f"{down_for:g}s",
        refused_while_down=stats.codes(while_down)[503],
        accepted_while_down=stats.codes(while_down)[201],
        max_503_latency=f"{slowest:.2f}s",
        max_503_latency_in_flight=f"{slowest_any:.2f}s",
        accepted_after_restart=stats.codes(after_up)[201],
        first_201_after_restart=f"{recovered - up_at:.1f}s",
        http_5xx=len(stats.server_errors()),
        leaked=len(left),
    )
    report.assert_ok()
    assert report.completed == report.accepted
    assert accepted_before > 0
    assert not stats.server_errors(), stats.server_errors()[:3]
    assert not stats.unavailable_without_retry_after()
    assert while_down and {s.status for s in while_down} == {503}, stats.codes(while_down)
    assert slowest <= API_BOUND_SECONDS, f"a 503 took {slowest:.2f} s"
    assert alive == [0] * len(alive), f"worker liveness failed during the outage: {alive}"
    assert (health.status_code, health.json()["services"]["nats"]) == (503, False)
    assert stats.codes(after_up)[201] > 0, "nothing accepted after nats-server came back"
    # A refused submit leaves no record behind: every task in Redis got a 201.
    assert records <= set(checker.accepted), sorted(records - set(checker.accepted))[:5]
