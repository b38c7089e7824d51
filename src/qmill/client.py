"""Use a qmill server from Python: `Client` (blocking) and `AsyncClient` (asyncio), on httpx.

    from qmill import Client

    with Client("http://127.0.0.1:8000") as qm:
        task = qm.run(circuit, shots=1000)   # a QASM string or a qiskit.QuantumCircuit
        print(task.counts)

Why it is built this way:

* ``submit`` sends a fresh ``Idempotency-Key`` with every call, so the client's own
  retries (503, 429, a dropped connection) can never queue the same circuit twice.
* Retries back off exponentially, but a ``Retry-After`` the server sends is honoured
  exactly: the server knows better than a formula when it will have room again.
* ``result`` reads the task's event stream (``GET /events?task=``, `qmill.client_events`),
  resumed with ``Last-Event-ID`` if the connection drops; the result arrives the moment
  the worker finishes. Where there is no stream (an older server, or it fails) it
  long-polls (``GET /tasks/{id}?wait=``): one request per 30 s while a task runs.
  ``wait_batch`` long-polls a whole batch (``qmill.client_batches``).
* Errors are typed after the API's answers, so callers catch what they can act on
  (`InvalidCircuitError` has the line and column; `TaskFailedError` has the task).
* Building requests and reading answers is shared by both clients
  (``qmill.client_core``); only the I/O and the sleeping differ. The error tree is in
  ``qmill.client_errors``. Importing this module does not import qiskit: a circuit
  object is converted with ``qiskit.qasm3`` only when one is given.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from typing import Any, Unpack

import httpx

# The error tree and the shared core live in their own modules; everything a user
# needs is importable from here (and `Client`/`AsyncClient` from `qmill` itself).
from qmill.client_batches import AsyncBatches, Batch, SyncBatches
from qmill.client_body import Circuit, TaskOptions, to_qasm
from qmill.client_core import (
    LONG_POLL_SECONDS,
    Call,
    RetryPolicy,
    Task,
    Waiter,
    checked,
    raise_for_task,
    read_json,
    response_error,
    retryable,
    task_path,
)
from qmill.client_errors import (
    APIError,
    AuthenticationError,
    BatchTimeoutError,
    ConflictError,
    InvalidCircuitError,
    InvalidRequestError,
    LimitExceededError,
    PayloadTooLargeError,
    QmillClientError,
    RateLimitedError,
    ResultTimeoutError,
    ServerUnreachableError,
    ServiceUnavailableError,
    TaskCancelledError,
    TaskFailedError,
    TaskNotFoundError,
    error_from_response,
    parse_retry_after,
)
from qmill.client_events import Event, aiter_events, iter_events, status_task
from qmill.client_listing import ListFilters, TaskPage, TaskSummary, list_call

__all__ = [
    "APIError",
    "AsyncClient",
    "AuthenticationError",
    "Batch",
    "BatchTimeoutError",
    "Client",
    "ConflictError",
    "Event",
    "InvalidCircuitError",
    "InvalidRequestError",
    "LimitExceededError",
    "PayloadTooLargeError",
    "QmillClientError",
    "RateLimitedError",
    "ResultTimeoutError",
    "RetryPolicy",
    "ServerUnreachableError",
    "ServiceUnavailableError",
    "Task",
    "TaskCancelledError",
    "TaskFailedError",
    "TaskNotFoundError",
    "TaskOptions",
    "TaskPage",
    "TaskSummary",
    "error_from_response",
    "parse_retry_after",
    "to_qasm",
]

# --- The clients -----------------------------------------------------------------------------


class Client(SyncBatches):
    """A blocking qmill client. Use it as a context manager, or call `close`.

    ``url`` defaults to $QMILL_URL, then http://127.0.0.1:8000; ``api_key`` to
    $QMILL_API_KEY (sent as ``Authorization: Bearer``; harmless when auth is off).
    ``timeout`` bounds each request (long-polls get their wait on top).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(url, api_key, timeout, retry)
        self._http = httpx.Client(transport=transport, **self._http_kwargs())

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: Call, deadline: float | None = None) -> httpx.Response:
        attempt = 0
        while True:
            outcome: httpx.Response | httpx.TransportError
            try:
                outcome = self._http.request(
                    call.method,
                    call.path,
                    json=call.json,
                    params=call.params,
                    headers=call.headers,
                    timeout=self._timeout_for(call),
                )
            except httpx.TransportError as exc:
                outcome = exc
            if isinstance(outcome, httpx.Response) and not retryable(call, outcome):
                return outcome
            delay, error = self._after_failure(call, attempt, outcome, deadline)
            if delay is None:
                raise error from (outcome if isinstance(outcome, Exception) else None)
            time.sleep(delay)
            attempt += 1

    def submit(
        self,
        circuit: Circuit,
        shots: int = 1024,
        *,
        idempotency_key: str | None = None,
        **options: Unpack[TaskOptions],
    ) -> str:
        """Queue a circuit; returns the task id at once. Safe to retry (Idempotency-Key).

        ``options`` are the task's other fields (`TaskOptions`): ``seed``, ``memory``,
        ``parameters``, ``observables``, ``method``, ``precision``, ``noise``.
        """
        call = self._submit_call(circuit, shots, options, idempotency_key)
        return str(checked(self._send(call))["task_id"])

    def get(self, task_id: str) -> Task:
        """The task's current state, without waiting."""
        return Task.from_json(checked(self._send(self._get_call(task_id))))

    def wait(
        self,
        task_id: str,
        *,
        timeout: float | None = 300.0,
        long_poll: float = LONG_POLL_SECONDS,
        on_update: Callable[[Task], None] | None = None,
        stream: bool = True,
    ) -> Task:
        """Wait until the task is terminal and return it, whatever its status.

        ``timeout=None`` waits for ever; otherwise `ResultTimeoutError` after it (the task
        keeps running). ``on_update`` sees each change (from the event stream: status
        only, until the last, which is the whole task) or each long-poll answer.
        ``stream=False`` long-polls only; a shorter ``long_poll`` then shows
        intermediate states (pending -> processing) sooner.
        """
        waiter = Waiter(timeout, long_poll)
        if stream:
            found = self._wait_streaming(task_id, waiter, on_update)
            if found is not None:
                return found
        while True:
            call = self._get_call(task_id, waiter.next_wait())
            task = Task.from_json(checked(self._send(call, waiter.deadline)))
            if on_update is not None:
                on_update(task)
            if task.done:
                return task
            if waiter.expired():
                raise waiter.timed_out(task)
            time.sleep(waiter.pause_before_next())

    def _wait_streaming(
        self, task_id: str, waiter: Waiter, on_update: Callable[[Task], None] | None
    ) -> Task | None:
        """The terminal task from its event stream; None to long-poll instead (an older
        server answers 404 or 405, the stream failed, or the deadline passed)."""
        try:
            for event in iter_events(self._http, task_id, None, until=waiter.deadline):
                if event.event == "result":
                    task = Task.from_json(event.data)
                    if on_update is not None:
                        on_update(task)
                    return task
                if event.event == "status" and on_update is not None:
                    on_update(status_task(event.data))
        except QmillClientError:
            pass
        return None

    def events(
        self,
        task: str | None = None,
        batch: str | None = None,
        *,
        last_event_id: str | None = None,
    ) -> Iterator[Event]:
        """Each change of a task (or of every task of a batch) as it happens: ``status``
        events, a ``result`` (the task, as `get` has it) for each that finishes, and an
        ``end`` once all are terminal. A dropped stream is resumed (``Last-Event-ID``),
        missing nothing and repeating nothing; pass ``last_event_id`` (an event's
        ``id``) to resume one yourself."""
        yield from iter_events(self._http, task, batch, last_event_id)

    def result(self, task_id: str, *, timeout: float | None = 300.0) -> Task:
        """Wait for the task and return it completed (``.counts``), or raise
        `TaskFailedError` / `TaskCancelledError` / `ResultTimeoutError`."""
        return raise_for_task(self.wait(task_id, timeout=timeout))

    def run(
        self,
        circuit: Circuit,
        shots: int = 1024,
        *,
        timeout: float | None = 300.0,
        **options: Unpack[TaskOptions],
    ) -> Task:
        """`submit` then `result`: the completed task, with its ``counts`` (or ``evs``)."""
        return self.result(self.submit(circuit, shots, **options), timeout=timeout)

    def cancel(self, task_id: str) -> Task:
        """Cancel a pending or running task; `ConflictError` if it already finished."""
        return Task.from_json(checked(self._send(Call("DELETE", task_path(task_id)))))

    def list_tasks(self, **filters: Unpack[ListFilters]) -> TaskPage:
        """One page of this key's tasks, newest first (``GET /tasks``).

        Filters: ``status`` (one or several: any of), ``tags`` (a dict: all of),
        ``batch`` (a batch id), ``since`` (an aware datetime or RFC 3339 text),
        ``limit`` (per page), ``cursor`` (a page's ``next_cursor``).
        """
        return TaskPage.from_json(checked(self._send(list_call(**filters))))

    def iter_tasks(self, **filters: Unpack[ListFilters]) -> Iterator[TaskSummary]:
        """Every task `list_tasks` would list, following the cursors page by page."""
        while True:
            page = self.list_tasks(**filters)
            yield from page.tasks
            if page.next_cursor is None:
                return
            filters["cursor"] = page.next_cursor

    def histogram_svg(self, task_id: str) -> str:
        """The completed task's counts as an SVG bar chart (for notebooks and issues)."""
        response = self._send(Call("GET", task_path(task_id, "/histogram.svg")))
        if not response.is_success:
            raise response_error(response)
        return response.text

    def backend(self) -> dict[str, Any]:
        """``GET /backend``: the deployment's methods, limits, gates and noise schema."""
        return dict(checked(self._send(Call("GET", "/backend"))))

    def health(self) -> dict[str, Any]:
        """``GET /health``'s answer, healthy or not; never retried (it is a probe)."""
        response = self._send(Call("GET", "/health", retry=False))
        body = read_json(response)
        if isinstance(body, dict) and "status" in body:
            return body
        raise response_error(response)


