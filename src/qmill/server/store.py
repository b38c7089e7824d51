"""Task state in Redis: one hash per task, changed only by atomic Lua transitions.

A terminal state (`completed`, `failed`) is never overwritten: JetStream delivers at
least once, so two workers may finish the same task, and the first one wins. Every
terminal transition also PUBLISHes on the task's channel, which is what long-polling
``GET /tasks/{id}?wait=`` listens to.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from qmill.server import constants
from qmill.server.errors import DependencyUnavailable, RateLimited, TaskNotFound
from qmill.server.models import TaskStatus, TaskView, utcnow

log = logging.getLogger(__name__)

_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""

# The terminal states, as the Lua scripts test them (models.TERMINAL_STATUSES in Python).
_IS_TERMINAL = """
local function terminal(s)
  return s == 'completed' or s == 'failed' or s == 'cancelled'
end
"""

# Returns {status} for a missing or terminal task, else {'processing', circuit, shots,
# created_at, attempts, seed, memory} after moving it to processing.
_START = (
    _IS_TERMINAL
    + """
local s = redis.call('HGET', KEYS[1], 'status')
if not s then return {'missing'} end
if terminal(s) then return {s} end
redis.call('HSET', KEYS[1], 'status', 'processing', 'started_at', ARGV[1], 'worker_id', ARGV[2])
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
local f = redis.call('HMGET', KEYS[1], 'circuit', 'shots', 'created_at', 'seed', 'memory', 'owner')
return {'processing', f[1], f[2], f[3], attempts, f[4] or '', f[5] or '', f[6] or ''}
"""
)

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

# Token bucket. KEYS: bucket. ARGV: rate/s, burst, cost. Returns 0, or seconds to wait.
_TAKE_TOKENS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1]) or burst
local at = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= cost then tokens = tokens - cost else wait = math.ceil((cost - tokens) / rate) end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 60)
return wait
"""

# In-flight cap. KEYS: the tenant's set of unfinished task ids. ARGV: cap, stale
# seconds, task ids... Returns -1 if admitted (ids added), else the current count.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
local count = redis.call('ZCARD', KEYS[1])
if count + #ARGV - 2 > tonumber(ARGV[1]) then return count end
for i = 3, #ARGV do redis.call('ZADD', KEYS[1], now, ARGV[i]) end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return -1
"""

# ARGV: the pending value, the committed value, ttl. Commits only our own pending claim.
_COMMIT_IDEMPOTENCY = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"""
_PENDING = "pending"

_RETRYABLE = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


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


@dataclass(frozen=True, slots=True)
class StartOutcome:
    """Either the task to run, or why not (`missing`, `completed`, `failed`)."""

    task: StartedTask | None
    status: str


