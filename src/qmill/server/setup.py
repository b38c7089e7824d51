"""``qmill-setup``: create or update the task stream and the workers' consumers, then exit.

Deployments run it before any worker (a Kubernetes Job, a Cloud Run job): with workers
scaled to zero nothing else would create the durable consumer that KEDA's
nats-jetstream scaler reads, and on a clustered NATS a missing consumer is an error to
it ("leader node not found for consumer"), so the workers would never start. The
functions also create what is missing when they connect; this command is the one that
also *updates* (a new ``[nats] stream_replicas``, ``ack_wait_seconds`` or
``[worker] max_attempts``) and checks the result.

It reads the normal ``QMILL_*`` settings. Exit status: 0 when the stream and both
consumers exist as configured (a second run changes nothing and says ``unchanged``),
1 when NATS was unreachable for ``--wait`` seconds, refused the configuration (more
replicas than servers) or did not place the stream on its replicas in time, 2 for
invalid settings.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import nats
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext

from qmill.server import bus, constants, jetstream
from qmill.server.config import Settings, get_settings
from qmill.server.errors import ConfigError, DependencyUnavailable
from qmill.urls import redact_url

# A setup job may start alongside NATS (compose, a fresh cluster): wait this long for it.
DEFAULT_WAIT_SECONDS = 60.0
# Moving an existing stream to more replicas took ~10 s on the test cluster; a fresh
# R3 stream has its leader within a second.
PLACEMENT_TIMEOUT_SECONDS = 60.0
EXIT_FAILED = 1
EXIT_CONFIG = 2
_FAILURES = (NatsError, TimeoutError, OSError)


def say(message: str) -> None:
    print(f"qmill-setup: {message}", flush=True)


async def _quiet(exc: Exception) -> None:
    """nats-py's default error callback logs a traceback per failed attempt."""


async def connect(settings: Settings, wait: float) -> NATS:
    """A connection to any of ``[nats] url``'s servers, retried for ``wait`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        try:
            return await nats.connect(
                servers=settings.nats.servers,
                name="qmill-setup",
                connect_timeout=max(1, round(settings.nats.connect_timeout_seconds)),
                allow_reconnect=False,
                error_cb=_quiet,  # the failure is reported once, below
            )
        except _FAILURES as exc:
            if loop.time() >= deadline:
                raise DependencyUnavailable(
                    "nats", f"{redact_url(settings.nats.url)} unreachable for {wait:g} s: {exc}"
                ) from exc
            await asyncio.sleep(1)


async def apply(settings: Settings, wait: float) -> list[str]:
    """Ensure the stream and consumers; the problems left (empty: as configured).

    An outage (NATS unreachable, a cluster peer offline) is retried for ``wait``
    seconds; a configuration JetStream refuses (`jetstream.PlacementRefused`) is not.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        try:
            return await _apply(settings, max(0.0, deadline - loop.time()))
        except jetstream.PlacementRefused:
            raise
        except DependencyUnavailable as exc:
            if loop.time() >= deadline:
                raise
            say(f"retrying: {exc.message}")
            await asyncio.sleep(1)


async def _apply(settings: Settings, wait: float) -> list[str]:
    nc = await connect(settings, wait)
    try:
        return await _ensure(nc, settings)
    except (NatsTimeoutError, NoRespondersError) as exc:
        # A JetStream API that does not answer yet (a cluster that has just elected its
        # meta leader, a server rejoining) is an outage to wait out, like no connection.
        raise DependencyUnavailable("nats", f"JetStream did not answer: {exc!r}") from exc
    finally:
        await nc.close()


async def _ensure(nc: NATS, settings: Settings) -> list[str]:
    """Create or update the stream and consumers over ``nc``; the problems left."""
    js = nc.jetstream(timeout=max(5.0, settings.nats.publish_timeout_seconds))
    stream_config = bus.stream_config(settings)
    stream = await jetstream.ensure_stream(js, stream_config)
    replicas = settings.nats.stream_replicas
    placed = await jetstream.wait_placed(
        js, constants.STREAM_NAME, replicas, PLACEMENT_TIMEOUT_SECONDS
    )
    say(
        f"stream {stream.name} {stream.change} (R{replicas}: leader {placed.leader or 'none'}, "
        f"{placed.replicas} of {replicas} replicas current)"
    )
    if not placed.complete:
        return [
            f"stream {stream.name} has {placed.replicas} of {replicas} replicas current "
            f"after {PLACEMENT_TIMEOUT_SECONDS:g} s"
        ]
    configs = [bus.consumer_config(settings, lane) for lane in bus.Lane]
    for consumer in await jetstream.ensure_consumers(
        js, constants.STREAM_NAME, configs, update=True
    ):
        say(f"consumer {consumer.name} {consumer.change}")
    return await check(js, settings)


async def check(js: JetStreamContext, settings: Settings) -> list[str]:
    """What JetStream holds now, compared with the configuration."""
    problems = []
    info = await js.stream_info(constants.STREAM_NAME)
    wrong = jetstream.differs(bus.stream_config(settings).as_dict(), info.config.as_dict())
    if wrong:
        problems.append(f"stream {constants.STREAM_NAME} differs in {', '.join(wrong)}")
    for lane in bus.Lane:
        config = bus.consumer_config(settings, lane)
        held = await js.consumer_info(constants.STREAM_NAME, lane.consumer)
        wrong = jetstream.differs(config.as_dict(), held.config.as_dict())
        if wrong:
            problems.append(f"consumer {lane.consumer} differs in {', '.join(wrong)}")
    return problems


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="qmill-setup", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--wait",
        type=float,
        default=DEFAULT_WAIT_SECONDS,
        help=f"seconds to keep trying to reach NATS (default {DEFAULT_WAIT_SECONDS:g})",
    )
    args = parser.parse_args(argv)
    try:
        settings = get_settings()
    except ConfigError as exc:
        print(f"qmill-setup: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None
    try:
        problems = asyncio.run(apply(settings, args.wait))
    except DependencyUnavailable as exc:
        problems = [exc.message]
    except _FAILURES as exc:
        problems = [f"NATS: {exc or type(exc).__name__}"]
    for problem in problems:
        print(f"qmill-setup: {problem}", file=sys.stderr)
    raise SystemExit(EXIT_FAILED if problems else 0)


if __name__ == "__main__":
    main()
