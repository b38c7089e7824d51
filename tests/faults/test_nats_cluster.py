"""Scenarios 11 and 12: the task stream at R3 on a three-node NATS cluster, under load.

The system runs against three ``nats-server`` processes it did not start
(``[embedded] start_nats = false``, ``[nats] url`` listing all three,
``stream_replicas = 3``), configured from the deployment's template
(`tests.clusters.nats`); ``qmill-setup`` creates the stream and consumers first, as a
deployment does. Then, under a steady load of mixed circuits:

* **leader kill**: the server leading the task stream is SIGKILLed, and restarted later
  on its store. The other two elect a new leader; clients of the dead server reconnect
  to another. Measured: how long until a new leader, and the submits refused (503) or
  slow meanwhile.
* **partition**: every route of the server the *submit function* is connected to is cut
  for a while, then healed. That server is picked, rather than the stream leader,
  because it is the worst case for users: the function's connection stays up (its
  server still answers it), so nats-py does not fail over, and every publish it sends
  must reach the stream leader through routes that no longer exist. If that server also
  led the stream, the majority elects another leader meanwhile.

Either way nothing accepted may be lost, every refusal is a 503 with Retry-After (never
another 5xx, never a hang), and every accepted task completes with the right result.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import httpx
import psutil
import pytest

from qmill.server import constants, setup
from qmill.server.bus import Bus
from qmill.server.jetstream import wait_placed
from tests.clusters.nats import NatsCluster, Node, nats_cluster
from tests.faults.harness import (
    Checker,
    Cluster,
    LoadStats,
    Sample,
    completed,
    mixed,
    run_load,
    scaled,
    until,
)

# Tasks accepted before the fault, and after it before the load stops.
BEFORE = scaled(5, 30)
AFTER = scaled(5, 30)
RATE = scaled(10.0, 15.0)
# A publish in flight when its server dies waits out [nats] publish_timeout_seconds
# (1.5 s), then the function answers 503: a bound on any one refusal.
API_BOUND_SECONDS = 4.0


@dataclass
class Engine:
    nats: NatsCluster
    system: Cluster


@pytest.fixture(scope="module")
async def engine(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Engine]:
    root = tmp_path_factory.mktemp("nats-cluster-faults")
    with nats_cluster(root / "nats") as nats:
        system = Cluster(
            root / "system",
            "nats-cluster",
            {
                "embedded": {"start_nats": False},
                "nats": {"url": nats.url, "stream_replicas": 3},
            },
        )
        try:
            # As a deployment: the stream and consumers exist before anything else runs.
            problems = await setup.apply(system.settings, wait=30)
            assert not problems, problems
            await system.start(workers=2)
            yield Engine(nats, system)
        finally:
            left = system.shutdown()
            assert not left, f"processes left running: {left}"


def submit_server(engine: Engine) -> Node:
    """The NATS server the submit function is connected to (its TCP peer's port)."""
    submit = next(p for p in engine.system.services if p.name == "submit")
    ports = {node.client_port: node for node in engine.nats.nodes}
    process = psutil.Process(submit.pid)
    for proc in [process, *process.children(recursive=True)]:
        for conn in proc.net_connections(kind="tcp"):
            if conn.raddr and conn.raddr.port in ports and conn.status == psutil.CONN_ESTABLISHED:
                return ports[conn.raddr.port]
    raise LookupError("the submit function has no NATS connection")


async def new_leader(nats: NatsCluster, old: str, timeout: float = 30.0) -> tuple[float, str]:
    """Until the live servers name a stream leader other than ``old``; (when, who).
    Asked off the event loop: the monitoring calls block, and the load runs on it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            leader = (await asyncio.to_thread(nats.stream_leader)).name
        except LookupError:
            leader = old
        if leader != old:
            return time.monotonic(), leader
        assert time.monotonic() < deadline, f"no new stream leader after {timeout:g} s"
        await asyncio.sleep(0.05)


async def all_replicas_current(system: Cluster) -> None:
    probe = Bus(system.settings, name="faults-probe")
    try:
        js = await probe.connect()
        placed = await wait_placed(js, constants.STREAM_NAME, 3, timeout=60)
        assert placed.complete, placed
    finally:
        await probe.close()


def window(samples: list[Sample], since: float) -> dict[str, object]:
    """The refusals among ``samples`` that started after ``since``: how many, over when."""
    refused = [s for s in samples if s.started >= since and s.status != 201]
    if not refused:
        return {"refused": 0, "refused_from": "-", "refused_until": "-"}
    return {
        "refused": len(refused),
        "refused_from": f"{min(s.started for s in refused) - since:.1f}s",
        "refused_until": f"{max(s.ended for s in refused) - since:.1f}s",
    }


Inject = Callable[[LoadStats], Awaitable[tuple[float, dict[str, object]]]]


async def under_load(engine: Engine, fault: str, inject: Inject) -> None:
    """Run ``inject`` (an async callable returning measurements) under load, then check."""
    system = engine.system
    stop = asyncio.Event()
    stats = LoadStats()
    async with (
        httpx.AsyncClient(base_url=system.url, timeout=15) as client,
        Checker(f"nats-cluster-{fault}", system.redis_url) as checker,
    ):
        load = asyncio.create_task(
            run_load(client, checker, mixed, clients=4, rate=RATE, stop=stop, stats=stats)
        )
        try:
            await until(
                lambda: len(checker.accepted) >= BEFORE and completed(checker) > 0,
                60,
                f"{BEFORE} tasks accepted and one completed before the fault",
            )
            began, measured = await inject(stats)
            await until(
                lambda: stats.codes([s for s in stats.samples if s.started > began])[201] >= AFTER,
                60,
                f"{AFTER} submits accepted after the fault",
            )
        finally:
            stop.set()
            await load
        report = await checker.verify(client, timeout=scaled(90.0, 180.0))
    after = [s for s in stats.samples if s.started >= began]
    first_ok = min((s.ended for s in after if s.status == 201), default=float("inf"))
    report.publish(
        **measured,
        **window(stats.samples, began),
        first_201_after=f"{first_ok - began:.1f}s",
        max_503_latency=f"{max((s.seconds for s in after if s.status == 503), default=0):.2f}s",
        max_201_latency=f"{max((s.seconds for s in after if s.status == 201), default=0):.2f}s",
        http_5xx=len(stats.server_errors()),
    )
    report.assert_ok()
    assert report.completed == report.accepted
    assert not stats.server_errors(), stats.server_errors()[:3]
    assert not stats.unavailable_without_retry_after()
    assert all(s.seconds <= API_BOUND_SECONDS for s in after if s.status == 503)


async def test_stream_leader_killed(engine: Engine) -> None:
    nats = engine.nats
    down_for = scaled(2.0, 10.0)

    async def inject(stats: LoadStats) -> tuple[float, dict[str, object]]:
        leader = await asyncio.to_thread(nats.stream_leader)
        nats.kill(leader)
        killed_at = time.monotonic()
        elected_at, successor = await new_leader(nats, leader.name)
        await asyncio.sleep(max(0.0, killed_at + down_for - time.monotonic()))
        await asyncio.to_thread(nats.restart, leader)
        await all_replicas_current(engine.system)
        return killed_at, {
            "killed": leader.name,
            "new_leader": successor,
            "elected_after": f"{elected_at - killed_at:.1f}s",
            "rejoined_after": f"{time.monotonic() - killed_at:.1f}s",
        }

    await under_load(engine, "leader-kill", inject)


async def test_partition_of_the_submit_functions_server(engine: Engine) -> None:
    nats = engine.nats
    cut_for = scaled(3.0, 15.0)

    async def inject(stats: LoadStats) -> tuple[float, dict[str, object]]:
        node = await asyncio.to_thread(submit_server, engine)
        leader = await asyncio.to_thread(nats.stream_leader)
        nats.partition(node)
        cut_at = time.monotonic()
        await asyncio.sleep(cut_for)
        nats.heal(node)
        healed_at = time.monotonic()
        await asyncio.to_thread(nats.wait_meta_leader)
        await all_replicas_current(engine.system)
        during = [s for s in stats.samples if cut_at <= s.started and s.ended <= healed_at]
        return cut_at, {
            "partitioned": node.name,
            "was_leader": node.name == leader.name,
            "cut_for": f"{cut_for:g}s",
            "accepted_while_cut": stats.codes(during)[201],
            "rejoined_after_heal": f"{time.monotonic() - healed_at:.1f}s",
        }

    await under_load(engine, "partition", inject)
