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
import collections
import contextlib
import json
import logging
import secrets
import time
from pathlib import Path
from typing import Any

from nats.aio.msg import Msg

from qmill.server import logs, metrics, telemetry
from qmill.server.bus import Bus, Lane, Subscriptions
from qmill.server.config import Settings
from qmill.server.errors import DependencyUnavailable, TaskNotFound
from qmill.server.models import utcnow
from qmill.server.store import StartedTask, StartOutcome, Stores
from qmill.server.store.worker_tasks import WorkerTasks
from qmill_worker import batching
from qmill_worker.admission import MemoryBudget, Slots
from qmill_worker.batches import Batch
from qmill_worker.errors import FailureReason, SimulationError
from qmill_worker.executors import Executor
from qmill_worker.outcomes import (
    Completed,
    Failed,
    HandedBack,
    Outcome,
    Released,
    Settled,
    TaskContext,
)
from qmill_worker.settling import NATS_FAILURES, Settling
from qmill_worker.simulator import SimJob
from qmill_worker.stopping import Stopping

log = logging.getLogger(__name__)

FETCH_TIMEOUT_SECONDS = 1.0
HEARTBEAT_SECONDS = 5.0
# `qmill-worker --check` fails when the heartbeat is older than this.
HEARTBEAT_STALE_SECONDS = HEARTBEAT_SECONDS * 6
_NATS_FAILURES = NATS_FAILURES


def default_worker_id() -> str:
    """An opaque id, fixed for this process: ``w-`` and 12 random hex digits.

    It is shown to users (a task's ``worker_id``), so it must not say which host and
    process ran their task (it was ``<hostname>-<pid>``). Random rather than a hash of
    them: a hash of a host name and a pid is found by trying them. The "worker starting"
    log line pairs it with the host and pid, for operators.
    """
    return "w-" + secrets.token_hex(6)


