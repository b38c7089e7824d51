"""The task stream and the workers' durable consumers made to exist as configured.

`qmill.server.bus` says what the stream and the consumers look like (`bus.stream_config`,
`bus.consumer_config`); this module makes JetStream hold that, and says what it did:

* `ensure_stream` creates the stream, or updates it when its configuration differs
  (a new ``[nats] stream_replicas`` included: JetStream moves the stream, and the
  consumers that follow its replica count, to the new peer set);
* `ensure_consumers` creates the consumers that are missing and, with ``update``,
  updates those whose configuration differs. The functions create missing ones only
  (so a system whose workers never ran has the consumer KEDA reads, and a function
  never rewrites what a worker or ``qmill-setup`` configured); workers and
  ``qmill-setup`` also update.

JetStream's refusal to place a stream on more servers than it has (``no suitable peers
for placement``; a single server refuses any R > 1) is reported as `PlacementRefused`,
naming ``[nats] stream_replicas``, instead of a bare API error behind every 503.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import APIError, NotFoundError

from qmill.server.errors import DependencyUnavailable

# JetStream's error codes for a stream it cannot place on enough servers.
_NO_SUITABLE_PEERS = 10005  # "no suitable peers for placement" (R above the cluster size)
_INSUFFICIENT_RESOURCES = 10023
_REPLICAS_NOT_SUPPORTED = 10074  # "replicas > 1 not supported in non-clustered mode"
_PLACEMENT_CODES = frozenset({_NO_SUITABLE_PEERS, _INSUFFICIENT_RESOURCES, _REPLICAS_NOT_SUPPORTED})


class Change(StrEnum):
    """What ensuring one stream or consumer did."""

    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class Ensured:
    kind: str  # "stream" or "consumer"
    name: str
    change: Change


class PlacementRefused(DependencyUnavailable):
    """JetStream cannot keep the stream on ``[nats] stream_replicas`` servers."""

    def __init__(self, replicas: int, reason: str) -> None:
        super().__init__(
            "nats",
            f"[nats] stream_replicas = {replicas} (env QMILL_NATS__STREAM_REPLICAS) is more "
            f"than the NATS servers can hold ({reason}): set it to at most the number of "
            "JetStream servers in the cluster (1 for a single server)",
        )
        self.replicas = replicas


def differs(desired: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The keys set in ``desired`` whose value ``current`` does not have."""
    return sorted(key for key, value in desired.items() if current.get(key) != value)


async def ensure_stream(js: JetStreamContext, config: js_api.StreamConfig) -> Ensured:
    """Create the stream, or update it where it differs from ``config``."""
    assert config.name is not None
    replicas = config.num_replicas or 1
    try:
        try:
            info = await js.stream_info(config.name)
        except NotFoundError:
            await js.add_stream(config)
            return Ensured("stream", config.name, Change.CREATED)
        if not differs(config.as_dict(), info.config.as_dict()):
            return Ensured("stream", config.name, Change.UNCHANGED)
        await js.update_stream(config)
        return Ensured("stream", config.name, Change.UPDATED)
    except APIError as exc:
        reason = exc.description or str(exc)
        if exc.err_code in _PLACEMENT_CODES and "offline" in reason:
            # A server of the cluster is down or still rejoining: the same request
            # succeeds once it is back, so this is an outage, not a setting to fix.
            raise DependencyUnavailable("nats", f"stream not placed now: {reason}") from exc
        if exc.err_code in _PLACEMENT_CODES:
            raise PlacementRefused(replicas, reason) from exc
        raise


async def ensure_consumers(
    js: JetStreamContext,
    stream: str,
    configs: Iterable[js_api.ConsumerConfig],
    *,
    update: bool,
) -> list[Ensured]:
    """Create each consumer that is missing; with ``update``, update each that differs."""
    done = []
    for config in configs:
        name = config.durable_name
        assert name is not None
        try:
            info = await js.consumer_info(stream, name)
        except NotFoundError:
            await js.add_consumer(stream, config)
            done.append(Ensured("consumer", name, Change.CREATED))
            continue
        if not update or not differs(config.as_dict(), info.config.as_dict()):
            done.append(Ensured("consumer", name, Change.UNCHANGED))
            continue
        await js.add_consumer(stream, config)  # no action given: create or update
        done.append(Ensured("consumer", name, Change.UPDATED))
    return done


@dataclass(frozen=True)
class Placement:
    """Where the stream runs now: its leader and how many of its replicas are current."""

    leader: str
    replicas: int  # the leader and its followers that are current
    wanted: int

    @property
    def complete(self) -> bool:
        return bool(self.leader) and self.replicas >= self.wanted


async def placement(js: JetStreamContext, stream: str, wanted: int) -> Placement:
    info = await js.stream_info(stream)
    cluster = info.cluster
    if cluster is None:  # a single server: it is the stream
        return Placement("(single server)", 1, wanted)
    followers = sum(1 for peer in cluster.replicas or [] if peer.current)
    return Placement(cluster.leader or "", (1 if cluster.leader else 0) + followers, wanted)


async def wait_placed(js: JetStreamContext, stream: str, wanted: int, timeout: float) -> Placement:
    """Until the stream has a leader and ``wanted`` current replicas, or ``timeout``
    passed (the last placement seen is returned either way). Moving a stream to more
    replicas takes JetStream ~10 s here before the new followers report current."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            seen = await placement(js, stream, wanted)
        except APIError:  # no leader at this moment (an election): ask again
            seen = Placement("", 0, wanted)
        if seen.complete or time.monotonic() >= deadline:
            return seen
        await asyncio.sleep(0.25)