class Store:
    """Async access to task records. Create one per process and reuse it."""

    def __init__(
        self,
        url: str,
        *,
        result_ttl_seconds: int,
        socket_timeout: float | None,
        retries: int = 0,
    ) -> None:
        self._ttl = result_ttl_seconds
        # Functions use retries=0 so a dead Redis answers 503 fast; the worker retries
        # because dropping a finished result on a blip would waste the simulation.
        retry = Retry(ExponentialBackoff(cap=2.0, base=0.05), retries) if retries else None
        self._redis: aioredis.Redis = aioredis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            retry=retry,
            retry_on_error=[RedisConnectionError, RedisTimeoutError] if retries else None,
            health_check_interval=30,
        )
        self._create = self._redis.register_script(_CREATE)
        self._start = self._redis.register_script(_START)
        self._finish = self._redis.register_script(_FINISH)
        self._take_tokens = self._redis.register_script(_TAKE_TOKENS)
        self._admit = self._redis.register_script(_ADMIT)
        self._commit = self._redis.register_script(_COMMIT_IDEMPOTENCY)
        self._waiters: dict[str, set[asyncio.Future[str]]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._pubsub: PubSub | None = None

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, RedisError, *_RETRYABLE):
                await self._listener
        if self._pubsub is not None:
            with contextlib.suppress(RedisError, *_RETRYABLE):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        await self._redis.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except (RedisError, *_RETRYABLE):
            return False

    # --- submit side ----------------------------------------------------------------------
    async def create(self, task_id: str, circuit: str, shots: int, **details: Any) -> datetime:
        """Write a new `pending` task; returns its creation time."""
        created = utcnow()
        fields: dict[str, Any] = {
            "id": task_id,
            "status": TaskStatus.PENDING.value,
            "circuit": circuit,
            "shots": shots,
            "created_at": created.isoformat(),
            "attempts": 0,
            **{k: v for k, v in details.items() if v is not None},
        }
        args: list[Any] = [self._ttl]
        for key, value in fields.items():
            args += [key, value]
        async with self._guard():
            created_ok = await self._create(keys=[constants.task_key(task_id)], args=args)
        if not created_ok:
            raise RuntimeError(f"task {task_id} already exists")  # uuid4 collision: a bug
        return created

    async def claim_idempotency(
        self, digest: str, task_id: str, body_hash: str, ttl_seconds: int
    ) -> tuple[str, str, bool] | None:
        """Bind an Idempotency-Key to a new task, atomically, as *pending*.

        Returns None if the key is new: it now points at ``task_id``, pending for
        ``ttl_seconds`` or until `commit_idempotency`. Else the ``(task_id, body_hash,
        committed)`` it was bound to first; a pending binding belongs to a request still
        in flight, whose task may yet be refused.
        """
        key = constants.idempotency_key(digest)
        value = f"{task_id} {body_hash} {_PENDING}"
        async with self._guard():
            if await self._redis.set(key, value, nx=True, ex=ttl_seconds):
                return None
            existing = await self._redis.get(key)
        if existing is None:  # expired between the two calls: claim again
            return await self.claim_idempotency(digest, task_id, body_hash, ttl_seconds)
        first_task, first_hash, *state = str(existing).split(" ")
        return first_task, first_hash, _PENDING not in state

    async def commit_idempotency(
        self, digest: str, task_id: str, body_hash: str, ttl_seconds: int
    ) -> bool:
        """The key's task was accepted: replays return it for ``ttl_seconds``.

        Only a pending binding to ``task_id`` is committed (False otherwise: it expired
        and another request claimed the key meanwhile).
        """
        pending = f"{task_id} {body_hash} {_PENDING}"
        async with self._guard():
            done = await self._commit(
                keys=[constants.idempotency_key(digest)],
                args=[pending, f"{task_id} {body_hash}", ttl_seconds],
            )
        return bool(done)

    async def release_idempotency(self, digest: str) -> None:
        async with self._guard():
            await self._redis.delete(constants.idempotency_key(digest))

    async def create_batch(self, batch_id: str, task_ids: list[str]) -> None:
        key = constants.batch_key(batch_id)
        pipe = self._redis.pipeline(transaction=True)
        pipe.rpush(key, *task_ids)
        pipe.expire(key, self._ttl)
        async with self._guard():
            await pipe.execute()

    async def get_batch(self, batch_id: str) -> list[TaskView]:
        """Every task of a batch, in submission order (expired ones left out)."""
        async with self._guard():
            task_ids = await self._redis.lrange(constants.batch_key(batch_id), 0, -1)
            if not task_ids:
                raise TaskNotFound("Batch")
            pipe = self._redis.pipeline(transaction=False)
            for task_id in task_ids:
                pipe.hgetall(constants.task_key(str(task_id)))
            raws = await pipe.execute()
        return [_view({str(k): str(v) for k, v in raw.items()}) for raw in raws if raw]

    async def delete(self, task_id: str) -> None:
        async with self._guard():
            await self._redis.delete(constants.task_key(task_id))

    # --- read side ------------------------------------------------------------------------
    async def get(self, task_id: str) -> TaskView:
        async with self._guard():
            raw = await self._redis.hgetall(constants.task_key(task_id))
        if not raw:
            raise TaskNotFound()
        return _view({str(k): str(v) for k, v in raw.items()})

    async def wait(self, task_id: str, timeout: float) -> TaskView:
        """Return the task once it is terminal, or as it is when ``timeout`` runs out.

        Driven by the PUBLISH in the finish script, not by polling: the waiter is
        registered before the first read, so a finish between the two is not missed.
        """
        if timeout <= 0:
            return await self.get(task_id)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        await self._ensure_listener()
        self._waiters.setdefault(task_id, set()).add(future)
        try:
            view = await self.get(task_id)
            if view.status.terminal:
                return view
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(future, timeout)
            return await self.get(task_id)
        finally:
            waiters = self._waiters.get(task_id)
            if waiters is not None:
                waiters.discard(future)
                if not waiters:
                    del self._waiters[task_id]

    async def _ensure_listener(self) -> None:
        if self._listener is not None and not self._listener.done():
            return
        async with self._guard():
            self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            await self._pubsub.psubscribe(constants.TASK_DONE_CHANNEL_PREFIX + "*")
        self._listener = asyncio.create_task(self._listen(self._pubsub), name="qmill-done-listener")

    async def _listen(self, pubsub: PubSub) -> None:
        prefix_len = len(constants.TASK_DONE_CHANNEL_PREFIX)
        try:
            async for message in pubsub.listen():
                if message.get("type") != "pmessage":
                    continue
                task_id = str(message["channel"])[prefix_len:]
                for future in self._waiters.get(task_id, ()):
                    if not future.done():
                        future.set_result(str(message["data"]))
        except (RedisError, *_RETRYABLE) as exc:
            # Wake every waiter so it re-reads the record; the next wait() resubscribes.
            log.warning("task-done listener lost its connection", extra={"error": str(exc)})
            for futures in self._waiters.values():
                for future in futures:
                    if not future.done():
                        future.set_result("")

    # --- worker side ----------------------------------------------------------------------
    async def start(self, task_id: str, worker_id: str) -> StartOutcome:
        """Move a task to `processing` (again, on redelivery) unless it is terminal or gone."""
        async with self._guard():
            reply = await self._start(
                keys=[constants.task_key(task_id)], args=[utcnow().isoformat(), worker_id]
            )
        status = str(reply[0])
        if status != TaskStatus.PROCESSING.value:
            return StartOutcome(task=None, status=status)
        task = StartedTask(
            task_id=task_id,
            circuit=str(reply[1]),
            shots=int(reply[2]),
            created_at=datetime.fromisoformat(str(reply[3])),
            attempts=int(reply[4]),
            seed=int(reply[5]) if reply[5] else None,
            memory=reply[6] == "1",
            owner=str(reply[7]) or None,
        )
        return StartOutcome(task=task, status=status)

    async def complete(
        self,
        task_id: str,
        counts: Mapping[str, int],
        memory: list[str] | None = None,
        **details: Any,
    ) -> str:
        """Record a result. Returns 'ok', or the status that was already final."""
        shots = json.dumps(memory) if memory is not None else None
        return await self._finish_task(
            task_id,
            TaskStatus.COMPLETED,
            result=json.dumps(dict(counts)),
            shot_memory=shots,
            **details,
        )

    async def cancel(self, task_id: str, owner: str | None = None) -> str:
        """Mark a task cancelled unless it is final. Returns 'ok', 'missing' or its status.

        A running task's eventual result is then discarded by the finish script.
        """
        return await self._finish_task(
            task_id, TaskStatus.CANCELLED, owner=owner, error="cancelled by request"
        )

    async def fail(self, task_id: str, reason: str, **details: Any) -> str:
        """Record a failure with its reason. Returns 'ok', or the status already final."""
        return await self._finish_task(task_id, TaskStatus.FAILED, error=reason, **details)

    async def _finish_task(
        self, task_id: str, status: TaskStatus, owner: str | None = None, **fields: Any
    ) -> str:
        args: list[Any] = [status.value, self._ttl, "completed_at", utcnow().isoformat()]
        for key, value in fields.items():
            if value is not None:
                args += [key, value]
        keys = [
            constants.task_key(task_id),
            constants.task_done_channel(task_id),
            constants.inflight_key(owner or "-"),
        ]
        async with self._guard():
            return str(await self._finish(keys=keys, args=args))

    async def take_tokens(self, tenant: str, rate: float, burst: int, cost: int) -> None:
        """Spend ``cost`` from the tenant's token bucket, or raise RateLimited."""
        async with self._guard():
            wait = await self._take_tokens(
                keys=[constants.rate_key(tenant)], args=[rate, burst, min(cost, burst)]
            )
        if int(wait) > 0:
            raise RateLimited(f"rate limit of {rate:g} requests/s exceeded", int(wait))

    async def admit(self, tenant: str, task_ids: list[str], cap: int, stale_seconds: int) -> None:
        """Count tasks against the tenant's in-flight cap, or raise RateLimited."""
        async with self._guard():
            count = await self._admit(
                keys=[constants.inflight_key(tenant)], args=[cap, stale_seconds, *task_ids]
            )
        if int(count) >= 0:
            raise RateLimited(
                f"{count} tasks in flight; at most {cap} may be pending or processing", 5
            )

    async def heartbeat(self, worker_id: str, ttl_seconds: int, info: str) -> None:
        async with self._guard():
            await self._redis.set(constants.worker_heartbeat_key(worker_id), info, ex=ttl_seconds)

    @contextlib.asynccontextmanager
    async def _guard(self) -> Any:
        """Turn any Redis failure into DependencyUnavailable (503), never a 500."""
        try:
            yield
        except (RedisError, *_RETRYABLE) as exc:
            raise DependencyUnavailable("redis", str(exc) or type(exc).__name__) from exc


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
    )


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _int(value: str | None) -> int | None:
    return int(value) if value else None


def _float(value: str | None) -> float | None:
    return float(value) if value else None
