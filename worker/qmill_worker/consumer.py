"""The worker: pull task ids from JetStream, run them, store results, then ack.

Delivery is at least once, so handling is idempotent: the Redis transitions refuse to
overwrite a terminal state, and a redelivered task that is already terminal is just
acked. A task is acked (confirmed, ``ack_sync``) only after its outcome is in Redis;
if Redis cannot take the outcome, the message is left for redelivery instead.

Handling a delivery decides its `Outcome` (``qmill_worker.outcomes``) and `_settle`
acts on it; slots and the memory budget (``qmill_worker.admission``) bound what runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from pathlib import Path
from typing import assert_never

from nats.aio.msg import Msg
from nats.errors import Error as NatsError

from qmill.server import metrics
from qmill.server.bus import Bus, Subscriptions
from qmill.server.config import Settings
from qmill.server.errors import DependencyUnavailable, StoreFull, TaskNotFound
from qmill.server.models import utcnow
from qmill.server.store import Outcome as Stored
from qmill.server.store import StartedTask, StartOutcome, Stores
from qmill_worker.admission import MemoryBudget, Slots
from qmill_worker.errors import FailureReason, SimulationError
from qmill_worker.executors import Executor
from qmill_worker.outcomes import Completed, Failed, Outcome, Released, Settled, TaskContext
from qmill_worker.simulator import SimJob

log = logging.getLogger(__name__)

FETCH_TIMEOUT_SECONDS = 1.0
HEARTBEAT_SECONDS = 5.0
# `qmill-worker --check` fails when the heartbeat is older than this.
HEARTBEAT_STALE_SECONDS = HEARTBEAT_SECONDS * 6
_NATS_FAILURES = (NatsError, TimeoutError, OSError, DependencyUnavailable)


def default_worker_id() -> str:
    """An opaque id, fixed for this process: ``w-`` and 12 random hex digits.

    It is shown to users (a task's ``worker_id``), so it must not say which host and
    process ran their task (it was ``<hostname>-<pid>``). Random rather than a hash of
    them: a hash of a host name and a pid is found by trying them. The "worker starting"
    log line pairs it with the host and pid, for operators.
    """
    return "w-" + secrets.token_hex(6)


class Worker:
    """One worker process's consumer: pulls as many tasks as it has free slots and runs them.

    Stores, bus and executor are passed in, so tests run it in their own event loop with
    a fake executor, and `main` with the real ones.
    """

    def __init__(
        self, settings: Settings, stores: Stores, bus: Bus, executor: Executor, worker_id: str
    ) -> None:
        self.settings = settings
        self.stores = stores
        self.bus = bus
        self.executor = executor
        self.worker_id = worker_id
        self.slots = Slots(settings.worker.concurrency)
        self.memory = MemoryBudget(settings.memory_budget_bytes)
        self._by_task: dict[str, asyncio.Task[None]] = {}
        self._cancelled: set[str] = set()
        self._stopping = asyncio.Event()

    @property
    def _keep_alive_seconds(self) -> float:
        """How often a held task is marked in progress: well inside ack_wait."""
        return max(1.0, self.settings.ack_wait_seconds / 3)

    def stop(self) -> None:
        """Stop pulling; `run` then finishes or releases what it holds and returns."""
        self._stopping.set()

    async def run(self) -> None:
        await self.executor.start()
        heartbeat = asyncio.create_task(self._heartbeat(), name="qmill-heartbeat")
        try:
            await self._pull_loop()
        finally:
            await self._drain()
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            await self.executor.close()

    async def _pull_loop(self) -> None:
        subs: Subscriptions | None = None
        subscribed_cancels = False
        while await self._wait_for_slots(subs):
            msgs: list[Msg] = []
            try:
                if subs is None:
                    subs = await self.bus.pull_subscriptions()
                    if not subscribed_cancels:
                        await self.bus.subscribe_cancels(self.cancel)
                        subscribed_cancels = True
                    log.info(
                        "pulling tasks",
                        extra={"worker_id": self.worker_id, "executor": self.executor.name},
                    )
                # One at a time, normal lane first (a tenant's backlog waits in the bulk
                # lane): a batch request that returns short stays open on the server,
                # which then delivers the next task to this worker's queue even if its
                # slots are full by then (see `Bus.undelivered`).
                msgs = await self._fetch_unless_stopping(subs)
            except TimeoutError:
                pass  # nothing queued right now
            except _NATS_FAILURES as exc:
                log.warning("cannot pull tasks; retrying", extra={"error": str(exc)})
                subs = None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), 1.0)
            for msg in msgs:
                self.slots.start(self._handle(msg))
        if subs is not None:
            await self._release_undelivered(subs)

    async def _fetch_unless_stopping(self, subs: Subscriptions) -> list[Msg]:
        """`Bus.fetch_next`, given up when a stop is asked for: an idle worker stops at
        once instead of after its fetch's wait. A task the server delivers after that
        stays in the subscription's queue and is released with the other undelivered
        ones (`_release_undelivered`)."""
        fetch = asyncio.ensure_future(self.bus.fetch_next(subs, FETCH_TIMEOUT_SECONDS))
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({fetch, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if fetch.done():
            return fetch.result()
        fetch.cancel()
        await asyncio.wait({fetch})  # unlike `await fetch`, never raises its cancellation
        if fetch.cancelled() or fetch.exception() is not None:
            return []
        return fetch.result()  # it had its message just before the cancel

    async def _wait_for_slots(self, subs: Subscriptions | None) -> int:
        """Wait until a slot is free (0 once stopping), keeping alive every task the
        server delivered meanwhile: it is ours until a fetch hands it to a slot, and
        without in-progress marks JetStream would give it to a second worker at
        ack_wait while this one still runs it later (see `Bus.undelivered`)."""
        while True:
            try:
                return await asyncio.wait_for(
                    self.slots.wait_free(self._stopping), self._keep_alive_seconds
                )
            except TimeoutError:
                for sub in (subs or {}).values():
                    for msg in self.bus.undelivered(sub):
                        with contextlib.suppress(*_NATS_FAILURES):
                            await msg.in_progress()

    async def _release_undelivered(self, subs: Subscriptions) -> None:
        """Stopping: hand back at once what was delivered but never started, rather than
        leave it to wait out ack_wait."""
        for sub in subs.values():
            for msg in self.bus.undelivered(sub):
                with contextlib.suppress(*_NATS_FAILURES):
                    await msg.nak()

    async def _drain(self) -> None:
        """Give running tasks the grace period, then release the rest for redelivery."""
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

    def cancel(self, task_id: str) -> None:
        """A user cancelled ``task_id``: stop it if it runs here (the process executor
        kills its simulation; a thread runs on and its result is discarded)."""
        running = self._by_task.get(task_id)
        if running is not None and not running.done():
            self._cancelled.add(task_id)
            running.cancel()

    async def _handle(self, msg: Msg) -> None:
        """One delivery, from its message to its settlement, in a task that holds a slot."""
        try:
            ctx = TaskContext.parse(msg, self.worker_id, self.settings.worker.max_attempts)
        except ValueError:
            # Not a task: there is nothing to store and no delivery will ever parse.
            log.error(
                "malformed task message dropped",
                extra={"data": msg.data[:200].decode(errors="replace")},
            )
            with contextlib.suppress(*_NATS_FAILURES):
                await msg.term()
            return
        task_id = ctx.task_id
        current = asyncio.current_task()
        assert current is not None
        self._by_task[task_id] = current
        # Tell JetStream we hold it while we wait for memory and while it runs.
        progress = asyncio.create_task(self._keep_alive(msg))
        try:
            async with self.memory.reserve(ctx.state_bytes):
                outcome = await self._process(ctx)
            await self._settle(ctx, outcome)
        except asyncio.CancelledError:
            if task_id in self._cancelled:
                # Cancelled by its user: Redis already says `cancelled`; done with it.
                log.info("running task stopped: cancelled", extra=ctx.log_extra)
                await self._settle(ctx, Settled())
                return
            # Shutdown past the grace period: hand the task to another worker now,
            # unless its outcome was stored just before the cancel landed (then another
            # worker would only run it again to have its result discarded).
            if await self._outcome_stored(task_id):
                await self._settle(ctx, Settled())
                return
            await self._settle(ctx, Released())
            raise
        except Exception:
            log.exception(
                "unexpected error handling a task; it will be redelivered", extra=ctx.log_extra
            )
            await self._settle(ctx, Released(delay=1.0))
        finally:
            progress.cancel()
            self._by_task.pop(task_id, None)
            self._cancelled.discard(task_id)

    async def _outcome_stored(self, task_id: str) -> bool:
        try:
            return (await self.stores.tasks.get(task_id)).status.terminal
        except (DependencyUnavailable, TaskNotFound):
            return False

    async def _process(self, ctx: TaskContext) -> Outcome:
        """Start the task in Redis and run it, unless Redis says it is already final."""
        outcome = await self._start(ctx)
        if outcome is None:
            return Released()
        if outcome.task is None:
            log.info("task already %s; acking", outcome.status, extra=ctx.log_extra)
            return Settled()
        ctx.owner = outcome.task.owner
        if ctx.attempts_spent:
            reason = (
                f"gave up after {ctx.max_attempts} attempts: every worker that ran this task "
                "crashed or stalled before finishing it"
            )
            return Failed(FailureReason.GAVE_UP, reason)
        return await self._execute(ctx, outcome.task)

    async def _start(self, ctx: TaskContext) -> StartOutcome | None:
        """Move the task to `processing`, holding the message while Redis is unreachable.

        Releasing it (nak) instead would make every queued task cycle through the
        workers during an outage, each pass costing one of the consumer's
        ``max_deliver`` deliveries; once they are spent JetStream never delivers the
        task again and it stays `pending` forever. Held here (the in-progress
        heartbeat keeps it ours), it costs nothing and starts as soon as Redis is back.
        Returns None if the worker is stopping meanwhile: the message is then released.
        """
        task_id = ctx.task_id
        delay = 0.25
        warned = False
        while True:
            try:
                return await self.stores.tasks.start(task_id, self.worker_id)
            except DependencyUnavailable as exc:
                if self._stopping.is_set():
                    log.warning(
                        "redis unavailable at start; task released",
                        extra={**ctx.log_extra, "error": str(exc)},
                    )
                    return None
                if not warned:
                    log.warning(
                        "redis unavailable at start; holding the task until it is back",
                        extra={**ctx.log_extra, "error": str(exc)},
                    )
                    warned = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            delay = min(delay * 2, 2.0)

    async def _execute(self, ctx: TaskContext, task: StartedTask) -> Outcome:
        """Simulate; a failure another attempt may fix is retried while attempts remain."""
        queue_seconds = (utcnow() - task.created_at).total_seconds()
        log.info(
            "task started",
            extra={
                **ctx.log_extra,
                "attempt": task.attempts,
                "queue_seconds": round(queue_seconds, 6),
            },
        )
        job = SimJob(
            task_id=task.task_id,
            circuit=task.circuit,
            shots=task.shots,
            seed=task.seed,
            memory=task.memory,
            plan=task.plan,
        )
        try:
            result = await self.executor.run(job, self.settings.limits.max_execution_seconds)
        except SimulationError as exc:
            if exc.retryable and not ctx.last_attempt:
                log.warning(
                    "attempt failed; will retry", extra={**ctx.log_extra, "error": exc.message}
                )
                return Released(delay=1.0, retry=exc.reason)
            return Failed(exc.reason, exc.message, queue_seconds)
        return Completed(result, queue_seconds)

    async def _settle(self, ctx: TaskContext, outcome: Outcome) -> None:
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
                with contextlib.suppress(*_NATS_FAILURES):
                    await ctx.msg.nak(delay=delay)
            case _:
                assert_never(outcome)

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
        return True

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
        except _NATS_FAILURES as exc:
            # The outcome is stored; a redelivery finds it terminal and acks it then.
            log.warning("ack not confirmed", extra={**ctx.log_extra, "error": str(exc)})

    async def _keep_alive(self, msg: Msg) -> None:
        """Tell JetStream the task is still being worked on (when the loop is free to)."""
        while True:
            await asyncio.sleep(self._keep_alive_seconds)
            with contextlib.suppress(*_NATS_FAILURES):
                await msg.in_progress()

    async def _heartbeat(self) -> None:
        """Liveness: a file and a Redis key with a TTL, refreshed while the event loop runs.

        The file is what container health checks read (`qmill-worker --check`): it does
        not depend on Redis, so a Redis outage does not get healthy workers restarted.
        """
        ttl = int(HEARTBEAT_SECONDS * 3)
        path = (
            Path(self.settings.worker.heartbeat_file)
            if self.settings.worker.heartbeat_file
            else None
        )
        while True:
            if path is not None:
                with contextlib.suppress(OSError):
                    path.touch()
            metrics.TASKS_IN_FLIGHT.labels(self.worker_id).set(len(self.slots))
            with contextlib.suppress(DependencyUnavailable, *_NATS_FAILURES):
                metrics.QUEUE_DEPTH.labels(self.worker_id).set(await self.bus.pending())
            info = json.dumps(
                {
                    "running": len(self.slots),
                    "executor": self.executor.name,
                    "at": utcnow().isoformat(),
                }
            )
            with contextlib.suppress(DependencyUnavailable):
                await self.stores.heartbeats.beat(self.worker_id, ttl, info)
            await asyncio.sleep(HEARTBEAT_SECONDS)
