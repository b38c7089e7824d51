"""The worker: pull task ids from JetStream, run them, store results, then ack.

Delivery is at least once, so handling is idempotent: the Redis transitions refuse to
overwrite a terminal state, and a redelivered task that is already terminal is just
acked. A task is acked (confirmed, ``ack_sync``) only after its outcome is in Redis;
if Redis cannot take the outcome, the message is left for redelivery instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from nats.aio.msg import Msg
from nats.errors import Error as NatsError

from qmill.server import metrics
from qmill.server.bus import Bus
from qmill.server.config import Settings
from qmill.server.errors import DependencyUnavailable, SimulationError, TaskNotFound
from qmill.server.models import TaskMessage, utcnow
from qmill.server.store import Outcome, StartedTask, StartOutcome, Stores
from qmill_worker.executors import Executor, SimulationTimeout
from qmill_worker.simulator import SimJob, SimResult

log = logging.getLogger(__name__)

FETCH_TIMEOUT_SECONDS = 1.0
HEARTBEAT_SECONDS = 5.0
# `qmill-worker --check` fails when the heartbeat is older than this.
HEARTBEAT_STALE_SECONDS = HEARTBEAT_SECONDS * 6
_NATS_FAILURES = (NatsError, TimeoutError, OSError, DependencyUnavailable)


class MemoryBudget:
    """Bounds the simulation state of the tasks running at once, not just their count.

    A task waits (still `pending`, its message kept alive) until its state fits. A task
    larger than the whole budget is refused at submit; one that still arrives (an older
    message, a changed limit) runs alone rather than never.
    """

    def __init__(self, total_bytes: int) -> None:
        self.total = total_bytes
        self.used = 0
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def reserve(self, nbytes: int) -> AsyncIterator[None]:
        nbytes = min(max(nbytes, 0), self.total)
        async with self._changed:
            await self._changed.wait_for(lambda: self.used + nbytes <= self.total)
            self.used += nbytes
        try:
            yield
        finally:
            async with self._changed:
                self.used -= nbytes
                self._changed.notify_all()


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Worker:
    def __init__(
        self, settings: Settings, stores: Stores, bus: Bus, executor: Executor, worker_id: str
    ) -> None:
        self.settings = settings
        self.stores = stores
        self.bus = bus
        self.executor = executor
        self.worker_id = worker_id
        self.slots = asyncio.Semaphore(settings.worker.concurrency)
        self.memory = MemoryBudget(settings.memory_budget_bytes)
        self._running: set[asyncio.Task[None]] = set()
        self._by_task: dict[str, asyncio.Task[Any]] = {}
        self._cancelled: set[str] = set()
        self._stopping = asyncio.Event()

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
        sub = None
        subscribed_cancels = False
        while not self._stopping.is_set():
            free = await self._claim_free_slots()
            if self._stopping.is_set():
                for _ in range(free):
                    self.slots.release()
                break
            msgs: list[Msg] = []
            try:
                if sub is None:
                    sub = await self.bus.pull_subscription()
                    if not subscribed_cancels:
                        await self.bus.subscribe_cancels(self.cancel)
                        subscribed_cancels = True
                    log.info(
                        "pulling tasks",
                        extra={"worker_id": self.worker_id, "executor": self.executor.name},
                    )
                msgs = await sub.fetch(batch=free, timeout=FETCH_TIMEOUT_SECONDS)
            except TimeoutError:
                pass  # nothing queued right now
            except _NATS_FAILURES as exc:
                log.warning("cannot pull tasks; retrying", extra={"error": str(exc)})
                sub = None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), 1.0)
            finally:
                for _ in range(free - len(msgs)):
                    self.slots.release()
            for msg in msgs:
                task = asyncio.create_task(self._handle(msg))
                self._running.add(task)
                task.add_done_callback(self._running.discard)

    async def _claim_free_slots(self) -> int:
        """Wait for at least one free slot (or stop), then claim every free one.

        Returns 0 when stopping; the caller then fetches nothing.
        """
        acquire = asyncio.ensure_future(self.slots.acquire())
        stop = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({acquire, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not acquire.done():
            acquire.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await acquire
            if not acquire.cancelled():  # acquired just as it was cancelled
                self.slots.release()
            return 0
        free = 1
        while not self.slots.locked():
            await self.slots.acquire()
            free += 1
        return free

    async def _drain(self) -> None:
        """Give running tasks the grace period, then release the rest for redelivery."""
        if not self._running:
            return
        grace = self.settings.worker.grace_period_seconds
        log.info(
            "stopping: waiting for running tasks",
            extra={"worker_id": self.worker_id, "running": len(self._running)},
        )
        _, pending = await asyncio.wait(set(self._running), timeout=grace)
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
        try:
            message = TaskMessage.model_validate_json(msg.data)
        except ValueError:
            log.error(
                "malformed task message dropped",
                extra={"data": msg.data[:200].decode(errors="replace")},
            )
            with contextlib.suppress(*_NATS_FAILURES):
                await msg.term()
            self.slots.release()
            return
        task_id = message.task_id
        current = asyncio.current_task()
        assert current is not None
        self._by_task[task_id] = current
        # Tell JetStream we hold it while we wait for memory and while it runs.
        progress = asyncio.create_task(self._keep_alive(msg))
        try:
            async with self.memory.reserve(message.state_bytes):
                await self._process(msg, task_id)
        except asyncio.CancelledError:
            if task_id in self._cancelled:
                # Cancelled by its user: Redis already says `cancelled`; done with it.
                log.info("running task stopped: cancelled", extra={"task_id": task_id})
                await self._ack(msg, {"task_id": task_id, "worker_id": self.worker_id})
                return
            # Shutdown past the grace period: hand the task to another worker now,
            # unless its outcome was stored just before the cancel landed (then another
            # worker would only run it again to have its result discarded).
            if await self._outcome_stored(task_id):
                await self._ack(msg, {"task_id": task_id, "worker_id": self.worker_id})
                return
            with contextlib.suppress(*_NATS_FAILURES):
                await msg.nak()
            raise
        except Exception:
            log.exception(
                "unexpected error handling a task; it will be redelivered",
                extra={"worker_id": self.worker_id, "task_id": task_id},
            )
            with contextlib.suppress(*_NATS_FAILURES):
                await msg.nak(delay=1.0)
        finally:
            progress.cancel()
            self._by_task.pop(task_id, None)
            self._cancelled.discard(task_id)
            self.slots.release()

    async def _outcome_stored(self, task_id: str) -> bool:
        try:
            return (await self.stores.tasks.get(task_id)).status.terminal
        except (DependencyUnavailable, TaskNotFound):
            return False

    async def _process(self, msg: Msg, task_id: str) -> None:
        ctx: dict[str, Any] = {"task_id": task_id, "worker_id": self.worker_id}
        delivered = msg.metadata.num_delivered
        max_attempts = self.settings.worker.max_attempts
        outcome = await self._start(msg, task_id, ctx)
        if outcome is None:
            return
        if outcome.task is None:
            log.info("task already %s; acking", outcome.status, extra=ctx)
            await self._ack(msg, ctx)
            return
        ctx["owner"] = outcome.task.owner
        if delivered > max_attempts:
            reason = (
                f"gave up after {max_attempts} attempts: every worker that ran this task "
                "crashed or stalled before finishing it"
            )
            await self._finish(msg, ctx, error=reason)
            return
        await self._execute(msg, outcome.task, ctx, last_attempt=delivered >= max_attempts)

    async def _start(self, msg: Msg, task_id: str, ctx: dict[str, Any]) -> StartOutcome | None:
        """Move the task to `processing`, holding the message while Redis is unreachable.

        Releasing it (nak) instead would make every queued task cycle through the
        workers during an outage, each pass costing one of the consumer's
        ``max_deliver`` deliveries; once they are spent JetStream never delivers the
        task again and it stays `pending` forever. Held here (the in-progress
        heartbeat keeps it ours), it costs nothing and starts as soon as Redis is back.
        Returns None if the worker is stopping meanwhile: the message is then released.
        """
        delay = 0.25
        warned = False
        while True:
            try:
                return await self.stores.tasks.start(task_id, self.worker_id)
            except DependencyUnavailable as exc:
                if self._stopping.is_set():
                    log.warning(
                        "redis unavailable at start; task released",
                        extra={**ctx, "error": str(exc)},
                    )
                    with contextlib.suppress(*_NATS_FAILURES):
                        await msg.nak()
                    return None
                if not warned:
                    log.warning(
                        "redis unavailable at start; holding the task until it is back",
                        extra={**ctx, "error": str(exc)},
                    )
                    warned = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            delay = min(delay * 2, 2.0)

    async def _execute(
        self, msg: Msg, task: StartedTask, ctx: dict[str, Any], last_attempt: bool
    ) -> None:
        queue_seconds = (utcnow() - task.created_at).total_seconds()
        log.info(
            "task started",
            extra={**ctx, "attempt": task.attempts, "queue_seconds": round(queue_seconds, 6)},
        )
        try:
            job = SimJob(
                task_id=task.task_id,
                circuit=task.circuit,
                shots=task.shots,
                seed=task.seed,
                memory=task.memory,
            )
            result = await self.executor.run(job, self.settings.limits.max_execution_seconds)
        except SimulationTimeout as exc:
            await self._finish(msg, ctx, error=exc.message, queue_seconds=queue_seconds)
            return
        except SimulationError as exc:
            if exc.retryable and not last_attempt:
                log.warning("attempt failed; will retry", extra={**ctx, "error": exc.message})
                metrics.TASKS_RETRIED.labels(self.worker_id, "crashed").inc()
                await msg.nak(delay=1.0)
                return
            await self._finish(msg, ctx, error=exc.message, queue_seconds=queue_seconds)
            return
        await self._finish(msg, ctx, result=result, queue_seconds=queue_seconds)

    async def _finish(
        self,
        msg: Msg,
        ctx: dict[str, Any],
        *,
        result: SimResult | None = None,
        error: str | None = None,
        queue_seconds: float | None = None,
    ) -> None:
        try:
            if result is not None:
                status = await self.stores.tasks.complete(
                    ctx["task_id"],
                    result.counts,
                    memory=result.memory,
                    qubits=result.qubits,
                    depth=result.depth,
                    method=result.method,
                    execution_seconds=result.execution_seconds,
                    worker_id=self.worker_id,
                    queue_seconds=queue_seconds,
                    owner=ctx.get("owner"),
                )
            else:
                status = await self.stores.tasks.fail(
                    ctx["task_id"],
                    error or "failed",
                    worker_id=self.worker_id,
                    queue_seconds=queue_seconds,
                    owner=ctx.get("owner"),
                )
        except DependencyUnavailable as exc:
            # Not acked: JetStream redelivers it and the result is written then.
            log.warning("could not store outcome; task released", extra={**ctx, "error": str(exc)})
            with contextlib.suppress(*_NATS_FAILURES):
                await msg.nak(delay=2.0)
            return
        self._count(result, error, queue_seconds, status)
        if status is Outcome.APPLIED:
            log.info(
                "task %s",
                "completed" if result is not None else "failed",
                extra={**ctx, "error": error},
            )
        else:
            log.info("task was already %s; outcome discarded", status, extra=ctx)
        await self._ack(msg, ctx)

    def _count(
        self, result: SimResult | None, error: str | None, queue_seconds: float | None, status: str
    ) -> None:
        if status is not Outcome.APPLIED:
            return
        wid = self.worker_id
        if queue_seconds is not None:
            metrics.QUEUE_SECONDS.labels(wid).observe(queue_seconds)
        if result is not None:
            metrics.TASKS_COMPLETED.labels(wid).inc()
            metrics.EXECUTION_SECONDS.labels(wid).observe(result.execution_seconds)
        else:
            metrics.TASKS_FAILED.labels(wid, metrics.failure_reason(error or "")).inc()

    async def _ack(self, msg: Msg, ctx: dict[str, Any]) -> None:
        try:
            await msg.ack_sync(timeout=self.settings.nats.publish_timeout_seconds)
        except _NATS_FAILURES as exc:
            # The outcome is stored; a redelivery finds it terminal and acks it then.
            log.warning("ack not confirmed", extra={**ctx, "error": str(exc)})

    async def _keep_alive(self, msg: Msg) -> None:
        """Tell JetStream the task is still being worked on (when the loop is free to)."""
        interval = max(1.0, self.settings.ack_wait_seconds / 3)
        while True:
            await asyncio.sleep(interval)
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
            metrics.TASKS_IN_FLIGHT.labels(self.worker_id).set(len(self._running))
            with contextlib.suppress(DependencyUnavailable, *_NATS_FAILURES):
                metrics.QUEUE_DEPTH.labels(self.worker_id).set(await self.bus.pending())
            info = json.dumps(
                {
                    "running": len(self._running),
                    "executor": self.executor.name,
                    "at": utcnow().isoformat(),
                }
            )
            with contextlib.suppress(DependencyUnavailable):
                await self.stores.heartbeats.beat(self.worker_id, ttl, info)
            await asyncio.sleep(HEARTBEAT_SECONDS)
