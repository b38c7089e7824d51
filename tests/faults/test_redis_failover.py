"""Scenario: the Redis primary SIGKILLed under load; Sentinel fails over; the load goes on.

The system runs against a replicated Redis it did not start (``[embedded] start_redis =
false``): a primary, one replica and three Sentinels (tests/clusters/redis.py), which
every qmill process reaches through ``[redis] sentinels``, as deployments do. Writes
that qmill acknowledges (a submit's 201, a worker's ack of its task message) wait for
the replica (``[redis] min_replicas_to_ack = 1``, Redis WAIT): replication is
asynchronous, and without the wait a primary killed right after a write takes the write
with it when the replica is promoted.

The killed primary comes back as a replica of the new one (as a restarted pod does),
since a primary without a replica acknowledges nothing: until then submits are 503.
The checker (itself through the Sentinels) fails the scenario if any task accepted
(201) is lost, wrong, or was final twice; the summary line states the window of 503s
(first to last refusal around the kill) and how long the failover took.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from qmill.server.launcher import Launcher
from tests.clusters.redis import RedisCluster
from tests.conftest import REPO
from tests.faults.harness import (
    BASE_SETTINGS,
    Checker,
    Circuit,
    Cluster,
    LoadStats,
    bell,
    completed,
    messages,
    pattern,
    post_task,
    run_load,
    scaled,
    until,
)

# Results stored before the kill, and submits accepted after the failover.
BEFORE = scaled(6, 20)
RECOVERED = scaled(6, 20)


class SentinelCluster(Cluster):
    """The fault campaign's `Cluster` on a replicated Redis it did not start."""

    def __init__(self, root: Path, scenario: str, redis: RedisCluster) -> None:
        config: dict[str, dict[str, Any]] = {
            **BASE_SETTINGS,
            "embedded": {**BASE_SETTINGS["embedded"], "start_redis": False},
            "redis": {**redis.settings(), "min_replicas_to_ack": 1},
        }
        Launcher.__init__(self, root, config, mark=f"{scenario}-{redis.master}", cwd=REPO)
        self.scenario = scenario


@pytest.fixture
def replicated(tmp_path: Path) -> Iterator[RedisCluster]:
    redis = RedisCluster(tmp_path / "redis")
    try:
        redis.start()
        yield redis
    finally:
        assert redis.stop() == [], "Redis processes left running"


@pytest.fixture
def sentinel_cluster(tmp_path: Path, replicated: RedisCluster) -> Iterator[SentinelCluster]:
    system = SentinelCluster(tmp_path / "qmill", "redis-failover", replicated)
    try:
        yield system
    finally:
        left = system.shutdown()
        assert not left, f"processes left running: {left}"


async def test_redis_failover(sentinel_cluster: SentinelCluster, replicated: RedisCluster) -> None:
    cluster = sentinel_cluster
    await cluster.start(workers=scaled(1, 2))
    stop = asyncio.Event()
    stats = LoadStats()
    redis = cluster.settings.redis
    failovers: list[float] = []
    revived: list[float] = []
    kills: list[float] = []
    unavailable: list[float] = []

    def circuit(i: int) -> Circuit:
        # Light tasks: the load must keep submitting through the failover, not wait
        # behind a backlog of simulations (max_outstanding).
        return bell() if i % 2 == 0 else pattern(3 + i % 8, tag=i, rounds=2)

    async def first_accepted(since: float) -> float:
        """Submit every 0.1 s until one is accepted; seconds from ``since`` to that 201."""
        while True:
            sample = await post_task(client, bell(), checker, stats)
            if sample.status == 201:
                return sample.ended - since
            await asyncio.sleep(0.1)

    async with (
        httpx.AsyncClient(base_url=cluster.url, timeout=15) as client,
        Checker(cluster.scenario, redis.url, sentinels=redis.sentinels) as checker,
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
                max_outstanding=scaled(12, 30),
            )
        )
        await asyncio.sleep(scaled(0.0, 10.0))
        await until(lambda: completed(checker) >= BEFORE, 60, f"{BEFORE} completed before")
        completed_before = completed(checker)
        # `make faults` fails over twice: the second time back to the first primary.
        for _ in range(scaled(1, 2)):
            old = replicated.primary()
            victim = replicated.kill_primary()
            killed_at = time.monotonic()
            probe = asyncio.create_task(first_accepted(killed_at))
            await asyncio.to_thread(replicated.wait_failover, old)
            failovers.append(time.monotonic() - killed_at)
            # The promoted replica has none of its own: the old primary returns as one.
            await asyncio.to_thread(replicated.revive, victim)
            kills.append(killed_at)
            revived.append(time.monotonic() - killed_at)
            unavailable.append(await asyncio.wait_for(probe, 60))
            await until(
                lambda: (
                    stats.codes([s for s in stats.samples if s.started > kills[-1]])[201]
                    >= RECOVERED
                ),
                60,
                f"{RECOVERED} submits accepted after the failover",
            )
        await asyncio.sleep(scaled(0.0, 15.0))
        stop.set()
        await load
        report = await checker.verify(client, timeout=scaled(90.0, 180.0))
    left = cluster.shutdown()
    events = cluster.events()
    released = {
        str(e["task_id"]) for e in messages(events, "could not store outcome; task released")
    }
    # Refused for Redis (the parse pool may also refuse a submit on a busy machine).
    refused = [s for s in stats.samples if s.status == 503 and '"service":"redis"' in str(s.error)]
    # Per failover, the window of 503s: from the kill to the end of the last refusal
    # before the next kill.
    windows = []
    for i, kill in enumerate(kills):
        until_next = kills[i + 1] if i + 1 < len(kills) else float("inf")
        ends = [s.ended for s in refused if s.ended >= kill and s.started < until_next]
        windows.append(max(ends, default=kill) - kill)
    report.publish(
        failovers=len(failovers),
        failover="/".join(f"{t:.1f}s" for t in failovers),
        replica_back="/".join(f"{t:.1f}s" for t in revived),
        completed_before_kill=completed_before,
        refused=len(refused),
        refused_other=stats.codes()[503] - len(refused),
        window_503="/".join(f"{t:.1f}s" for t in windows),
        first_201_after_kill="/".join(f"{t:.1f}s" for t in unavailable),
        result_writes_released=len(released),
        http_5xx=len(stats.server_errors()),
        leaked=len(left),
    )
    report.assert_ok()
    assert report.completed == report.accepted
    assert completed_before > 0
    assert not stats.server_errors(), stats.server_errors()[:3]
    assert not stats.unavailable_without_retry_after()
    assert len(failovers) == scaled(1, 2)
    early = [s.error for s in refused if s.ended < kills[0]]
    assert not early, f"refused for Redis before it failed: {early[:3]}"
