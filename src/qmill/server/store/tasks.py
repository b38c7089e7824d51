"""Task records: one hash per task, changed only by atomic Lua transitions.

A terminal state (`completed`, `failed`, `cancelled`) is never overwritten: JetStream
delivers at least once, so two workers may finish the same task, and the first one
wins. Every transition gets a version (``seq``) and is PUBLISHed as a change event
(what `events` streams); a terminal one also PUBLISHes on the task's done channel
(what `waiters` listens to) and takes the task out of its owner's in-flight set (what
`limits` admits against).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from redis.client import NEVER_DECODE

from qmill.server import constants
from qmill.server.errors import DependencyUnavailable, TaskNotFound
from qmill.server.models import TaskStatus, TaskView, utcnow
from qmill.server.store import answers, listing
from qmill.server.store.client import RedisClient, guard
from qmill.server.store.new_tasks import CONFIRM, CREATE, DELETE, Field, NewTask, Value
from qmill.server.store.quotas import Quotas
from qmill.server.store.records import (
    Answer,
    Outcome,
    StartOutcome,
    completion,
    hset_pairs,
    record_view,
    started,
    unpacked,
)

log = logging.getLogger(__name__)

# Compressed answers (up to a few MB each) read from Redis at once by one process. Every
# reply must arrive within the client's socket timeout (1 s for the functions), and 20
# concurrent reads of one 26 MB answer shared the event loop so thinly that 19 of them
# ran out of it (503); in turns of four, each read takes milliseconds.
ANSWER_READS_AT_ONCE = 4

# The terminal states, as the Lua scripts test them (models.TERMINAL_STATUSES in Python).
_IS_TERMINAL = """
local function terminal(s)
  return s == 'completed' or s == 'failed' or s == 'cancelled'
end
"""

# Every transition's change event (`qmill.server.store.events`): ``seq`` is its version,
# from the one counter (INCR'd by the caller, and written into the record with the new
# status); the message "seq status task_id batch_id" goes to the task's channel and,
# for a task of a batch, to the batch's. ARGV names the two channel prefixes.
_ANNOUNCE = """
local function announce(seq, status, id, batch, task_prefix, batch_prefix)
  local message = seq .. ' ' .. status .. ' ' .. id .. ' ' .. (batch or '')
  redis.call('PUBLISH', task_prefix .. id, message)
  if batch then redis.call('PUBLISH', batch_prefix .. batch, message) end
end
"""

# KEYS: task, the event counter. ARGV: started_at, worker id, the task and batch event
# channel prefixes. Returns {status} for a missing or terminal task, else {'processing',
# circuit, shots, created_at, attempts, seed, memory, owner, plan} after moving it to
# processing.
_START = (
    _IS_TERMINAL
    + _ANNOUNCE
    + """
local s = redis.call('HGET', KEYS[1], 'status')
if not s then return {'missing'} end
if terminal(s) then return {s} end
local seq = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'status', 'processing', 'started_at', ARGV[1], 'worker_id', ARGV[2],
  'seq', seq)
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
local f = redis.call('HMGET', KEYS[1], 'circuit', 'shots', 'created_at', 'seed', 'memory', 'owner',
  'plan', 'id', 'batch_id')
announce(seq, 'processing', f[8], f[9], ARGV[3], ARGV[4])
return {'processing', f[1], f[2], f[3], attempts, f[4] or '', f[5] or '', f[6] or '', f[7] or ''}
"""
)

# KEYS: task, its done channel, its owner's in-flight set, its compressed answer's key,
# the event counter. ARGV: new status, ttl, compressed answer ('' for none), '1' to
# write even when Redis is full, the task and batch event channel prefixes, field,
# value, ... Returns 'ok', 'missing' or the terminal status.
#
# Redis at maxmemory (noeviction) refuses a script's first write if it may grow memory:
# a result is refused before anything is written (SET, INCR or HSET first). A failure
# or a cancel is a few bytes and must be recorded even then, or the task would never
# end: its first write is an EXPIRE, which Redis always allows, and a script that has
# written is then let finish (Redis' rule for scripts without flags, 6.2 and 7.x).
# The change event goes out before the done channel's message, so a process that
# listens to both hears the event first.
_FINISH = (
    _IS_TERMINAL
    + _ANNOUNCE
    + """
