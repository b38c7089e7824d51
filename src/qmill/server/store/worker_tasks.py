"""The worker's transitions for many tasks at once: one pipelined round trip each way.

A worker that runs small tasks together (``qmill_worker.grouped``) starts them all with
one pipeline of the start script, and records all their outcomes with one pipeline of
the finish script, instead of two round trips per task. The scripts are the ones
`TaskStore` runs for a single task (each is still atomic on its own task, which is
all a transition needs: tasks do not depend on each other), so every guarantee of
`qmill.server.store.tasks` holds: a terminal state is never overwritten, every
transition is announced, a finished task leaves its owner's in-flight set.

`WorkerTasks.release` records a hand-back (a worker stopping: scale-in, a platform's
termination deadline), which is not an attempt: see `_RELEASE`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from redis.exceptions import OutOfMemoryError, ResponseError

from qmill.server import constants
from qmill.server.errors import DependencyUnavailable, StoreFull
from qmill.server.models import TaskStatus, utcnow
from qmill.server.store.client import guard
from qmill.server.store.records import Answer, Outcome, StartOutcome, completion, started
from qmill.server.store.tasks import _EVENT_PREFIXES, TaskStore

log = logging.getLogger(__name__)

_OOM = "OOM command not allowed"

# KEYS: task. ARGV: the releasing worker's id. A task this worker started (still
# `processing` under its id) is handed back: the start transition's attempt is taken
# back (``attempts`` counts only attempts that crashed, stalled, failed or finished:
# what ``[worker] max_attempts`` bounds) and ``releases`` counts the hand-back. The
# status stays `processing` until the redelivery starts it again (no change event).
# Returns the task's releases so far, or 0 when nothing was changed (the task is final,
# gone, or another worker holds it now).
_RELEASE = """
local f = redis.call('HMGET', KEYS[1], 'status', 'worker_id', 'attempts')
if f[1] ~= 'processing' or f[2] ~= ARGV[1] or tonumber(f[3] or '0') < 1 then return 0 end
redis.call('HINCRBY', KEYS[1], 'attempts', -1)
return redis.call('HINCRBY', KEYS[1], 'releases', 1)
"""


@dataclass(frozen=True, slots=True)
class Finish:
    """One task's outcome to record: a result (``answer``) or a failure (``error``)."""

    task_id: str
    owner: str | None
    worker_id: str
    queue_seconds: float | None
    answer: Answer | None = None
    error: str | None = None
    qubits: int | None = None
    depth: int | None = None
    method: str | None = None
    execution_seconds: float | None = None


class WorkerTasks:
    """`TaskStore.start`, `complete` and `fail` for several tasks, pipelined."""

    def __init__(self, tasks: TaskStore) -> None:
        self._tasks = tasks
        self._redis = tasks._redis
        self._release = self._redis.register_script(_RELEASE)

    async def start_many(self, task_ids: Sequence[str], worker_id: str) -> list[StartOutcome]:
        """Each task moved to `processing` unless final or gone, as `TaskStore.start`;
        DependencyUnavailable if Redis cannot be reached (then none may have started,
        or some: a redelivery starts them again, which a start allows)."""
        pipe = self._redis.pipeline(transaction=False)
        at = utcnow().isoformat()
        for task_id in task_ids:
            await self._tasks._start(
                keys=[constants.task_key(task_id), constants.EVENTS_SEQ_KEY],
                args=[at, worker_id, *_EVENT_PREFIXES],
                client=pipe,
            )
        async with guard():
            replies = await pipe.execute()
        return [started(task_id, reply) for task_id, reply in zip(task_ids, replies, strict=True)]

    async def release(self, task_id: str, worker_id: str) -> int:
        """Record that ``worker_id`` hands back the task it started, unfinished, because
        it is stopping: its attempt does not count (see `_RELEASE`). Returns the task's
        releases so far, 0 if nothing was recorded; DependencyUnavailable if Redis
        cannot be reached (the attempt then counts, as a crash's would)."""
        async with guard():
            return int(await self._release(keys=[constants.task_key(task_id)], args=[worker_id]))

    async def finish_many(self, finishes: Sequence[Finish]) -> list[Outcome | StoreFull]:
        """Record each outcome, as `TaskStore.complete` or `fail` would, in one round
        trip; a result a full Redis refuses is that task's `StoreFull` (the others are
        recorded). DependencyUnavailable if Redis cannot be reached: then some may be
        recorded and others not, which recording them again (a redelivery) settles."""
        pipe = self._redis.pipeline(transaction=False)
        sizes: list[int] = []
        for finish in finishes:
            if finish.answer is not None:
                encoded, fields = completion(
                    finish.answer,
                    finish.qubits,
                    finish.depth,
                    finish.method,
                    finish.execution_seconds,
                    finish.worker_id,
                    finish.queue_seconds,
                )
                status, deflated, full_ok = TaskStatus.COMPLETED, encoded.deflated, False
                sizes.append(encoded.size)
            else:
                fields = {
                    "error": finish.error,
                    "worker_id": finish.worker_id,
                    "queue_seconds": finish.queue_seconds,
                }
                status, deflated, full_ok = TaskStatus.FAILED, None, True
                sizes.append(0)
            keys, args = self._tasks._finish_call(
                finish.task_id, status, finish.owner, fields, deflated, full_ok
            )
            await self._tasks._finish(keys=keys, args=args, client=pipe)
        client = self._tasks._client
        client.wait_replicas(pipe)  # the worker acks these tasks' messages next
        async with guard():
            replies = await pipe.execute(raise_on_error=False)
        if client.replicas_to_ack:
            client.check_replicas(replies.pop())
        outcomes: list[Outcome | StoreFull] = []
        for reply in replies:
            if isinstance(reply, OutOfMemoryError) or (
                isinstance(reply, ResponseError) and _OOM in str(reply)
            ):
                outcomes.append(StoreFull())
            elif isinstance(reply, Exception):
                raise DependencyUnavailable("redis", str(reply) or type(reply).__name__)
            else:
                outcomes.append(Outcome(str(reply)))
        await self._settle(finishes, outcomes, sizes)
        return outcomes

    async def _settle(
        self, finishes: Sequence[Finish], outcomes: Sequence[Outcome | StoreFull], sizes: list[int]
    ) -> None:
        """Charge the owners' quotas what the answers take; best effort, as `TaskStore`."""
        quotas = self._tasks._quotas
        if quotas is None:
            return
        settled = [
            (f.owner, f.task_id, size)
            for f, outcome, size in zip(finishes, outcomes, sizes, strict=True)
            if f.owner is not None and outcome is Outcome.APPLIED
        ]
        if not settled:
            return
        try:
            await quotas.settle_each(settled)
        except DependencyUnavailable as exc:
            log.warning("quotas not settled", extra={"tasks": len(settled), "error": str(exc)})
