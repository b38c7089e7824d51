"""Scenario 8: submissions at a steady rate from several clients (60 s in the full
campaign, 6 s in `make test`): zero 5xx (503 included: nothing is down), zero lost,
every result right.

The clients also read their tasks back while they submit, as real ones poll. The
circuits are small (Bell pairs and up to 12 qubits) so the offered rate stays within
what two workers simulate on this machine: this measures the HTTP path and the
queue, not Aer.
"""

from __future__ import annotations

import asyncio
import random
import statistics

import httpx

from tests.faults.harness import Checker, Circuit, Cluster, bell, pattern, run_load, scaled


def small(i: int) -> Circuit:
    return bell() if i % 2 == 0 else pattern(3 + i % 10, tag=i, rounds=1)


async def poller(client: httpx.AsyncClient, checker: Checker, stop: asyncio.Event) -> list[int]:
    """GET a random accepted task now and then; returns the status codes seen."""
    codes = []
    rng = random.Random(7)
    while not stop.is_set():
        if checker.accepted:
            task_id = rng.choice(list(checker.accepted))
            try:
                codes.append((await client.get(f"/tasks/{task_id}")).status_code)
            except httpx.HTTPError:
                codes.append(0)
        await asyncio.sleep(0.1)
    return codes


async def test_sustained_load(cluster: Cluster) -> None:
    rate = scaled(20.0, 25.0)
    duration = scaled(6.0, 60.0)
    clients = scaled(4, 8)
    await cluster.start(workers=2)
    stop = asyncio.Event()
    async with (
        httpx.AsyncClient(base_url=cluster.url, timeout=15) as client,
        Checker(cluster.scenario, cluster.redis_url) as checker,
    ):
        readers = [asyncio.create_task(poller(client, checker, stop)) for _ in range(2)]
        stats = await run_load(
            client, checker, small, clients=clients, rate=rate, duration=duration
        )
        stop.set()
        reads = [code for codes in await asyncio.gather(*readers) for code in codes]
        report = await checker.verify(client, timeout=scaled(90.0, 180.0))
    left = cluster.shutdown()
    latencies = sorted(s.seconds for s in stats.samples)
    p99 = latencies[int(0.99 * (len(latencies) - 1))]
    codes = stats.codes()
    report.publish(
        clients=clients,
        offered=f"{rate:g}/s",
        achieved=f"{len(stats.samples) / duration:.1f}/s",
        post_p50=f"{statistics.median(latencies) * 1e3:.0f}ms",
        post_p99=f"{p99 * 1e3:.0f}ms",
        gets=len(reads),
        http_5xx=sum(n for code, n in codes.items() if code >= 500 or code == 0)
        + sum(1 for c in reads if c >= 500 or c == 0),
        leaked=len(left),
    )
    report.assert_ok()
    assert report.completed == report.accepted
    assert set(codes) == {201}, codes
    assert set(reads) <= {200}, sorted(set(reads))
