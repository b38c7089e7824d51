"""Whole batches for `Client` and `AsyncClient`: submit, read, wait for, cancel.

Mixed into both clients (`qmill.client`), which supply ``_send``, ``submit`` and
``wait``; requests are built in `qmill.client_core` like every other call.

* ``submit_batch`` sends a fresh ``Idempotency-Key`` with every call, so its retries
  (even after a broken connection) never queue a batch twice, and the batch's ``seed``
  once: the server gives circuit ``i`` the seed ``seed + i``, so identical circuits in
  one batch give different counts, and the same batch again the same ones.
* ``wait_batch`` reads the batch's event stream (``GET /events?batch=``): one
  connection for the whole batch, each task's change as it happens, and one read of
  the batch once its last task has finished. Where there is no stream (an older
  server, or it fails) it long-polls ``GET /batches/{id}?wait=``: one request per 30 s.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Unpack, cast, overload
from urllib.parse import quote

from qmill.client_body import Circuit, TaskOptions, task_body
from qmill.client_core import (
    LONG_POLL_SECONDS,
    Call,
    ClientBase,
    Task,
    Waiter,
    batch_unsupported,
    checked,
)
from qmill.client_errors import QmillClientError
from qmill.client_events import Event, aiter_events, iter_events

if TYPE_CHECKING:
    import httpx


@dataclass(frozen=True)
class Batch(Sequence[str]):
    """A batch as ``POST /batches`` (its id and task ids) or ``GET /batches/{id}`` (also
    every task, ``counts`` per status and ``done``) describes it.

    A sequence of its task ids (``batch[0]``, ``len(batch)``, ``for task_id in batch``),
    as `submit_batch` returned a list of them before it returned a batch. ``batch_id``
    is None only when an old server without ``POST /batches`` got one submit per circuit.
    """

    batch_id: str | None
    task_ids: list[str]
    tasks: list[Task] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    # Every task terminal: the batch will not change again (False until read).
    done: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Batch:
        tasks = [Task.from_json(task) for task in body.get("tasks") or []]
        if "task_ids" in body:
            task_ids = [str(task_id) for task_id in body["task_ids"]]
        else:
            task_ids = [task.task_id for task in tasks]
        counts = {str(k): int(v) for k, v in (body.get("counts") or {}).items()}
        return cls(
            str(body["batch_id"]), task_ids, tasks, counts, bool(body.get("done")), dict(body)
        )

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> list[str]: ...
    def __getitem__(self, index: int | slice) -> str | list[str]:
        return self.task_ids[index]

    def __len__(self) -> int:
        return len(self.task_ids)


def batch_path(batch: str | Batch) -> str:
    """A batch's path; a `Batch` without an id (no ``POST /batches``) has none."""
    batch_id = batch.batch_id if isinstance(batch, Batch) else batch
    if batch_id is None:
        raise ValueError("this batch has no id: the server had no POST /batches")
    return f"/batches/{quote(str(batch_id), safe='')}"


# Options sent once for the whole batch instead of in every task (`ClientBase._batch_call`).
BATCH_FIELDS = ("seed", "tags")


class _BatchCalls(ClientBase):
    """The requests both clients send for batches."""

    @staticmethod
    def _batch_call(
        circuits: list[Circuit], shots: int, options: TaskOptions, idempotency_key: str | None
    ) -> Call:
        """``POST /batches`` with a fresh Idempotency-Key (so every retry, even after a
        broken connection, is safe) and the batch's ``seed`` and ``tags`` sent once, at
        the batch's level: the server gives task i ``seed + i``, not one seed to all."""
        shared: dict[str, Any] = dict(options)
        batch = {k: v for k in BATCH_FIELDS if (v := shared.pop(k, None)) is not None}
        tasks = [task_body(c, shots, cast(TaskOptions, shared)) for c in circuits]
        return Call(
            "POST",
            "/batches",
            json={"tasks": tasks, **batch},
            headers={"Idempotency-Key": idempotency_key or str(uuid.uuid4())},
        )

    @staticmethod
    def _get_batch_call(batch: str | Batch, wait: float = 0.0) -> Call:
        params = {"wait": f"{wait:g}"} if wait > 0 else None
        return Call("GET", batch_path(batch), params=params, hold=wait)


