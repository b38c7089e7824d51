"""Task records: one hash per task, changed only by atomic Lua transitions.

A terminal state (`completed`, `failed`, `cancelled`) is never overwritten: JetStream
delivers at least once, so two workers may finish the same task, and the first one
wins. Every terminal transition also PUBLISHes on the task's channel (what
`waiters` listens to) and takes the task out of its owner's in-flight set (what
`limits` admits against).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from qmill.server import constants
from qmill.server.errors import TaskNotFound
from qmill.server.models import TaskStatus, TaskView, utcnow
from qmill.server.store.client import RedisClient, guard
from qmill.server.store.new_tasks import CONFIRM, CREATE, Field, NewTask, Value
from qmill.server.workload import Plan

# The terminal states, as the Lua scripts test them (models.TERMINAL_STATUSES in Python).
_IS_TERMINAL = """
local function terminal(s)
  return s == 'completed' or s == 'failed' or s == 'cancelled'
end
"""

# Returns {status} for a missing or terminal task, else {'processing', circuit, shots,
# created_at, attempts, seed, memory, owner, plan} after moving it to processing.
_START = (
    _IS_TERMINAL
    + """
local s = redis.call('HGET', KEYS[1], 'status')
if not s then return {'missing'} end
if terminal(s) then return {s} end
redis.call('HSET', KEYS[1], 'status', 'processing', 'started_at', ARGV[1], 'worker_id', ARGV[2])
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
local f = redis.call('HMGET', KEYS[1], 'circuit', 'shots', 'created_at', 'seed', 'memory', 'owner',
  'plan')
return {'processing', f[1], f[2], f[3], attempts, f[4] or '', f[5] or '', f[6] or '', f[7] or ''}
"""
)

# KEYS: task, its done channel, its owner's in-flight set.
# ARGV: new status, ttl, field, value, ... Returns 'ok', 'missing' or the terminal status.
_FINISH = (
    _IS_TERMINAL
    + """
