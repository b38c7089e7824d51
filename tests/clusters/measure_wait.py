"""What waiting for a replica (``[redis] min_replicas_to_ack = 1``, Redis WAIT) costs a submit.

``python -m tests.clusters.measure_wait [rounds] [submits]`` starts a primary, a replica
and three Sentinels (`RedisCluster`) and a nats-server, then submits Bell tasks through
the submit function's core (`qmill.server.tasks.submit`, through the Sentinels, as a
function does), one at a time, in alternating blocks without and with WAIT, so both see
the same machine. Per submit: the wall time, this process's CPU time, and the CPU time of
the Redis primary and replica; and the submit's last write alone (`confirm`, which
carries the WAIT), timed the same way. Prints each round and the median with its spread.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

from qmill.server import embedded, tasks
from qmill.server.bus import Bus
from qmill.server.config import Settings
from qmill.server.ports import free_port
from qmill.server.processes import Server
from qmill.server.store import Stores
from tests.clusters.redis import RedisCluster
from tests.conftest import BELL

Row = dict[str, float]


def _cpu(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


async def _block(settings: Settings, stores: Stores, bus: Bus, redis: RedisCluster, n: int) -> Row:
    primary = redis.node(redis.primary())
    replica = next(node for node in redis.nodes if node is not primary)
    body = {"quantum_circuit": BELL, "shots": 10}
    cpu0, p0, r0, wall = time.process_time(), _cpu(primary.pid), _cpu(replica.pid), []
    for _ in range(n):
        started = time.perf_counter()
        await tasks.submit(body, settings, stores, bus)
        wall.append(time.perf_counter() - started)
    # The write that waits, alone: `confirm` of one task (the submit's last write).
    task_id = (await tasks.submit(body, settings, stores, bus)).task_id
    confirm = []
    for _ in range(n):
        started = time.perf_counter()
        await stores.tasks.confirm([task_id])
        confirm.append(time.perf_counter() - started)
    return {
        "confirm_us": statistics.median(confirm) * 1e6,
        "wall_ms": statistics.median(wall) * 1000,
        "p99_ms": sorted(wall)[int(0.99 * (n - 1))] * 1000,
        "cpu_us": (time.process_time() - cpu0) / n * 1e6,
        "primary_cpu_us": (_cpu(primary.pid) - p0) / n * 1e6,
        "replica_cpu_us": (_cpu(replica.pid) - r0) / n * 1e6,
    }


async def measure(rounds: int, submits: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="qmill-wait-"))
    redis = RedisCluster(root / "redis", max_memory_mb=256)
    port = free_port()
    nats = Server("nats", port, root / "nats", argv=embedded.nats_command(port, root / "nats"))
    try:
        redis.start()
        nats.start()
        runs: dict[int, list[Row]] = {0: [], 1: []}
        for ack in (0, 1) * rounds:
            settings = Settings.model_validate(
                {
                    "nats": {"url": f"nats://127.0.0.1:{port}"},
                    "redis": {**redis.settings(), "min_replicas_to_ack": ack},
                }
            )
            stores = Stores.connect(settings.redis, socket_timeout=1.0)
            bus = Bus(settings, name="measure-wait")
            try:
                await _block(settings, stores, bus, redis, 20)  # warm: connections, scripts
                row = await _block(settings, stores, bus, redis, submits)
            finally:
                await bus.close()
                await stores.close()
            runs[ack].append(row)
            print(f"min_replicas_to_ack={ack} " + " ".join(f"{k}={v:.1f}" for k, v in row.items()))
        print(f"load average {psutil.getloadavg()[0]:.1f}")
        for ack, rows in runs.items():
            summary = []
            for key in rows[0]:
                values = [r[key] for r in rows]
                summary.append(
                    f"{key}={statistics.median(values):.1f} [{min(values):.1f}-{max(values):.1f}]"
                )
            print(f"median of {len(rows)} rounds, min_replicas_to_ack={ack}: " + " ".join(summary))
    finally:
        nats.stop()
        redis.stop()


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    asyncio.run(measure(*(args or [5, 300])))
