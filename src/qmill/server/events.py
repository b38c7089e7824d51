"""``GET /events?task=ID`` or ``?batch=ID``: a task's (or a batch's) changes as Server-Sent
Events, until every task is terminal.

A stream subscribes first (`store.events.EventHub`), then reads the records as one
consistent cut, then forwards live changes: a change made between the two is in the
cut or arrives live, and is sent once (a change whose seq is not above what was sent
for its task is dropped). What a client sees:

* ``retry:`` once, the reconnection delay to use;
* ``event: status`` (``id:`` its seq; data: task_id, status, batch_id, seq) for each
  change, and for each task's state at the start;
* when a task becomes terminal, its ``status`` without an ``id:`` and then
  ``event: result`` with it (data: the task as ``GET /tasks/{id}`` sends it): a client
  that has an ``id`` has the whole change, so a resume never skips a result;
* ``event: end`` once every task is terminal, and the stream closes;
* ``: ping`` comments on an idle stream every ``[server] event_heartbeat_seconds``.

``Last-Event-ID`` (a seq) resumes: only tasks whose record seq is greater are sent
(their current state, in seq order). Seqs only grow and every change after the cut has
a greater one than every seq in it, so ids on one stream only grow too.

Bounds: a tenant's open streams (``[server] max_event_streams_per_tenant``, 429 beyond),
a stream's lifetime (``max_event_stream_seconds``, then it closes and the client
resumes), a stream's queue of changes (`store.events.QUEUE_CAPACITY`, then it closes
likewise), and a write the client does not take within ``event_write_timeout_seconds``
(then the connection is closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from qmill.server import constants
from qmill.server.config import ServerSettings
from qmill.server.errors import InvalidRequest, TaskNotFound
from qmill.server.models import TaskStatus
from qmill.server.store import Stores
from qmill.server.store.events import Subscription, TaskState, check_id

log = logging.getLogger(__name__)

MEDIA_TYPE = "text/event-stream"
# What a client should wait before it reconnects (SSE's ``retry:``, in ms).
RETRY_MILLISECONDS = 2000
_CLOSED = TaskState("", TaskStatus.PENDING, 0)  # the lifetime's end, in the change loop


@dataclass(frozen=True, slots=True)
class Target:
    """What a stream watches: one task, or every task of one batch."""

    task_id: str | None = None
    batch_id: str | None = None

    @classmethod
    def of(cls, query: Mapping[str, list[str]]) -> Target:
        """From the query (``task`` or ``batch``, exactly one, once); 422 otherwise."""
        # An empty value (``?task=``) is no value: "give one" says more than "not found".
        given = {name: [v for v in values if v] for name, values in query.items()}
        given = {name: values for name, values in given.items() if values}
        if len(given) != 1 or any(len(values) > 1 for values in given.values()):
            raise InvalidRequest(
                "give exactly one of task=ID or batch=ID, once",
                allowed=["task", "batch"],
            )
        ((name, (value,)),) = given.items()
        return cls(task_id=value) if name == "task" else cls(batch_id=value)


def last_event_id(raw: str | None) -> int:
    """The seq a client has seen everything up to (0: none); 422 if it is not one."""
    if raw is None or raw.strip() == "":
        return 0
    value = raw.strip()
    if not value.isdigit() or len(value) > 19:
        raise InvalidRequest(f"Last-Event-ID must be an event id this API sent, got {raw[:32]!r}")
    return int(value)


async def open_stream(
    stores: Stores,
    settings: ServerSettings,
    target: Target,
    owner: str | None,
    last_seen: int = 0,
) -> EventResponse:
    """Subscribe, read the cut, check the caller may see it (404 like ``GET /tasks/{id}``,
    also for another tenant's id) and take a stream slot (429 when all are held)."""
    stack = contextlib.AsyncExitStack()
    try:
        if target.batch_id is not None:
            what = "Batch"
            task_ids = await stores.events.batch_tasks(target.batch_id)
        else:
            what = "Task"
            assert target.task_id is not None
            check_id(target.task_id, what)
            task_ids = [target.task_id]
        sub = await stack.enter_async_context(stores.events.subscribe(task_ids))
        states = await stores.events.snapshot(task_ids)
        if not states or (owner is not None and any(s.owner != owner for s in states)):
            raise TaskNotFound(what)
        tenant = owner or constants.ANONYMOUS_TENANT
        lifetime = settings.max_event_stream_seconds
        cap = settings.max_event_streams_per_tenant
        await stack.enter_async_context(stores.streams.hold(tenant, cap, lifetime))
        body = changes(stores, sub, states, last_seen, settings)
        return EventResponse(body, stack, settings.event_write_timeout_seconds)
    except BaseException:
        await stack.aclose()
        raise


def _frame(event: str, data: object, seq: int | None = None) -> bytes:
    lines = [] if seq is None else [f"id: {seq}"]
    lines += [f"event: {event}", "data: " + json.dumps(data, separators=(",", ":"))]
    return ("\n".join(lines) + "\n\n").encode()


def _status(state: TaskState) -> dict[str, object]:
    return {
        "task_id": state.task_id,
        "status": state.status.value,
        "batch_id": state.batch_id,
        "seq": state.seq,
    }


async def changes(
    stores: Stores,
    sub: Subscription,
    states: list[TaskState],
    last_seen: int,
    settings: ServerSettings,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[bytes]:
    """The stream's bytes: the cut (what is newer than ``last_seen``), then live changes,
    heartbeats while idle, ``end`` when all are terminal; it simply ends when its
    lifetime is over or its subscription is lost (the client resumes)."""
    sent: dict[str, TaskState] = {}
    pending = {s.task_id for s in states if not s.status.terminal}
    batch_id = next((s.batch_id for s in states), None)
    yield f"retry: {RETRY_MILLISECONDS}\n\n".encode()
    for state in sorted(states, key=lambda s: s.seq):
        sent[state.task_id] = state
        if last_seen == 0 or state.seq > last_seen:
            yield await _change(stores, state)
    heartbeat = settings.event_heartbeat_seconds
    closes_at = clock() + settings.max_event_stream_seconds
    while pending:
        now = clock()
        if now >= closes_at:
            yield b": the stream's time is up; reconnect with Last-Event-ID\n\n"
            return
        try:
            async with asyncio.timeout(min(heartbeat, closes_at - now)):
                change = await sub.queue.get()
        except TimeoutError:
            yield b": ping\n\n"
            continue
        if change is None:
            return  # overflowed, or the subscription was lost: the client resumes
        before = sent.get(change.task_id)
        if before is None:
            continue
        if change.seq == 0:  # a done message: from a worker of the previous version?
            if before.status.terminal:
                continue
            (change,) = await stores.events.snapshot([change.task_id]) or (before,)
            if change.status is before.status and change.seq == before.seq:
                continue
        elif change.seq <= before.seq:
            continue  # in the cut already, or sent
        if change.batch_id is None and batch_id is not None:
            change = TaskState(change.task_id, change.status, change.seq, batch_id)
        sent[change.task_id] = change
        if change.status.terminal:
            pending.discard(change.task_id)
        yield await _change(stores, change)
    yield _frame("end", {"tasks": len(sent)})


async def _change(stores: Stores, state: TaskState) -> bytes:
    """One change: its status, and for a terminal one the task with its result."""
    if not state.status.terminal:
        return _frame("status", _status(state), state.seq)
    try:
        view = await stores.tasks.get(state.task_id)
    except TaskNotFound:  # expired meanwhile: the status is all there is
        return _frame("status", _status(state), state.seq)
    return _frame("status", _status(state)) + _frame("result", view.to_json(), state.seq)


class EventResponse(Response):
    """A `text/event-stream` answer that ends when its body does, when the client leaves,
    or when a write is not taken within ``write_timeout`` (the connection is then closed:
    the response is left incomplete); ``stack`` (subscription, slot) is released then."""

    media_type = MEDIA_TYPE

    def __init__(
        self,
        body: AsyncIterator[bytes],
        stack: contextlib.AsyncExitStack,
        write_timeout: float,
    ) -> None:
        super().__init__(
            status_code=200,
            headers={
                "Cache-Control": "no-cache",
                # nginx (and proxies that honour it) must not buffer the stream.
                "X-Accel-Buffering": "no",
            },
            media_type=MEDIA_TYPE,
        )
        # Sent chunked as it comes: no Content-Length (Response gives an empty body one).
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self._body = body
        self._stack = stack
        self._write_timeout = write_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        pump = asyncio.create_task(self._pump(send))
        left = asyncio.create_task(_disconnected(receive))
        try:
            await asyncio.wait({pump, left}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, left):
                task.cancel()
            outcome, _ = await asyncio.gather(pump, left, return_exceptions=True)
            if isinstance(outcome, Exception):
                # Redis went away mid-stream, say: the stream ends, the client resumes.
                log.warning("event stream ended early", extra={"error": str(outcome)})
            with contextlib.suppress(Exception):
                await self._body.aclose()  # type: ignore[attr-defined]
            await self._stack.aclose()

    async def _pump(self, send: Send) -> None:
        start = {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
        if not await self._write(send, start):
            return
        async for chunk in self._body:
            if not await self._write(
                send, {"type": "http.response.body", "body": chunk, "more_body": True}
            ):
                return
        await self._write(send, {"type": "http.response.body", "body": b"", "more_body": False})

    async def _write(self, send: Send, message: dict[str, object]) -> bool:
        try:
            async with asyncio.timeout(self._write_timeout):
                await send(message)
        except TimeoutError:
            log.warning("event stream closed: its client does not read")
            return False
        return True


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
