"""Long-poll waits (``GET /tasks/{id}?wait=``, ``GET /batches/{id}?wait=``) driven by
Redis pub/sub, not polling.

Every terminal transition PUBLISHes the new status on the task's channel (the finish
script in `tasks`). One pattern subscription per process listens to all of them and
wakes the waiters of that task, however many requests are waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection

from redis.asyncio.client import PubSub

from qmill.server import constants
from qmill.server.models import TaskStatus, TaskView
from qmill.server.store.client import FAILURES, RedisClient, guard
from qmill.server.store.polls import Slot
from qmill.server.store.tasks import TaskStore

log = logging.getLogger(__name__)


class Waiters:
    """Waits for tasks to become terminal. One per process; `close` stops its listener."""

    def __init__(self, client: RedisClient, tasks: TaskStore) -> None:
        self._redis = client.redis
        self._tasks = tasks
        self._waiters: dict[str, set[asyncio.Future[str]]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._pubsub: PubSub | None = None
        # One subscribe at a time: the first waits of a process, arriving together, each
        # subscribed and started a listener on whichever pub/sub came last (the others
        # leaked a connection each); the listeners then read one connection at once and
        # died ("readuntil() called while another coroutine is already waiting").
        self._subscribing = asyncio.Lock()

    async def wait(
        self, task_id: str, timeout: float, *, packed: bool = False, slot: Slot | None = None
    ) -> TaskView:
        """Return the task once it is terminal, or as it is when ``timeout`` runs out.

        The waiter is registered before the first read, so a finish between the two is
        not missed. ``packed``: as `TaskStore.get`. With a long-poll ``slot``, the slot
        is taken in the first read's round trip (429 when the tenant has none left) and
        given back in the last one's.
        """
        if timeout <= 0:
            return await self._tasks.get(task_id, packed=packed)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        await self._ensure_listener()
        self._waiters.setdefault(task_id, set()).add(future)
        key = constants.task_key(task_id)
        held = False
        try:
            if slot is None:
                async with guard():
                    status = await self._redis.hget(key, "status")
            else:
                status = await slot.take(timeout, reading=key)
                held = True
            # Only the status is read before the wait: a task still running (the usual
            # case right after a submit) is not read and parsed whole twice.
            if status is not None and not TaskStatus(str(status)).terminal:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(future, timeout)
            if slot is None:
                return await self._tasks.get(task_id, packed=packed)
            pipe = self._redis.pipeline(transaction=False)
            pipe.hgetall(key)
            slot.release(pipe)
            async with guard():
                raw, _ = await pipe.execute()
            held = False
            return await self._tasks.view_of(raw, packed=packed)
        finally:
            self._forget(task_id, future)
            if held and slot is not None:
                # The wait failed or was cancelled: give the slot back on its own (if
                # Redis is gone, its lease runs out by itself).
                with contextlib.suppress(*FAILURES):
                    await slot.release(self._redis)

    async def wait_all(self, task_ids: Collection[str], timeout: float) -> set[str]:
        """Wait until every task is terminal (or gone), or ``timeout`` runs out; the ids
        still unfinished then (empty: all finished).

        Every task is registered at once and their statuses read in one round trip,
        so a finish between the two is not missed; then each finish only resolves its
        future: the batch is not read again per finished task. A lost listener wakes
        every waiter with "" and those tasks are read again.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        left = set(task_ids)
        while left:
            await self._ensure_listener()
            futures = {task_id: loop.create_future() for task_id in left}
            for task_id, future in futures.items():
                self._waiters.setdefault(task_id, set()).add(future)
            try:
                left = await self._unfinished(list(left))
                remaining = deadline - loop.time()
                if not left or remaining <= 0:
                    return left
                await asyncio.wait([futures[t] for t in left], timeout=remaining)
                # Done: a terminal status was published; "" (the listener lost its
                # connection) or not done (timed out) are read again.
                left = {t for t in left if not futures[t].done() or not futures[t].result()}
            finally:
                for task_id, future in futures.items():
                    self._forget(task_id, future)
            if loop.time() >= deadline:
                return left
        return left

    async def _unfinished(self, task_ids: list[str]) -> set[str]:
        """Of ``task_ids``, those that exist and are not terminal (one round trip)."""
        pipe = self._redis.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.hget(constants.task_key(task_id), "status")
        async with guard():
            statuses = await pipe.execute()
        return {
            task_id
            for task_id, status in zip(task_ids, statuses, strict=True)
            if status is not None and not TaskStatus(str(status)).terminal
        }

    def _forget(self, task_id: str, future: asyncio.Future[str]) -> None:
        waiters = self._waiters.get(task_id)
        if waiters is not None:
            waiters.discard(future)
            if not waiters:
                del self._waiters[task_id]

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, *FAILURES):
                await self._listener
        if self._pubsub is not None:
            with contextlib.suppress(*FAILURES):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _ensure_listener(self) -> None:
        if self._listening():
            return
        async with self._subscribing:
            if self._listening():  # another wait subscribed meanwhile
                return
            if self._pubsub is not None:  # the dead listener's: give its connection back
                with contextlib.suppress(*FAILURES):
                    await self._pubsub.aclose()  # type: ignore[no-untyped-call]
                self._pubsub = None
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                async with guard():
                    await pubsub.psubscribe(constants.TASK_DONE_CHANNEL_PREFIX + "*")
            except BaseException:
                with contextlib.suppress(*FAILURES):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                raise
            self._pubsub = pubsub
            self._listener = asyncio.create_task(self._listen(pubsub), name="qmill-done-listener")

    def _listening(self) -> bool:
        return self._listener is not None and not self._listener.done()

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
        except FAILURES as exc:
            # Wake every waiter so it re-reads the record; the next wait() resubscribes.
            log.warning("task-done listener lost its connection", extra={"error": str(exc)})
            for futures in self._waiters.values():
                for future in futures:
                    if not future.done():
                        future.set_result("")