class AsyncClient(AsyncBatches):
    """The asyncio twin of `Client`: the same methods, awaited.

    ``async with AsyncClient() as qm: task = await qm.run(circuit)``
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(url, api_key, timeout, retry)
        self._http = httpx.AsyncClient(transport=transport, **self._http_kwargs())

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: Call, deadline: float | None = None) -> httpx.Response:
        attempt = 0
        while True:
            outcome: httpx.Response | httpx.TransportError
            try:
                outcome = await self._http.request(
                    call.method,
                    call.path,
                    json=call.json,
                    params=call.params,
                    headers=call.headers,
                    timeout=self._timeout_for(call),
                )
            except httpx.TransportError as exc:
                outcome = exc
            if isinstance(outcome, httpx.Response) and not retryable(call, outcome):
                return outcome
            delay, error = self._after_failure(call, attempt, outcome, deadline)
            if delay is None:
                raise error from (outcome if isinstance(outcome, Exception) else None)
            await asyncio.sleep(delay)
            attempt += 1

    async def submit(
        self,
        circuit: Circuit,
        shots: int = 1024,
        *,
        idempotency_key: str | None = None,
        **options: Unpack[TaskOptions],
    ) -> str:
        """See `Client.submit`."""
        call = self._submit_call(circuit, shots, options, idempotency_key)
        return str(checked(await self._send(call))["task_id"])

    async def get(self, task_id: str) -> Task:
        """See `Client.get`."""
        return Task.from_json(checked(await self._send(self._get_call(task_id))))

    async def wait(
        self,
        task_id: str,
        *,
        timeout: float | None = 300.0,
        long_poll: float = LONG_POLL_SECONDS,
        on_update: Callable[[Task], None] | None = None,
        stream: bool = True,
    ) -> Task:
        """See `Client.wait`."""
        waiter = Waiter(timeout, long_poll)
        if stream:
            found = await self._wait_streaming(task_id, waiter, on_update)
            if found is not None:
                return found
        while True:
            call = self._get_call(task_id, waiter.next_wait())
            task = Task.from_json(checked(await self._send(call, waiter.deadline)))
            if on_update is not None:
                on_update(task)
            if task.done:
                return task
            if waiter.expired():
                raise waiter.timed_out(task)
            await asyncio.sleep(waiter.pause_before_next())

    async def _wait_streaming(
        self, task_id: str, waiter: Waiter, on_update: Callable[[Task], None] | None
    ) -> Task | None:
        """See `Client._wait_streaming`."""
        try:
            async for event in aiter_events(self._http, task_id, None, until=waiter.deadline):
                if event.event == "result":
                    task = Task.from_json(event.data)
                    if on_update is not None:
                        on_update(task)
                    return task
                if event.event == "status" and on_update is not None:
                    on_update(status_task(event.data))
        except QmillClientError:
            pass
        return None

    async def events(
        self,
        task: str | None = None,
        batch: str | None = None,
        *,
        last_event_id: str | None = None,
    ) -> AsyncIterator[Event]:
        """See `Client.events`."""
        async for event in aiter_events(self._http, task, batch, last_event_id):
            yield event

    async def result(self, task_id: str, *, timeout: float | None = 300.0) -> Task:
        """See `Client.result`."""
        return raise_for_task(await self.wait(task_id, timeout=timeout))

    async def run(
        self,
        circuit: Circuit,
        shots: int = 1024,
        *,
        timeout: float | None = 300.0,
        **options: Unpack[TaskOptions],
    ) -> Task:
        """See `Client.run`."""
        task_id = await self.submit(circuit, shots, **options)
        return await self.result(task_id, timeout=timeout)

    async def cancel(self, task_id: str) -> Task:
        """See `Client.cancel`."""
        response = await self._send(Call("DELETE", task_path(task_id)))
        return Task.from_json(checked(response))

    async def list_tasks(self, **filters: Unpack[ListFilters]) -> TaskPage:
        """See `Client.list_tasks`."""
        return TaskPage.from_json(checked(await self._send(list_call(**filters))))

    async def iter_tasks(self, **filters: Unpack[ListFilters]) -> AsyncGenerator[TaskSummary, None]:
        """See `Client.iter_tasks`."""
        while True:
            page = await self.list_tasks(**filters)
            for task in page.tasks:
                yield task
            if page.next_cursor is None:
                return
            filters["cursor"] = page.next_cursor

    async def histogram_svg(self, task_id: str) -> str:
        """See `Client.histogram_svg`."""
        response = await self._send(Call("GET", task_path(task_id, "/histogram.svg")))
        if not response.is_success:
            raise response_error(response)
        return response.text

    async def backend(self) -> dict[str, Any]:
        """See `Client.backend`."""
        return dict(checked(await self._send(Call("GET", "/backend"))))

    async def health(self) -> dict[str, Any]:
        """See `Client.health`."""
        response = await self._send(Call("GET", "/health", retry=False))
        body = read_json(response)
        if isinstance(body, dict) and "status" in body:
            return body
        raise response_error(response)
