"""Handling several deliveries at once: small compatible tasks run as one simulation.

The pull loop hands a `Batch` the deliveries of one fetch whose state is small
(``TaskMessage.state_bytes``); it holds one slot and their summed memory, starts all
of them in one Redis round trip (`WorkerTasks.start_many`), runs the compatible ones
(`batching.run_key`) in one simulation per chunk (`Executor.run_group`), records their
outcomes in one round trip (`WorkerTasks.finish_many`) and acks them with one flush.
Every delivery still ends in `Worker._settle`'s terms: stored, then acked; or handed
back. A task that is not batchable after all (a sweep, observables, a wider state)
runs alone afterwards, in the same slot, through the one-task path; a cancel stops it
as it stops any task running alone (`Worker.execute_alone`).

A task of a running batch's shared simulation that its user cancels is not stopped
(that would kill its neighbours' simulation): Redis already says `cancelled`, so its
result is refused by the finish script and discarded, and its delivery acked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from typing import TYPE_CHECKING

from qmill.server import telemetry
from qmill.server.errors import DependencyUnavailable, StoreFull
from qmill.server.models import utcnow
from qmill.server.store import Outcome as Stored
from qmill.server.store import StartedTask
from qmill.server.store.worker_tasks import Finish
from qmill.server.workload import Plan
from qmill_worker import batching
from qmill_worker.errors import SimulationError
from qmill_worker.outcomes import (
    Completed,
    Failed,
    HandedBack,
    Outcome,
    Released,
    Settled,
    TaskContext,
)
from qmill_worker.simulator import SimJob

if TYPE_CHECKING:
    from qmill_worker.consumer import Worker

log = logging.getLogger(__name__)


def key_of(task: StartedTask) -> str | None:
    """The task's `batching.run_key`; None (alone) for a task without a readable plan."""
    if not task.plan:
        return None
    try:
        plan = Plan.model_validate_json(task.plan)
    except ValueError:
        return None  # the one-task path fails it with the reason
    return batching.run_key(plan, task.shots, task.memory)


