"""How a worker stops (SIGTERM: scale-in, a rollout, a platform's termination deadline).

It stops pulling, hands back at once what was delivered but never started, gives
running tasks ``[worker] grace_period_seconds`` and hands back what is still running
then (`HandedBack`: the release recorded in the task record, so it is not an attempt,
then a nak). Where the platform allows it, the grace period covers a whole run and
nothing is handed back; where it does not, the hand-back comes before the platform's
SIGKILL and another worker starts the task at once instead of after ack_wait.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time

from nats.aio.msg import Msg

from qmill.server.bus import Bus, Subscriptions
from qmill.server.config import Settings
from qmill_worker.admission import Slots
from qmill_worker.settling import NATS_FAILURES

log = logging.getLogger("qmill_worker.consumer")


class Stopping:
    """The worker's stopping half (a mixin of `qmill_worker.consumer.Worker`)."""

    settings: Settings
    bus: Bus
    worker_id: str
    slots: Slots
    _held: collections.deque[Msg]
    _stopping: asyncio.Event
    # Until when (monotonic) a pull request this worker sent may still be open on the
    # server, able to deliver a task to it (see `handback_delay`).
    _pull_open_until: float = 0.0
    # The pull subscriptions, once the pull loop has ended (see `_release_late`).
    _stopped_subs: Subscriptions | None = None

    def stop(self) -> None:
        """Stop pulling; `run` then finishes or releases what it holds and returns."""
        self._stopping.set()

    def handback_delay(self) -> float | None:
        """The nak delay of a task this stopping worker hands back: none (another
        worker gets it at once), unless a pull request of this worker may still be
        open on the server (a fetch's lingering request outlives a stop by up to
        `FETCH_TIMEOUT_SECONDS`): the task would come straight back to this worker,
        which no longer reads it, and wait out ack_wait. Then just past its expiry."""
        left = self._pull_open_until - time.monotonic()
        return round(left + 0.05, 3) if left > 0 else None

    async def _release_undelivered(self, subs: Subscriptions) -> None:
        """Stopping: hand back at once what was delivered but never started, rather than
        leave it to wait out ack_wait."""
        self._stopped_subs = subs
        held = list(self._held)
        self._held.clear()
        for sub in subs.values():
            held += self.bus.undelivered(sub)
        delay = self.handback_delay()
        for msg in held:
            with contextlib.suppress(*NATS_FAILURES):
                await msg.nak(delay=delay)

    async def _release_late(self) -> None:
        """After the drain: wait until this worker's last pull request has expired (at
        most `FETCH_TIMEOUT_SECONDS`, and only if its fetch was cut short by the stop),
        then hand back what it delivered meanwhile. A task queued after the stop, or
        handed back by another worker stopping at the same time (a scale-in stops
        several), lands in that request; unreleased it would wait out ack_wait."""
        if self._stopped_subs is None:
            return
        left = self._pull_open_until - time.monotonic()
        if left > 0:
            await asyncio.sleep(left + 0.05)
        await self._release_undelivered(self._stopped_subs)

    async def _drain(self) -> None:
        """Give running tasks the grace period, then hand the rest back (`HandedBack`):
        released at once for another worker, their attempts not counted.

        Where the platform allows it, the grace period covers a whole run (Kubernetes:
        ``max_execution_seconds`` plus a margin) and nothing is handed back; where it
        does not (Cloud Run stops an instance 10 s after SIGTERM), it ends before the
        platform's deadline and the hand-back takes milliseconds (a Redis write and a
        nak per task).
        """
        running = self.slots.tasks
        if not running:
            return
        grace = self.settings.worker.grace_period_seconds
        log.info(
            "stopping: waiting for running tasks",
            extra={"worker_id": self.worker_id, "running": len(running)},
        )
        _, pending = await asyncio.wait(running, timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