local s = redis.call('HGET', KEYS[1], 'status')
if not s then return 'missing' end
if terminal(s) then return s end
redis.call('HSET', KEYS[1], 'status', ARGV[1], unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('PUBLISH', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], redis.call('HGET', KEYS[1], 'id'))
return 'ok'
"""
)


class Outcome(StrEnum):
    """What a transition did: applied, or why not (no record, or the final state kept).

    The values are the transition scripts' answers; a kept final state is named after
    the `TaskStatus` it holds.
    """

    APPLIED = "ok"
    MISSING = "missing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class StartedTask:
    """What a worker needs to run a task it has just moved to `processing`."""

    task_id: str
    circuit: str
    shots: int
    created_at: datetime
    attempts: int
    seed: int | None = None
    memory: bool = False
    owner: str | None = None
    # The admitted options (`qmill.server.workload.Plan` as JSON); "" for a task
    # recorded before options existed, which runs as Aer's automatic method decides.
    plan: str = ""


@dataclass(frozen=True, slots=True)
class Answer:
    """What a completed task returns, in the stored (JSON) form of each field."""

    # Counts of one circuit (a task without a sweep or observables).
    counts: Mapping[str, int] | None = None
    memory: list[str] | None = None
    # A sampling sweep: nested lists (the sweep's shape) of {"counts", "memory"}.
    results: list[object] | None = None
    # Expectation values and their standard errors: a number or nested lists.
    evs: float | list[object] | None = None
    stds: float | list[object] | None = None
    evs_method: str | None = None


@dataclass(frozen=True, slots=True)
class StartOutcome:
    """Either the task to run (status `APPLIED`), or why not (`MISSING` or its final state)."""

    task: StartedTask | None
    status: Outcome


class TaskStore:
    """Create, read and move task records. One per process, over the shared client."""

    def __init__(self, client: RedisClient, *, result_ttl_seconds: int) -> None:
        self._redis = client.redis
        self._ttl = result_ttl_seconds
        self._create = client.script(CREATE)
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
        args: list[Value] = [provisional_ttl or self._ttl, len(records)]
        for record in records:
            pairs = _pairs(record.fields(created))
            args += [len(pairs), *pairs]
        if batch_id is not None:
            keys.append(constants.batch_key(batch_id))
            args += [r.task_id for r in records]
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
        async with guard():
            alive = await self._confirm(keys=keys, args=[self._ttl])
        return int(alive) == len(keys)

    async def delete(self, task_id: str) -> None:
        await self.delete_many([task_id])

    async def delete_many(self, task_ids: Sequence[str], batch_id: str | None = None) -> None:
        """Remove records of refused tasks (and their batch) in one round trip."""
        keys = [constants.task_key(t) for t in task_ids]
        if batch_id is not None:
            keys.append(constants.batch_key(batch_id))
        async with guard():
            await self._redis.delete(*keys)

    # --- read side ------------------------------------------------------------------------
    async def get(self, task_id: str) -> TaskView:
        async with guard():
            raw = await self._redis.hgetall(constants.task_key(task_id))
        if not raw:
            raise TaskNotFound()
        return _view({str(k): str(v) for k, v in raw.items()})

    async def get_many(self, task_ids: Sequence[str]) -> list[TaskView]:
        """The tasks that still exist, in the order asked, in one round trip."""
        pipe = self._redis.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.hgetall(constants.task_key(task_id))
        async with guard():
            raws = await pipe.execute()
        return [_view({str(k): str(v) for k, v in raw.items()}) for raw in raws if raw]

    # --- worker side ----------------------------------------------------------------------
    async def start(self, task_id: str, worker_id: str) -> StartOutcome:
        """Move a task to `processing` (again, on redelivery) unless it is terminal or gone."""
        async with guard():
            reply = await self._start(
                keys=[constants.task_key(task_id)], args=[utcnow().isoformat(), worker_id]
            )
        status = str(reply[0])
        if status != TaskStatus.PROCESSING.value:
            return StartOutcome(task=None, status=Outcome(status))
        task = StartedTask(
            task_id=task_id,
            circuit=str(reply[1]),
            shots=int(reply[2]),
            created_at=datetime.fromisoformat(str(reply[3])),
            attempts=int(reply[4]),
            seed=int(reply[5]) if reply[5] else None,
            memory=reply[6] == "1",
            owner=str(reply[7]) or None,
            plan=str(reply[8]),
        )
        return StartOutcome(task=task, status=Outcome.APPLIED)

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
        fields: dict[str, Field] = {
            "result": _json(dict(answer.counts) if answer.counts is not None else None),
            "shot_memory": _json(answer.memory),
            "results": _json(answer.results),
            "evs": _json(answer.evs),
            "stds": _json(answer.stds),
            "evs_method": answer.evs_method,
            "qubits": qubits,
            "depth": depth,
            "method": method,
            "execution_seconds": execution_seconds,
            "worker_id": worker_id,
            "queue_seconds": queue_seconds,
        }
        return await self._finish_task(task_id, TaskStatus.COMPLETED, owner, fields)

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
        return await self._finish_task(task_id, TaskStatus.FAILED, owner, fields)

    async def cancel(self, task_id: str, owner: str | None = None) -> Outcome:
        """Mark a task cancelled unless it is final or gone.

        A running task's eventual result is then discarded by the finish script.
        """
        fields: dict[str, Field] = {"error": "cancelled by request"}
        return await self._finish_task(task_id, TaskStatus.CANCELLED, owner, fields)

    async def _finish_task(
        self, task_id: str, status: TaskStatus, owner: str | None, fields: Mapping[str, Field]
    ) -> Outcome:
        args: list[Value] = [status.value, self._ttl, "completed_at", utcnow().isoformat()]
        args += _pairs(fields)
        keys = [
            constants.task_key(task_id),
            constants.task_done_channel(task_id),
            constants.inflight_key(owner or "-"),
        ]
        async with guard():
            return Outcome(str(await self._finish(keys=keys, args=args)))


def _json(value: object) -> str | None:
    return None if value is None else json.dumps(value)


def _pairs(fields: Mapping[str, Field]) -> list[Value]:
    """HSET arguments: field, value, ... for the fields that have a value."""
    pairs: list[Value] = []
    for key, value in fields.items():
        if value is not None:
            pairs += [key, value]
    return pairs


def _view(raw: Mapping[str, str]) -> TaskView:
    def opt(name: str) -> str | None:
        value = raw.get(name)
        return value if value not in (None, "") else None

    result = opt("result")
    return TaskView(
        id=raw["id"],
        task_id=raw["id"],
        status=TaskStatus(raw["status"]),
        shots=int(raw["shots"]),
        result=json.loads(result) if result else None,
        error=opt("error"),
        created_at=datetime.fromisoformat(raw["created_at"]),
        started_at=_dt(opt("started_at")),
        completed_at=_dt(opt("completed_at")),
        qubits=_int(opt("qubits")),
        depth=_int(opt("depth")),
        method=opt("method"),
        execution_seconds=_float(opt("execution_seconds")),
        queue_seconds=_float(opt("queue_seconds")),
        worker_id=opt("worker_id"),
        attempts=int(raw.get("attempts") or 0),
        seed=_int(opt("seed")),
        owner=opt("owner"),
        memory=json.loads(shot_memory) if (shot_memory := opt("shot_memory")) else None,
        quantum_circuit=opt("circuit"),
        results=_loads(opt("results")),
        evs=_loads(opt("evs")),
        stds=_loads(opt("stds")),
        evs_method=opt("evs_method"),
        **_plan_fields(opt("plan")),
    )


def _loads(value: str | None) -> Any:
    return json.loads(value) if value else None


def _plan_fields(raw: str | None) -> dict[str, Any]:
    """What a task view shows of its admitted options: the answer's shape and the
    options that change what it means (precision, noise), as submitted."""
    if not raw:
        return {}
    plan = Plan.model_validate_json(raw)
    precision = plan.target_precision if plan.target_precision is not None else plan.precision
    return {"shape": plan.shape, "precision": precision, "noise": plan.noise}


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _int(value: str | None) -> int | None:
    return int(value) if value else None


def _float(value: str | None) -> float | None:
    return float(value) if value else None