class Worker(Settling, Stopping):
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
        self.worker_tasks = WorkerTasks(stores.tasks)
        self.nats_failures = _NATS_FAILURES
        # Deliveries fetched with a batch that no slot could take yet (see `_dispatch`).
        self._held: collections.deque[Msg] = collections.deque()
        # Tasks running in a `Batch`: a cancel does not stop them (see `cancel`).
        self.batched: set[str] = set()
        self._by_task: dict[str, asyncio.Task[Any]] = {}
        self._cancelled: set[str] = set()
        self._stopping = asyncio.Event()
        # When Redis last took this worker's heartbeat (monotonic): what /readyz reads.
        self.redis_answered_at: float | None = None
        self._pull_open_until = 0.0

    @property
    def keep_alive_seconds(self) -> float:
        """How often a held task is marked in progress: well inside ack_wait."""
        return max(1.0, self.settings.ack_wait_seconds / 3)

    async def run(self) -> None:
        await self.executor.start()
        heartbeat = asyncio.create_task(self._heartbeat(), name="qmill-heartbeat")
        try:
            await self._pull_loop()
        finally:
            await self._drain()
            await self._release_late()
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
                if self._held:
                    self._dispatch([])
                    continue
                # Normal lane first (a tenant's backlog waits in the bulk lane): a pull
                # request that returns short stays open on the server, which then
                # delivers the next task to this worker's queue even if its slots are
                # full by then (see `Bus.undelivered`).
                msgs = await self._fetch_unless_stopping(subs)
                msgs += await self._fetch_more(subs, msgs)
            except TimeoutError:
                pass  # nothing queued right now
            except _NATS_FAILURES as exc:
                log.warning("cannot pull tasks; retrying", extra={"error": str(exc)})
                subs = None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), 1.0)
            self._dispatch(msgs)
        if subs is not None:
            await self._release_undelivered(subs)

    async def _fetch_more(self, subs: Subscriptions, fetched: list[Msg]) -> list[Msg]:
        """With batching on and a small task fetched, what else is queued right now, up
        to ``batch_max_tasks`` in all; a wide task is taken alone, as without batching,
        so a burst of wide tasks spreads over the workers instead of over-filling one."""
        count = self.settings.worker.batch_max_tasks
        if count <= 1 or len(fetched) != 1 or self._stopping.is_set():
            return []
        ctx = self._context(fetched[0])
        if ctx is None or ctx.state_bytes > batching.SMALL_MESSAGE_BYTES:
            return []
        if not fetched[0].metadata.num_pending:
            # Its lane had nothing behind it when it was delivered: a lone task (one
            # client waiting on it) starts without another request's round trip.
            return []
        if fetched[0].subject == Lane.NORMAL.subject:
            # Not a tenant's backlog (the bulk lane) ahead of what the normal lane
            # receives meanwhile: the bulk lane fills a batch only when it started one.
            subs = {Lane.NORMAL: subs[Lane.NORMAL]}
        return await self.bus.fetch_up_to(subs, count - 1, FETCH_TIMEOUT_SECONDS, wait=False)

    def _dispatch(self, msgs: list[Msg]) -> None:
        """Start what was fetched: with batching on, the deliveries of small states
        (`batching.SMALL_MESSAGE_BYTES`) in one slot as a `Batch`, every other one in a
        slot of its own. One that finds no free slot is held, kept alive, and started
        before the next fetch: the fetch after a small task takes up to
        ``batch_max_tasks`` deliveries with one slot free, and cannot tell a wide
        circuit from a small one before it has it."""
        small: list[TaskContext] = []
        if self.settings.worker.batch_max_tasks > 1 and len(msgs) > 1:
            rest: list[Msg] = []
            for msg in msgs:
                ctx = self._context(msg)
                if ctx is not None and ctx.state_bytes <= batching.SMALL_MESSAGE_BYTES:
                    small.append(ctx)
                else:
                    rest.append(msg)
            msgs = rest
        if len(small) > 1:
            self.slots.start(Batch(self, small).handle())
        elif small:
            msgs.insert(0, small[0].msg)
        self._held.extend(msgs)
        while self._held and self.slots.free:
            self.slots.start(self._handle(self._held.popleft()))

    def _context(self, msg: Msg) -> TaskContext | None:
        try:
            return TaskContext.parse(msg, self.worker_id, self.settings.worker.max_attempts)
        except ValueError:
            return None  # `_handle` drops it

    async def _fetch_unless_stopping(self, subs: Subscriptions) -> list[Msg]:
        """`Bus.fetch_next`, given up when a stop is asked for: an idle worker stops at
        once instead of after its fetch's wait. A task the server delivers after that
        stays in the subscription's queue and is released with the other undelivered
        ones (`_release_undelivered`)."""
        sent = time.monotonic()
        fetch = asyncio.ensure_future(self.bus.fetch_next(subs, FETCH_TIMEOUT_SECONDS))
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({fetch, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if fetch.done():
            return fetch.result()  # its pull request was answered or expired: closed
        # Its lingering pull request may still deliver a task (see `handback_delay`).
        self._pull_open_until = sent + FETCH_TIMEOUT_SECONDS
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
                    self.slots.wait_free(self._stopping), self.keep_alive_seconds
                )
            except TimeoutError:
                held = list(self._held)
                for sub in (subs or {}).values():
                    held += self.bus.undelivered(sub)
                for msg in held:
                    with contextlib.suppress(*_NATS_FAILURES):
                        await msg.in_progress()

    def cancel(self, task_id: str) -> None:
        """A user cancelled ``task_id``: stop it if it runs here (the process executor
        kills its simulation; a thread runs on and its result is discarded)."""
        if task_id in self.batched:
            # Stopping it would stop its neighbours' simulation: its result is refused
            # by Redis (`cancelled` already) and discarded.
            log.info("cancelled task runs on in its batch", extra={"task_id": task_id})
            return
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
        # This slot's asyncio task is this delivery's: every line it logs names the request
        # that submitted it, and its handling continues that request's trace.
        logs.REQUEST_ID.set(ctx.request_id)
        span = telemetry.start_span(
            "qmill.execute",
            telemetry.SpanKind.CONSUMER,
            {"qmill.task_id": task_id, "qmill.attempt": ctx.attempt},
            telemetry.context_of(msg.headers),
        )
        # Tell JetStream we hold it while we wait for memory and while it runs.
        progress = asyncio.create_task(self._keep_alive(msg))
        try:
            async with self.memory.reserve(ctx.state_bytes):
                outcome = await self.process(ctx)
            await self.settle(ctx, outcome)
        except asyncio.CancelledError:
            if task_id in self._cancelled:
                # Cancelled by its user: Redis already says `cancelled`; done with it.
                log.info("running task stopped: cancelled", extra=ctx.log_extra)
                await self.settle(ctx, Settled())
                return
            # Shutdown past the grace period: hand the task to another worker now,
            # unless its outcome was stored just before the cancel landed (then another
            # worker would only run it again to have its result discarded).
            if await self.outcome_stored(task_id):
                await self.settle(ctx, Settled())
                return
            await self.settle(ctx, HandedBack(self.handback_delay()))
            raise
        except Exception:
            log.exception(
                "unexpected error handling a task; it will be redelivered", extra=ctx.log_extra
            )
            await self.settle(ctx, Released(delay=1.0))
        finally:
            span.end()
            progress.cancel()
            self._by_task.pop(task_id, None)
            self._cancelled.discard(task_id)

    async def outcome_stored(self, task_id: str) -> bool:
        try:
            return (await self.stores.tasks.get(task_id)).status.terminal
        except (DependencyUnavailable, TaskNotFound):
            return False

    async def process(self, ctx: TaskContext) -> Outcome:
        """Start the task in Redis and run it, unless Redis says it is already final."""
        outcome = await self._start(ctx)
        if outcome is None:
            return HandedBack(self.handback_delay())
        if outcome.task is None:
            log.info("task already %s; acking", outcome.status, extra=ctx.log_extra)
            return Settled()
        ctx.owner = outcome.task.owner
        ctx.attempt = outcome.task.attempts
        if ctx.attempts_spent:
            return self.gave_up(ctx)
        return await self.execute(ctx, outcome.task)

    @staticmethod
    def gave_up(ctx: TaskContext) -> Failed:
        """The failure of a delivery that exists only to end the task (`attempts_spent`)."""
        reason = (
            f"gave up after {ctx.max_attempts} attempts: every worker that ran this task "
            "crashed or stalled before finishing it"
        )
        return Failed(FailureReason.GAVE_UP, reason)

    async def _start(self, ctx: TaskContext) -> StartOutcome | None:
        """Move the task to `processing`, holding the message while Redis is unreachable.

        Releasing it (nak) instead would make every queued task cycle through the
        workers during an outage, each pass a delivery for nothing. Held here (the
        in-progress heartbeat keeps it ours), it costs nothing and starts as soon as
        Redis is back. Returns None if the worker is stopping meanwhile: the message
        is then handed back (not started, so no attempt counted).
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

    async def execute(self, ctx: TaskContext, task: StartedTask) -> Outcome:
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
        timeout = self.settings.limits.max_execution_seconds
        try:
            result = await self.executor.run(SimJob.of(task), timeout)
        except SimulationError as exc:
            if exc.retryable and not ctx.last_attempt:
                log.warning(
                    "attempt failed; will retry", extra={**ctx.log_extra, "error": exc.message}
                )
                return Released(delay=1.0, retry=exc.reason)
            return Failed(exc.reason, exc.message, queue_seconds)
        return Completed(result, queue_seconds)

    async def execute_alone(self, ctx: TaskContext, task: StartedTask) -> Outcome:
        """`execute` for a task a `Batch` started but runs by itself (a sweep, observables):
        in a task of its own, so that its user's cancel stops its simulation as it
        stops a task in a slot of its own (`cancel`), instead of letting it run on."""
        self.batched.discard(ctx.task_id)
        run = asyncio.create_task(self.execute(ctx, task))
        self._by_task[ctx.task_id] = run
        try:
            return await run
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if ctx.task_id in self._cancelled and current is not None and not current.cancelling():
                log.info("running task stopped: cancelled", extra=ctx.log_extra)
                return Settled()
            raise  # the batch itself is cancelled (shutdown): `Batch.handle` hands it back
        finally:
            self._by_task.pop(ctx.task_id, None)
            self._cancelled.discard(ctx.task_id)

    async def _keep_alive(self, msg: Msg) -> None:
        """Tell JetStream the task is still being worked on (when the loop is free to)."""
        while True:
            await asyncio.sleep(self.keep_alive_seconds)
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
                self.redis_answered_at = time.monotonic()
            await asyncio.sleep(HEARTBEAT_SECONDS)