class _Progress:
    """A batch as its event stream tells it: the latest state of each task seen (the
    stream starts with every task's current state), for ``on_update``. The counts per
    status are kept as the tasks change, not recounted at every event."""

    def __init__(self, batch_id: str) -> None:
        self.batch_id = batch_id
        self.tasks: dict[str, Task] = {}
        self.counts: Counter[str] = Counter()

    def seen(self, event: Event) -> Batch | None:
        """The batch after ``event``, or None if the event says nothing of a task."""
        if event.event not in ("status", "result") or not isinstance(event.data, dict):
            return None
        task = Task.from_json({**event.data, "shots": event.data.get("shots") or 0})
        known = self.tasks.get(task.task_id)
        if known is not None:
            if known.done and event.event == "status":
                return None  # a terminal status comes with its result: keep the result
            self.counts[known.status] -= 1
        self.tasks[task.task_id] = task
        self.counts[task.status] += 1
        counts = {status: n for status, n in self.counts.items() if n}
        return Batch(self.batch_id, list(self.tasks), list(self.tasks.values()), counts, False)


def _batch_id(batch: str | Batch) -> str:
    return batch_path(batch).rsplit("/", 1)[1]


def _one_by_one(options: TaskOptions, index: int) -> TaskOptions:
    """A circuit's options when submitted alone: the batch seed plus its index, as the
    server would have given it in a batch."""
    seed = options.get("seed")
    return options if seed is None else {**options, "seed": seed + index}


class SyncBatches(_BatchCalls):
    """`Client`'s batch methods."""

    if TYPE_CHECKING:
        _http: httpx.Client

        def _send(self, call: Call, deadline: float | None = None) -> httpx.Response: ...
        def submit(
            self,
            circuit: Circuit,
            shots: int = 1024,
            *,
            idempotency_key: str | None = None,
            **options: Unpack[TaskOptions],
        ) -> str: ...

    def submit_batch(
        self,
        circuits: Iterable[Circuit],
        shots: int = 1024,
        *,
        idempotency_key: str | None = None,
        **options: Unpack[TaskOptions],
    ) -> Batch:
        """Queue several circuits, all or nothing (``POST /batches``); the `Batch` (its id
        and task ids, in order). Safe to retry (Idempotency-Key). ``seed``: circuit i
        gets ``seed + i``.

        A server without the batch endpoint gets one submit per circuit instead (the
        batch then has no id); if one of those fails, the error carries a note with the
        ids already queued.
        """
        items = list(circuits)
        if not items:
            return Batch(None, [])
        response = self._send(self._batch_call(items, shots, options, idempotency_key))
        if not batch_unsupported(response):
            return Batch.from_json(checked(response))
        task_ids: list[str] = []
        try:
            for index, circuit in enumerate(items):
                task_ids.append(self.submit(circuit, shots, **_one_by_one(options, index)))
        except QmillClientError as exc:
            exc.add_note(f"already queued by this batch: {task_ids}")
            raise
        return Batch(None, task_ids)

    def get_batch(self, batch: str | Batch) -> Batch:
        """Every task of the batch as it is now, with ``counts`` per status and ``done``."""
        return Batch.from_json(checked(self._send(self._get_batch_call(batch))))

    def wait_batch(
        self,
        batch: str | Batch,
        *,
        timeout: float | None = 300.0,
        long_poll: float = LONG_POLL_SECONDS,
        on_update: Callable[[Batch], None] | None = None,
    ) -> Batch:
        """Wait until every task of the batch is terminal and return it, whatever their
        statuses; `BatchTimeoutError` after ``timeout`` (None: wait for ever).
        ``on_update`` sees the batch at each change (from the stream: the tasks' latest
        statuses, with results as they finish)."""
        waiter = Waiter(timeout, long_poll)
        if self._wait_batch_streaming(batch, waiter, on_update):
            return self.get_batch(batch)
        while True:
            call = self._get_batch_call(batch, waiter.next_wait())
            current = Batch.from_json(checked(self._send(call, waiter.deadline)))
            if on_update is not None:
                on_update(current)
            if current.done:
                return current
            if waiter.expired():
                raise waiter.batch_timed_out(current)
            time.sleep(waiter.pause_before_next())

    def _wait_batch_streaming(
        self, batch: str | Batch, waiter: Waiter, on_update: Callable[[Batch], None] | None
    ) -> bool:
        """True once the batch's stream has said every task is terminal; False to
        long-poll instead (no stream here, it failed, or the deadline passed first)."""
        progress = _Progress(_batch_id(batch))
        http = self._http
        try:
            for event in iter_events(http, None, progress.batch_id, until=waiter.deadline):
                if event.event == "end":
                    return True
                if on_update is not None and (current := progress.seen(event)) is not None:
                    on_update(current)
        except QmillClientError:
            pass
        return False

    def cancel_batch(self, batch: str | Batch) -> Batch:
        """Cancel every task of the batch that has not finished; the batch as it now is
        (finished tasks keep their results)."""
        return Batch.from_json(checked(self._send(Call("DELETE", batch_path(batch)))))


