"""How a delivery ends: its outcome stored in Redis, then its message acked; or handed back.

`Settling.settle` is the one place a delivery ends, for a task handled alone
(``qmill_worker.consumer``) and, for what a batch cannot settle in one round trip, for
a task of a batch (``qmill_worker.batches``). Keeping the decision (an `Outcome`) apart
from this action is what makes "ack only after the outcome is in Redis" hold on every
path.
"""

from __future__ import annotations

import contextlib
import logging
from typing import assert_never

from nats.errors import Error as NatsError

from qmill.server import metrics
from qmill.server.config import Settings
from qmill.server.errors import DependencyUnavailable, StoreFull
from qmill.server.store import Outcome as Stored
from qmill.server.store import Stores
from qmill.server.store.worker_tasks import WorkerTasks
from qmill_worker.errors import FailureReason
from qmill_worker.outcomes import (
    Completed,
    Failed,
    HandedBack,
    Outcome,
    Released,
    Settled,
    TaskContext,
)

log = logging.getLogger(__name__)

# What a lost or refused NATS call raises (as the bus maps them).
NATS_FAILURES = (NatsError, TimeoutError, OSError, DependencyUnavailable)


class Settling:
    """The worker's settling half (a mixin of `qmill_worker.consumer.Worker`)."""

    settings: Settings
    stores: Stores
    worker_id: str
    worker_tasks: WorkerTasks

    async def settle(self, ctx: TaskContext, outcome: Outcome) -> None:
        """The one place a delivery ends: store the outcome, then ack; or hand it back.

        An outcome Redis cannot take is released instead (not acked), so that the
        redelivery stores it: the ack is confirmed only for what Redis holds.
        """
        if isinstance(outcome, Completed | Failed):
            stored = await self._record(ctx, outcome)
            if isinstance(stored, Failed):  # the result was refused: record why instead
                outcome = stored
                stored = await self._record(ctx, outcome)
            if stored is not True:
                outcome = Released(delay=2.0)
        match outcome:
            case Completed() | Failed() | Settled():
                await self._ack(ctx)
            case Released(delay=delay, retry=retry):
                if retry is not None:
                    metrics.TASKS_RETRIED.labels(self.worker_id, retry.value).inc()
                with contextlib.suppress(*NATS_FAILURES):
                    await ctx.msg.nak(delay=delay)
            case HandedBack(delay=delay):
                await self._hand_back(ctx, delay)
            case _:
                assert_never(outcome)

    async def _hand_back(self, ctx: TaskContext, delay: float | None) -> None:
        """A stopping worker's hand-back: the release recorded first (so the attempt it
        started is not counted), then the nak, so another worker starts the task now
        rather than after ack_wait. If Redis cannot record it the attempt counts, as a
        crash's would; if the nak is lost the task comes back after ack_wait."""
        releases = 0
        if ctx.started:
            try:
                releases = await self.worker_tasks.release(ctx.task_id, self.worker_id)
            except DependencyUnavailable as exc:
                log.warning(
                    "release not recorded; the attempt counts",
                    extra={**ctx.log_extra, "error": str(exc)},
                )
        try:
            await ctx.msg.nak(delay=delay)
        except NATS_FAILURES as exc:
            log.warning(
                "hand-back not sent; redelivered after ack_wait",
                extra={**ctx.log_extra, "error": str(exc)},
            )
            return
        metrics.TASKS_HANDED_BACK.labels(self.worker_id).inc()
        log.info(
            "task handed back",
            extra={**ctx.log_extra, "started": ctx.started, "releases": releases, "delay": delay},
        )

    async def _record(self, ctx: TaskContext, outcome: Completed | Failed) -> bool | Failed:
        """Write the outcome to Redis and count it; False if Redis could not be reached.

        A result a full Redis refuses (maxmemory, noeviction) is not retried: Redis stays
        full until records expire, days later, and every redelivery would simulate again
        for nothing. The task fails instead, with the reason (the returned `Failed`, which
        a full Redis still takes: see `TaskStore.fail`).
        """
        try:
            if isinstance(outcome, Completed):
                result = outcome.result
                status = await self.stores.tasks.complete(
                    ctx.task_id,
                    result.answer(),
                    qubits=result.qubits,
                    depth=result.depth,
                    method=result.method,
                    execution_seconds=result.execution_seconds,
                    worker_id=self.worker_id,
                    queue_seconds=outcome.queue_seconds,
                    owner=ctx.owner,
                )
            else:
                status = await self.stores.tasks.fail(
                    ctx.task_id,
                    outcome.message,
                    worker_id=self.worker_id,
                    queue_seconds=outcome.queue_seconds,
                    owner=ctx.owner,
                )
        except StoreFull as exc:
            if not isinstance(outcome, Completed):
                log.warning("store full; failure not recorded", extra=ctx.log_extra)
                return False
            log.warning("store full; result refused", extra={**ctx.log_extra, "error": str(exc)})
            return Failed(
                FailureReason.STORE_FULL,
                "the result could not be stored: the service's store is full; submit the "
                "task again later",
                outcome.queue_seconds,
            )
        except DependencyUnavailable as exc:
            log.warning(
                "could not store outcome; task released", extra={**ctx.log_extra, "error": str(exc)}
            )
            return False
        self.recorded(ctx, outcome, status)
        return True

    def recorded(self, ctx: TaskContext, outcome: Completed | Failed, status: Stored) -> None:
        """Count and log an outcome Redis took (or refused: the task was already final)."""
        if status is Stored.APPLIED:
            self._count(outcome)
            log.info(
                "task %s",
                "completed" if isinstance(outcome, Completed) else "failed",
                extra={
                    **ctx.log_extra,
                    "error": outcome.message if isinstance(outcome, Failed) else None,
                },
            )
        else:
            log.info("task was already %s; outcome discarded", status, extra=ctx.log_extra)

    def _count(self, outcome: Completed | Failed) -> None:
        wid = self.worker_id
        if outcome.queue_seconds is not None:
            metrics.QUEUE_SECONDS.labels(wid).observe(outcome.queue_seconds)
        if isinstance(outcome, Completed):
            metrics.TASKS_COMPLETED.labels(wid).inc()
            metrics.EXECUTION_SECONDS.labels(wid).observe(outcome.result.execution_seconds)
        else:
            metrics.TASKS_FAILED.labels(wid, outcome.reason.value).inc()

    async def _ack(self, ctx: TaskContext) -> None:
        try:
            await ctx.msg.ack_sync(timeout=self.settings.nats.publish_timeout_seconds)
        except NATS_FAILURES as exc:
            # The outcome is stored; a redelivery finds it terminal and acks it then.
            log.warning("ack not confirmed", extra={**ctx.log_extra, "error": str(exc)})
