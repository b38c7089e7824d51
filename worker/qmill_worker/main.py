"""``qmill-worker``: the long-running JetStream consumer. Scale it by replica count.

SIGTERM or SIGINT: stop pulling, let running tasks finish within
``[worker] grace_period_seconds``, release the rest for redelivery, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path

import uvloop

from qmill.server.bus import Bus
from qmill.server.config import get_settings
from qmill.server.errors import ConfigError
from qmill.server.logs import setup_logging
from qmill.server.store import Stores
from qmill.server.telemetry import setup_tracing
from qmill_worker import probes
from qmill_worker.consumer import HEARTBEAT_STALE_SECONDS, Worker, default_worker_id
from qmill_worker.executors import make_executor

log = logging.getLogger("qmill_worker")


async def serve(worker_id: str) -> None:
    settings = get_settings()
    stores = Stores.connect(
        settings.redis,
        # No socket timeout: with the thread executor the event loop freezes while Aer
        # runs, and a timeout measured across that freeze would fail a healthy call.
        socket_timeout=None,
        retries=8,
    )
    bus = Bus(settings, name=f"qmill-worker-{worker_id}")
    slots = settings.worker.concurrency
    executor = make_executor(settings.worker.executor, slots, settings.worker.aer_threads)
    worker = Worker(settings, stores, bus, executor, worker_id)
    if settings.worker.metrics_port:
        probes.start(settings.worker.metrics_port, worker)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    # The one place the opaque worker_id (what users see on their tasks) meets the host
    # and pid, for operators reading the logs.
    log.info(
        "worker starting",
        extra={
            "worker_id": worker_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "executor": executor.name,
            "slots": slots,
        },
    )
    try:
        await worker.run()
    finally:
        await bus.close()
        await stores.close()
        log.info("worker stopped", extra={"worker_id": worker_id})


def check(heartbeat_file: str) -> int:
    """0 when the heartbeat file was touched recently, 1 otherwise (stale or missing)."""
    if not heartbeat_file:
        print("qmill-worker: [worker] heartbeat_file is not set", file=sys.stderr)
        return 1
    try:
        age = time.time() - Path(heartbeat_file).stat().st_mtime
    except OSError:
        print(f"qmill-worker: no heartbeat at {heartbeat_file}", file=sys.stderr)
        return 1
    if age > HEARTBEAT_STALE_SECONDS:
        print(f"qmill-worker: heartbeat is {age:.0f} s old", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="qmill-worker", description=__doc__)
    parser.add_argument(
        "--worker-id",
        default=None,
        help="defaults to an opaque w-<12 hex digits>, logged with the host and pid",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="health check: exit 0 if the worker's heartbeat file is fresh, else 1",
    )
    args = parser.parse_args(argv)
    try:
        settings = get_settings()
    except ConfigError as exc:
        print(f"qmill-worker: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.check:
        raise SystemExit(check(settings.worker.heartbeat_file))
    setup_logging(settings.log, service="worker")
    setup_tracing(settings.telemetry, service="worker")
    uvloop.run(serve(args.worker_id or default_worker_id()))


if __name__ == "__main__":
    main()
