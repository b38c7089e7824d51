"""Change events of task records, for the event streams (``GET /events``).

Every status transition gets a version, ``seq``, from one global counter
(`constants.EVENTS_SEQ_KEY`), written into the record with the new status and
PUBLISHed as "seq status task_id batch_id" on the task's channel and, for a task of a
batch, on the batch's (the scripts in `new_tasks` and `tasks`). Versions only grow, so
a stream's ``id:`` is the seq, and a client resuming with ``Last-Event-ID`` needs only
the tasks whose record seq is greater.

One `EventHub` per process holds one pattern subscription to every task channel and
hands each message to the streams that watch its task, however many there are, as
`waiters` does for long-polls (a batch stream watches each task of its batch, which
never changes, so the batch channels, there for other listeners, are not needed here).

It also hears the task-done channel: a transition made by a worker of the previous
version (a rolling upgrade) publishes no change event and leaves the record's seq as
it was, and its done message tells the stream to read the record again. A record
without seq (written before versions existed) reads as 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

from redis.asyncio.client import PubSub

from qmill.server import constants
from qmill.server.errors import TaskNotFound
from qmill.server.models import TaskStatus
from qmill.server.store.client import FAILURES, RedisClient, guard
from qmill.server.store.polls import LongPolls

log = logging.getLogger(__name__)

# Changes one stream may have waiting before it is closed (its client then resumes with
# Last-Event-ID and gets the current state of what changed from the records): a stream
# whose client does not read, or reads slowly, never holds more than this many. A
# change is ~200 bytes here; 1024 cover a whole 1000-task batch finishing at once
# while its stream is busy sending one result.
QUEUE_CAPACITY = 1024
# The record fields a snapshot reads (never the program or the answer).
_FIELDS = ("id", "status", "seq", "batch_id", "owner")
_PATTERNS = (constants.TASK_EVENTS_CHANNEL_PREFIX + "*", constants.TASK_DONE_CHANNEL_PREFIX + "*")
_SUBSCRIBE_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class TaskState:
    """A task's status and version, as a change event or a snapshot says.

    ``seq`` 0: not known (a record from before versions, or a done message, which
    carries none: the stream reads the record).
    """

    task_id: str
    status: TaskStatus
    seq: int
    batch_id: str | None = None
    owner: str | None = None

    @classmethod
    def parse(cls, message: str) -> TaskState | None:
        """A change event's message ("seq status task_id batch_id"); None if malformed."""
        parts = message.split(" ")
        if len(parts) != 4 or not parts[0].isdigit():
            return None
        try:
            status = TaskStatus(parts[1])
        except ValueError:
            return None
        return cls(parts[2], status, int(parts[0]), parts[3] or None)


def stream_slots(client: RedisClient) -> LongPolls:
    """Per-tenant slots for open event streams ([server] max_event_streams_per_tenant),
    counted in Redis like long-polls so every result-function instance shares them."""

    def refused(cap: int) -> str:
        return (
            f"{cap} event streams (GET /events) are already open for this API key (for "
            f"everyone, with auth off): [server] max_event_streams_per_tenant; retry after "
            f"Retry-After, or wait with GET /tasks/{{task_id}}?wait="
        )

    return LongPolls(client, key_of=constants.event_streams_key, refused=refused)


class Subscription:
    """The changes one stream hears, in publish order; `None` in the queue means the
    stream must end (its queue overflowed, or the hub lost its subscription), and the
    client resume."""

    def __init__(self, task_ids: Iterable[str]) -> None:
        self.task_ids = frozenset(task_ids)
        self.queue: asyncio.Queue[TaskState | None] = asyncio.Queue(QUEUE_CAPACITY + 1)
        self.ended = False

    def deliver(self, state: TaskState | None) -> None:
        if self.ended:
            return
        if state is None or self.queue.qsize() >= QUEUE_CAPACITY:
            self.ended = True
            self.queue.put_nowait(None)  # the one slot kept for it
            return
        self.queue.put_nowait(state)