class AsyncBatches(_BatchCalls):
    """`AsyncClient`'s batch methods: `SyncBatches`' awaited."""

    if TYPE_CHECKING:
        _http: httpx.AsyncClient

        async def _send(self, call: Call, deadline: float | None = None) -> httpx.Response: ...
        async def submit(
            self,
            circuit: Circuit,
            shots: int = 1024,
            *,
            idempotency_key: str | None = None,
            **options: Unpack[TaskOptions],
        ) -> str: ...

    async def submit_batch(
        self,
        circuits: Iterable[Circuit],
        shots: int = 1024,
        *,
        idempotency_key: str | None = None,
        **options: Unpack[TaskOptions],
    ) -> Batch:
        """See `Client.submit_batch`."""
        items = list(circuits)
        if not items:
            return Batch(None, [])
        response = await self._send(self._batch_call(items, shots, options, idempotency_key))
        if not batch_unsupported(response):
            return Batch.from_json(checked(response))
        task_ids: list[str] = []
        try:
            for index, circuit in enumerate(items):
                task_ids.append(await self.submit(circuit, shots, **_one_by_one(options, index)))
        except QmillClientError as exc:
            exc.add_note(f"already queued by this batch: {task_ids}")
            raise
        return Batch(None, task_ids)

    async def get_batch(self, batch: str | Batch) -> Batch:
        """See `Client.get_batch`."""
        return Batch.from_json(checked(await self._send(self._get_batch_call(batch))))

    async def wait_batch(
        self,
        batch: str | Batch,
        *,
        timeout: float | None = 300.0,
        long_poll: float = LONG_POLL_SECONDS,
        on_update: Callable[[Batch], None] | None = None,
    ) -> Batch:
        """See `Client.wait_batch`."""
        waiter = Waiter(timeout, long_poll)
        if await self._wait_batch_streaming(batch, waiter, on_update):
            return await self.get_batch(batch)
        while True:
            call = self._get_batch_call(batch, waiter.next_wait())
            current = Batch.from_json(checked(await self._send(call, waiter.deadline)))
            if on_update is not None:
                on_update(current)
            if current.done:
                return current
            if waiter.expired():
                raise waiter.batch_timed_out(current)
            await asyncio.sleep(waiter.pause_before_next())

    async def _wait_batch_streaming(
        self, batch: str | Batch, waiter: Waiter, on_update: Callable[[Batch], None] | None
    ) -> bool:
        """See `SyncBatches._wait_batch_streaming`."""
        progress = _Progress(_batch_id(batch))
        http = self._http
        try:
            async for event in aiter_events(http, None, progress.batch_id, until=waiter.deadline):
                if event.event == "end":
                    return True
                if on_update is not None and (current := progress.seen(event)) is not None:
                    on_update(current)
        except QmillClientError:
            pass
        return False

    async def cancel_batch(self, batch: str | Batch) -> Batch:
        """See `Client.cancel_batch`."""
        return Batch.from_json(checked(await self._send(Call("DELETE", batch_path(batch)))))