local s = redis.call('HGET', KEYS[1], 'status')
if not s then return 'missing' end
if terminal(s) then return s end
if ARGV[4] == '1' then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
if ARGV[3] ~= '' then redis.call('SET', KEYS[4], ARGV[3], 'EX', ARGV[2]) end
local seq = redis.call('INCR', KEYS[5])
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'seq', seq, unpack(ARGV, 7))
redis.call('EXPIRE', KEYS[1], ARGV[2])
local f = redis.call('HMGET', KEYS[1], 'id', 'batch_id')
announce(seq, ARGV[1], f[1], f[2], ARGV[5], ARGV[6])
redis.call('PUBLISH', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], f[1])
return 'ok'
"""
)

# The channel prefixes the transition scripts publish change events under.
_EVENT_PREFIXES = (constants.TASK_EVENTS_CHANNEL_PREFIX, constants.BATCH_EVENTS_CHANNEL_PREFIX)


class TaskStore:
    """Create, read and move task records. One per process, over the shared client."""

    def __init__(
        self, client: RedisClient, *, result_ttl_seconds: int, quotas: Quotas | None = None
    ) -> None:
        self._client = client
        self._redis = client.redis
        self._ttl = result_ttl_seconds
        self._quotas = quotas
        self._reads: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None
        self._create = client.script(CREATE)
        self._delete = client.script(DELETE)
        self._confirm = client.script(CONFIRM)
        self._start = client.script(_START)
        self._finish = client.script(_FINISH)

    # --- submit side ----------------------------------------------------------------------
    async def create(
        self,
        task_id: str,
        circuit: str,
        shots: int,
        *,
        qubits: int | None = None,
        depth: int | None = None,
        seed: int | None = None,
        memory: bool = False,
        owner: str | None = None,
        plan: str | None = None,
    ) -> datetime:
        """Write a new `pending` task; returns its creation time."""
        record = NewTask(task_id, circuit, shots, qubits, depth, seed, memory, owner, plan)
        return await self.create_many([record])

    async def create_many(
        self,
        records: Sequence[NewTask],
        batch_id: str | None = None,
        provisional_ttl: int | None = None,
    ) -> datetime:
        """Write new `pending` tasks (and the batch that lists them) in one atomic script:
        one round trip and one fsync for a 1000-task batch, and never some of them.

        With ``provisional_ttl`` they live only that long unless `confirm`ed: a submit
        that dies, or cannot undo them, before its tasks are queued leaves nothing for
        longer. Returns their creation time. On an error nothing may have been
        written, or all of it (a reply lost after the script ran): `delete_many`
        undoes either.
        """
        created = utcnow()
        keys = [constants.task_key(r.task_id) for r in records]
        heads = [listing.prefix(created, position) for position in range(len(records))]
        owner = records[0].owner if records else None
        index = listing.entries(
            owner,
            [(r.task_id, head, r.tags) for r, head in zip(records, heads, strict=True)],
            created,
            self._ttl,
        )
        args: list[Value] = [provisional_ttl or self._ttl, len(records)]
        args += ["1" if batch_id is not None else "0", listing.horizon(self._ttl), index.cutoff]
        for record, head in zip(records, heads, strict=True):
            if batch_id is not None and record.batch_id is None:
                record = dataclasses.replace(record, batch_id=batch_id)
            pairs = hset_pairs({**record.fields(created), "listed": head})
            args += [len(pairs), *pairs]
        if batch_id is not None:
            keys.append(constants.batch_key(batch_id))
            args += [r.task_id for r in records]
        for key, members in index.members.items():
            keys.append(key)
            args += [len(members), *members]
        keys.append(constants.EVENTS_SEQ_KEY)
        async with guard():
            created_ok = await self._create(keys=keys, args=args)
        if not created_ok:
            raise RuntimeError("a task id already exists")  # uuid4 collision: a bug
        return created

    async def confirm(self, task_ids: Sequence[str], batch_id: str | None = None) -> bool:
        """Give provisional records (and their batch) the full result TTL, in one step;
        False if any had already expired (its submit must then be refused)."""
        keys = [constants.task_key(t) for t in task_ids]
        if batch_id is not None:
            keys.append(constants.batch_key(batch_id))
        async with guard():  # the last write before a 201: replicated first (`acked`)
            alive = await self._client.acked(self._confirm, keys, [self._ttl])
        return int(alive) == len(keys)

    async def delete(self, task_id: str) -> None:
        await self.delete_many([task_id])

    async def delete_many(
        self,
        task_ids: Sequence[str],
        batch_id: str | None = None,
        owner: str | None = None,
        task_tags: Sequence[Mapping[str, str] | None] = (),
    ) -> None:
        """Remove records of refused tasks (their answers, their batch, and their
        entries in the ``owner``'s indexes: ``task_tags`` are the tasks' tags) in one
        round trip."""
        keys = [constants.task_key(t) for t in task_ids]
        others = [constants.answer_key(t) for t in task_ids]
        if batch_id is not None:
            others.append(constants.batch_key(batch_id))
        keys += others
        args: list[Value] = [len(task_ids), len(others)]
        tagged = list(task_tags) or [None] * len(task_ids)
        for key, found in listing.positions(owner, tagged).items():
            keys.append(key)
            args += [len(found), *(i + 1 for i in found)]
        async with guard():
            await self._delete(keys=keys, args=args)

    # --- read side ------------------------------------------------------------------------
    async def get(self, task_id: str, *, packed: bool = False) -> TaskView:
        """The task as stored. A compressed answer is decompressed into the view's fields,
        unless ``packed``: then they are None and ``view.packed`` holds it as stored
        (what the result function sends as is)."""
        async with guard():
            raw = await self._redis.hgetall(constants.task_key(task_id))
        return await self.view_of(raw, packed=packed)

    async def view_of(self, raw: Mapping[Any, Any], *, packed: bool = False) -> TaskView:
        """A record read by HGETALL (here or in a caller's pipeline) as `get` returns it;
        TaskNotFound if it was empty."""
        if not raw:
            raise TaskNotFound()
        task_id = str(raw["id"])
        fields = {str(k): str(v) for k, v in raw.items()}
        view = record_view(fields)
        check = answers.check_of(fields)
        if check is not None:
            stored = await self._answer(task_id, check)
            if packed:
                view.packed = stored
            else:
                view = unpacked(view, stored)
        return view

    async def _answer(self, task_id: str, check: str) -> answers.Packed | None:
        """A compressed answer's bytes (never decoded as text); None if it expired
        between the two reads."""
        async with self._answer_reads(), guard():
            # Raw bytes: the client decodes replies as UTF-8, which compressed data is not.
            deflated = await self._redis.execute_command(  # type: ignore[no-untyped-call]
                "GET", constants.answer_key(task_id), **{NEVER_DECODE: True}
            )
        return answers.packed(check, bytes(deflated)) if deflated else None

    def _answer_reads(self) -> asyncio.Semaphore:
        """At most `ANSWER_READS_AT_ONCE` compressed answers in transfer from Redis in
        this process (one semaphore per event loop)."""
        loop = asyncio.get_running_loop()
        if self._reads is None or self._reads[0] is not loop:
            self._reads = (loop, asyncio.Semaphore(ANSWER_READS_AT_ONCE))
        return self._reads[1]

    async def get_many(self, task_ids: Sequence[str], *, packed: bool = False) -> list[TaskView]:
        """The tasks that still exist, in the order asked, in one round trip (and one
        more for each compressed answer among them); ``packed`` as `get`."""
        pipe = self._redis.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.hgetall(constants.task_key(task_id))
        async with guard():
            raws = await pipe.execute()
        views = []
        for raw in raws:
            if not raw:
                continue
            fields = {str(k): str(v) for k, v in raw.items()}
            view = record_view(fields)
            check = answers.check_of(fields)
            if check is not None:
                stored = await self._answer(view.task_id, check)
                if packed:
                    view.packed = stored
                else:
                    view = unpacked(view, stored)
            views.append(view)
        return views

    # --- worker side ----------------------------------------------------------------------
    async def start(self, task_id: str, worker_id: str) -> StartOutcome:
        """Move a task to `processing` (again, on redelivery) unless it is terminal or gone."""
        async with guard():
            reply = await self._start(
                keys=[constants.task_key(task_id), constants.EVENTS_SEQ_KEY],
                args=[utcnow().isoformat(), worker_id, *_EVENT_PREFIXES],
            )
        return started(task_id, reply)

    async def complete(
        self,
        task_id: str,
        answer: Answer,
        *,
        qubits: int | None = None,
        depth: int | None = None,
        method: str | None = None,
        execution_seconds: float | None = None,
        worker_id: str | None = None,
        queue_seconds: float | None = None,
        owner: str | None = None,
    ) -> Outcome:
        """Record a result, unless the task is already final or gone.

        ``owner`` names the in-flight set the task leaves; it is not written.
        """
        encoded, fields = completion(
            answer, qubits, depth, method, execution_seconds, worker_id, queue_seconds
        )
        outcome = await self._finish_task(
            task_id, TaskStatus.COMPLETED, owner, fields, answer=encoded.deflated
        )
        if outcome is Outcome.APPLIED:
            await self._settle(owner, task_id, encoded.size)
        return outcome

    async def _settle(self, owner: str | None, task_id: str, stored: int) -> None:
        """Charge the owner's quota what the answer takes (see `quotas`); best effort:
        if it fails the charge stays at the estimate, which is larger, until it lapses."""
        if owner is None or self._quotas is None:
            return
        try:
            await self._quotas.settle(owner, task_id, stored)
        except DependencyUnavailable as exc:
            log.warning("quota not settled", extra={"task_id": task_id, "error": str(exc)})

    async def fail(
        self,
        task_id: str,
        reason: str,
        *,
        worker_id: str | None = None,
        queue_seconds: float | None = None,
        owner: str | None = None,
    ) -> Outcome:
        """Record a failure with its reason, unless the task is already final or gone."""
        fields: dict[str, Field] = {
            "error": reason,
            "worker_id": worker_id,
            "queue_seconds": queue_seconds,
        }
        outcome = await self._finish_task(task_id, TaskStatus.FAILED, owner, fields, full_ok=True)
        if outcome is Outcome.APPLIED:
            await self._settle(owner, task_id, 0)
        return outcome

    async def cancel(self, task_id: str, owner: str | None = None) -> Outcome:
        """Mark a task cancelled unless it is final or gone.

        A running task's eventual result is then discarded by the finish script.
        """
        fields: dict[str, Field] = {"error": "cancelled by request"}
        outcome = await self._finish_task(
            task_id, TaskStatus.CANCELLED, owner, fields, full_ok=True
        )
        if outcome is Outcome.APPLIED:
            await self._settle(owner, task_id, 0)
        return outcome

    async def cancel_many(self, task_ids: Sequence[str], owner: str | None) -> list[Outcome]:
        """`cancel` each task, in one round trip (a pipeline of the finish script): a
        1000-task batch is cancelled in one call, not a thousand."""
        pipe = self._redis.pipeline(transaction=False)
        fields: dict[str, Field] = {"error": "cancelled by request"}
        for task_id in task_ids:
            keys, args = self._finish_call(task_id, TaskStatus.CANCELLED, owner, fields, None, True)
            await self._finish(keys=keys, args=args, client=pipe)
        async with guard():
            outcomes = [Outcome(str(reply)) for reply in await pipe.execute()]
        if owner is not None and self._quotas is not None:
            applied = [t for t, o in zip(task_ids, outcomes, strict=True) if o is Outcome.APPLIED]
            try:
                await self._quotas.settle_many(owner, applied, 0)
            except DependencyUnavailable as exc:  # as `_settle`: the estimate stays, and lapses
                log.warning("quotas not settled", extra={"tasks": len(applied), "error": str(exc)})
        return outcomes

    async def _finish_task(
        self,
        task_id: str,
        status: TaskStatus,
        owner: str | None,
        fields: Mapping[str, Field],
        *,
        answer: bytes | None = None,
        full_ok: bool = False,
    ) -> Outcome:
        """The terminal transition; ``full_ok`` for the few bytes of a failure or a
        cancel, which are written even into a full Redis (see `_FINISH`)."""
        keys, args = self._finish_call(task_id, status, owner, fields, answer, full_ok)
        async with guard():  # acknowledged to the worker, which then acks its message
            return Outcome(str(await self._client.acked(self._finish, keys, args)))

    def _finish_call(
        self,
        task_id: str,
        status: TaskStatus,
        owner: str | None,
        fields: Mapping[str, Field],
        answer: bytes | None,
        full_ok: bool,
    ) -> tuple[list[str], list[Value]]:
        """The finish script's keys and arguments."""
        args: list[Value] = [status.value, self._ttl, answer or "", "1" if full_ok else "0"]
        args += [*_EVENT_PREFIXES, "completed_at", utcnow().isoformat(), *hset_pairs(fields)]
        keys = [
            constants.task_key(task_id),
            constants.task_done_channel(task_id),
            constants.inflight_key(owner or "-"),
            constants.answer_key(task_id),
            constants.EVENTS_SEQ_KEY,
        ]
        return keys, args