class Batch:
    """The deliveries of one fetch that may run together, handled in one slot."""

    def __init__(self, worker: Worker, contexts: list[TaskContext]) -> None:
        self.worker = worker
        self.contexts = contexts
        self._settled: set[str] = set()

    async def handle(self) -> None:
        worker = self.worker
        ids = [ctx.task_id for ctx in self.contexts]
        worker.batched.update(ids)
        # Each task's handling continues its own submit's trace, as `Worker._handle`'s;
        # the lines about each carry its request id (`TaskContext.log_extra`).
        spans = [
            telemetry.start_span(
                "qmill.execute",
                telemetry.SpanKind.CONSUMER,
                {
                    "qmill.task_id": ctx.task_id,
                    "qmill.attempt": ctx.attempt,
                    "qmill.batch": len(ids),
                },
                telemetry.context_of(ctx.msg.headers),
            )
            for ctx in self.contexts
        ]
        progress = asyncio.create_task(self._keep_alive())
        try:
            async with worker.memory.reserve(sum(ctx.state_bytes for ctx in self.contexts)):
                await self._process()
        except asyncio.CancelledError:
            # Shutdown past the grace period: as `Worker._handle`, per task not settled.
            for ctx in self._pending():
                if await worker.outcome_stored(ctx.task_id):
                    await self._settle_one(ctx, Settled())
                else:
                    await self._settle_one(ctx, HandedBack(worker.handback_delay()))
            raise
        except Exception:
            log.exception(
                "unexpected error handling a batch; its tasks will be redelivered",
                extra={"task_ids": ids, "worker_id": worker.worker_id},
            )
            for ctx in self._pending():
                await self._settle_one(ctx, Released(delay=1.0))
        finally:
            progress.cancel()
            worker.batched.difference_update(ids)
            for span in spans:
                span.end()

    def _pending(self) -> list[TaskContext]:
        return [ctx for ctx in self.contexts if ctx.task_id not in self._settled]

    async def _keep_alive(self) -> None:
        """`Worker._keep_alive` for every delivery of the batch not settled yet."""
        while True:
            await asyncio.sleep(self.worker.keep_alive_seconds)
            for ctx in self._pending():
                with contextlib.suppress(*self.worker.nats_failures):
                    await ctx.msg.in_progress()

    async def _process(self) -> None:
        worker = self.worker
        try:
            starts = await worker.worker_tasks.start_many(
                [ctx.task_id for ctx in self.contexts], worker.worker_id
            )
        except DependencyUnavailable:
            # The one-task path holds each task until Redis is back (`Worker._start`).
            for ctx in self.contexts:
                await self._settle_one(ctx, await worker.process(ctx))
            return
        alone: list[tuple[TaskContext, StartedTask]] = []
        groups: dict[str, list[tuple[TaskContext, StartedTask]]] = defaultdict(list)
        early: list[tuple[TaskContext, Outcome]] = []
        for ctx, start in zip(self.contexts, starts, strict=True):
            if start.task is None:
                log.info("task already %s; acking", start.status, extra=ctx.log_extra)
                early.append((ctx, Settled()))
                continue
            ctx.owner = start.task.owner
            ctx.attempt = start.task.attempts
            if ctx.attempts_spent:
                early.append((ctx, worker.gave_up(ctx)))
                continue
            key = key_of(start.task)
            if key is None:
                alone.append((ctx, start.task))
            else:
                groups[key].append((ctx, start.task))
        if early:
            await self._settle_many(early)
        for members in groups.values():
            works = [batching.work(task.circuit, task.shots) for _, task in members]
            settings = worker.settings.worker
            for chunk in batching.chunks(works, settings.batch_max_tasks, settings.batch_max_work):
                chosen = [members[k] for k in chunk]
                if len(chosen) == 1 or not await self._run_together(chosen):
                    alone += chosen
        for ctx, task in alone:
            await self._settle_one(ctx, await worker.execute_alone(ctx, task))

    async def _run_together(self, members: list[tuple[TaskContext, StartedTask]]) -> bool:
        """Run ``members`` as one simulation and settle each; False (nothing settled)
        if the simulation ended as a whole (a timeout, a crash): each then runs alone,
        so only the task at fault fails."""
        worker = self.worker
        now = utcnow()
        queued = [(now - task.created_at).total_seconds() for _, task in members]
        log.info(
            "tasks started together",
            extra={
                "task_ids": [ctx.task_id for ctx, _ in members],
                "worker_id": worker.worker_id,
            },
        )
        timeout = worker.settings.limits.max_execution_seconds
        try:
            answers = await worker.executor.run_group([SimJob.of(t) for _, t in members], timeout)
        except Exception as exc:  # SimulationError (a timeout, a crash), or a bug
            log.warning(
                "a batch's simulation failed as a whole; its tasks run alone",
                extra={"task_ids": [ctx.task_id for ctx, _ in members], "error": str(exc)},
            )
            return False
        outcomes: list[tuple[TaskContext, Outcome]] = []
        for (ctx, _), answer, queue_seconds in zip(members, answers, queued, strict=True):
            if not isinstance(answer, SimulationError):
                outcomes.append((ctx, Completed(answer, queue_seconds)))
            elif answer.retryable and not ctx.last_attempt:
                outcomes.append((ctx, Released(delay=1.0, retry=answer.reason)))
            else:
                outcomes.append((ctx, Failed(answer.reason, answer.message, queue_seconds)))
        await self._settle_many(outcomes)
        return True

    async def _settle_one(self, ctx: TaskContext, outcome: Outcome) -> None:
        await self.worker.settle(ctx, outcome)
        self._settled.add(ctx.task_id)

    async def _settle_many(self, outcomes: list[tuple[TaskContext, Outcome]]) -> None:
        """`Worker._settle` for several deliveries: outcomes stored in one round trip,
        then acks sent with one flush (see `_ack_many`)."""
        worker = self.worker
        finishes = [(ctx, o) for ctx, o in outcomes if isinstance(o, Completed | Failed)]
        stored: list[Stored | StoreFull] = []
        if finishes:
            try:
                stored = await worker.worker_tasks.finish_many(
                    [self._finish(ctx, o) for ctx, o in finishes]
                )
            except DependencyUnavailable as exc:
                log.warning(
                    "could not store outcomes; tasks released",
                    extra={"task_ids": [c.task_id for c, _ in finishes], "error": str(exc)},
                )
                for ctx, _ in finishes:
                    await self._settle_one(ctx, Released(delay=2.0))
                finishes, stored = [], []
        acks: list[TaskContext] = []
        for (ctx, final), status in zip(finishes, stored, strict=True):
            if isinstance(status, StoreFull):
                # Refused by a full Redis: the one-task path records why (`Worker._record`).
                await self._settle_one(ctx, final)
                continue
            worker.recorded(ctx, final, status)
            acks.append(ctx)
        for ctx, other in outcomes:
            if isinstance(other, Settled):
                acks.append(ctx)
            elif isinstance(other, Released | HandedBack):
                await self._settle_one(ctx, other)
        await self._ack_many(acks)

    def _finish(self, ctx: TaskContext, outcome: Completed | Failed) -> Finish:
        wid = self.worker.worker_id
        if isinstance(outcome, Failed):
            return Finish(ctx.task_id, ctx.owner, wid, outcome.queue_seconds, error=outcome.message)
        result = outcome.result
        return Finish(
            ctx.task_id,
            ctx.owner,
            wid,
            outcome.queue_seconds,
            answer=result.answer(),
            qubits=result.qubits,
            depth=result.depth,
            method=result.method,
            execution_seconds=result.execution_seconds,
        )

    async def _ack_many(self, contexts: list[TaskContext]) -> None:
        """Ack deliveries whose outcome Redis holds: one ack each, then one flush (a
        round trip that returns once the server has read them) instead of one
        confirmed ``ack_sync`` round trip per task. An ack lost anyway costs only a
        redelivery, which finds the task final and acks it (`Settled`)."""
        if not contexts:
            return
        for ctx in contexts:
            with contextlib.suppress(*self.worker.nats_failures):
                await ctx.msg.ack()
            self._settled.add(ctx.task_id)
        try:
            timeout = max(1, round(self.worker.settings.nats.publish_timeout_seconds))
            await contexts[0].msg._client.flush(timeout=timeout)
        except self.worker.nats_failures as exc:
            log.warning(
                "acks not confirmed",
                extra={"task_ids": [c.task_id for c in contexts], "error": str(exc)},
            )