class EventHub:
    """The process's one subscription to change events, shared by its streams."""

    def __init__(self, client: RedisClient) -> None:
        self._redis = client.redis
        self._by_task: dict[str, set[Subscription]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._pubsub: PubSub | None = None
        self._subscribing = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def subscribe(self, task_ids: Iterable[str]) -> AsyncIterator[Subscription]:
        """Hear the changes of ``task_ids``.

        Once this has entered, the subscription is live: a snapshot read after it
        misses no change (read the records after, not before).
        """
        await self._ensure_listener()
        sub = Subscription(task_ids)
        for task_id in sub.task_ids:
            self._by_task.setdefault(task_id, set()).add(sub)
        try:
            yield sub
        finally:
            for task_id in sub.task_ids:
                _discard(self._by_task, task_id, sub)

    async def snapshot(self, task_ids: Iterable[str]) -> list[TaskState]:
        """The tasks that exist, as one consistent cut (MULTI/EXEC): every change after
        it has a greater seq than every seq in it."""
        ids = list(task_ids)
        pipe = self._redis.pipeline(transaction=True)
        for task_id in ids:
            pipe.hmget(constants.task_key(task_id), list(_FIELDS))
        async with guard():
            rows = await pipe.execute()
        states = []
        for row in rows:
            task_id, status, seq, batch_id, owner = row
            if task_id is None or status is None:
                continue  # missing (or expired)
            number = int(seq) if seq and str(seq).isdigit() else 0
            states.append(TaskState(task_id, TaskStatus(status), number, batch_id, owner))
        return states

    async def batch_tasks(self, batch_id: str) -> list[str]:
        """A batch's task ids; TaskNotFound("Batch") if there is no such batch."""
        check_id(batch_id, "Batch")
        async with guard():
            task_ids = await self._redis.lrange(constants.batch_key(batch_id), 0, -1)
        if not task_ids:
            raise TaskNotFound("Batch")
        return [str(task_id) for task_id in task_ids]

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, *FAILURES):
                await self._listener
        await self._drop_pubsub()

    async def _drop_pubsub(self) -> None:
        if self._pubsub is not None:
            with contextlib.suppress(*FAILURES):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]
            self._pubsub = None

    async def _ensure_listener(self) -> None:
        if self._listening():
            return
        async with self._subscribing:
            if self._listening():
                return
            await self._drop_pubsub()  # a dead listener's: give its connection back
            pubsub = self._redis.pubsub()
            try:
                async with guard():
                    await pubsub.psubscribe(*_PATTERNS)
                    await _confirmed(pubsub, len(_PATTERNS))
            except BaseException:
                with contextlib.suppress(*FAILURES):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                raise
            self._pubsub = pubsub
            self._listener = asyncio.create_task(self._listen(pubsub), name="qmill-events")

    def _listening(self) -> bool:
        return self._listener is not None and not self._listener.done()

    async def _listen(self, pubsub: PubSub) -> None:
        task_prefix = len(constants.TASK_EVENTS_CHANNEL_PREFIX)
        done_prefix = len(constants.TASK_DONE_CHANNEL_PREFIX)
        try:
            async for message in pubsub.listen():
                if message.get("type") != "pmessage":
                    continue
                channel = str(message["channel"])
                state: TaskState | None
                if channel.startswith(constants.TASK_EVENTS_CHANNEL_PREFIX):
                    state = TaskState.parse(str(message["data"]))
                    if state is not None and state.task_id != channel[task_prefix:]:
                        state = None
                else:
                    state = _done(channel[done_prefix:], str(message["data"]))
                if state is not None:
                    for sub in self._by_task.get(state.task_id, ()):
                        sub.deliver(state)
        except FAILURES as exc:
            # Every stream ends; its client resumes (Last-Event-ID) on a fresh subscription.
            log.warning("event listener lost its connection", extra={"error": str(exc)})
            for subs in self._by_task.values():
                for sub in subs:
                    sub.deliver(None)


def _done(task_id: str, status: str) -> TaskState | None:
    """A done message as a change of unknown version (the stream reads the record)."""
    try:
        return TaskState(task_id, TaskStatus(status), 0)
    except ValueError:
        return None


async def _confirmed(pubsub: PubSub, count: int) -> None:
    """Wait until Redis has confirmed ``count`` subscriptions: only then is a change
    published after this point sure to be heard."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _SUBSCRIBE_SECONDS
    confirmed = 0
    while confirmed < count:
        left = deadline - loop.time()
        if left <= 0:
            raise TimeoutError("Redis did not confirm the event subscription")
        message = await pubsub.get_message(timeout=left)
        if message is not None and message.get("type") == "psubscribe":
            confirmed += 1


def _discard(index: dict[str, set[Subscription]], key: str, sub: Subscription) -> None:
    subs = index.get(key)
    if subs is not None:
        subs.discard(sub)
        if not subs:
            del index[key]


def check_id(value: str, what: str) -> None:
    """Ids are UUIDs; anything else is a 404 without a Redis read."""
    try:
        uuid.UUID(value)
    except ValueError:
        raise TaskNotFound(what) from None
