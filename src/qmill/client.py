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
* ``result`` long-polls (``GET /tasks/{id}?wait=``): one request per 30 s while a task
  runs, and the answer arrives the moment the worker finishes, with no poll loop.
* Errors are typed after the API's answers, so callers catch what they can act on
  (`InvalidCircuitError` has the line and column; `TaskFailedError` has the task).
* Building requests and reading answers is shared by both clients; only the I/O and
  the sleeping differ. Importing this module does not import qiskit: a circuit object
  is converted with ``qiskit.qasm3`` only when one is given.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import os
import random
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import quote

import httpx

if TYPE_CHECKING:
    from qiskit import QuantumCircuit

    Circuit: TypeAlias = str | QuantumCircuit
else:
    Circuit: TypeAlias = Any

__all__ = [
    "APIError",
    "AsyncClient",
    "AuthenticationError",
    "Client",
    "ConflictError",
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
    "parse_retry_after",
    "to_qasm",
]

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "QMILL_URL"
API_KEY_ENV = "QMILL_API_KEY"
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})
# The longest single long-poll the client asks for; the server caps ?wait= itself
# ([server] max_wait_seconds, 30 s by default) and the client simply asks again.
LONG_POLL_SECONDS = 30.0
# Statuses worth retrying: the server (or a proxy in front of it) says "not now".
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
USER_AGENT = "qmill-client/0.1"


# --- Errors ----------------------------------------------------------------------------------
#
#   QmillClientError
#    ├── APIError                     the server answered with an error status
#    │    ├── InvalidCircuitError     400: the program does not parse (line, column)
#    │    ├── AuthenticationError     401/403: missing or unknown API key
#    │    ├── TaskNotFoundError       404: unknown or expired task (or path)
#    │    ├── ConflictError           409: e.g. cancelling a finished task
#    │    ├── PayloadTooLargeError    413
#    │    ├── InvalidRequestError     422: malformed body or field
#    │    │    └── LimitExceededError 422: valid, but over a server limit (limit, allowed)
#    │    ├── RateLimitedError        429 after the client's retries (retry_after)
#    │    └── ServiceUnavailableError 502/503/504 after the client's retries (retry_after)
#    ├── ServerUnreachableError       no HTTP answer at all (refused, reset, timed out)
#    ├── TaskFailedError              the task ended failed (.task)
#    │    └── TaskCancelledError      ... or cancelled
#    └── ResultTimeoutError           still running when the caller's timeout ran out


class QmillClientError(Exception):
    """Root of everything this client raises on purpose."""


class APIError(QmillClientError):
    """The server answered with an error status; ``detail`` is its JSON ``detail``."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        detail: Any = None,
        body: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.detail = detail if detail is not None else message
        self.body = body
        self.retry_after = retry_after


class InvalidCircuitError(APIError):
    """400: the OpenQASM program does not parse. ``line``/``column`` are 1-based, if known."""

    @property
    def line(self) -> int | None:
        return _int_or_none(self.body, "line")

    @property
    def column(self) -> int | None:
        return _int_or_none(self.body, "column")


class AuthenticationError(APIError):
    """401/403: the server wants an API key (``api_key=`` or $QMILL_API_KEY) it knows."""


class TaskNotFoundError(APIError):
    """404: no such task (results expire), or the server does not have this endpoint."""


class ConflictError(APIError):
    """409: the request contradicts the task's state, e.g. cancelling a finished task."""


class PayloadTooLargeError(APIError):
    """413: the request body is over the server's size limit."""


class InvalidRequestError(APIError):
    """422: the body or one of its fields is invalid; retrying it unchanged will not help."""


class LimitExceededError(InvalidRequestError):
    """422 naming a server limit: ``limit`` (e.g. "shots") and the ``allowed`` maximum."""

    @property
    def limit(self) -> str | None:
        value = self.body.get("limit") if isinstance(self.body, dict) else None
        return str(value) if value is not None else None

    @property
    def allowed(self) -> Any:
        return self.body.get("allowed") if isinstance(self.body, dict) else None


class RateLimitedError(APIError):
    """429, still, after the client's retries; ``retry_after`` says when to come back."""


class ServiceUnavailableError(APIError):
    """503 (or 502/504 from a proxy), still, after the client's retries."""


class ServerUnreachableError(QmillClientError):
    """No HTTP answer: connection refused or reset, DNS failure, or a timeout."""


class TaskFailedError(QmillClientError):
    """The task ended without counts; ``task`` is its final view (``task.error`` says why)."""

    def __init__(self, task: Task) -> None:
        reason = f": {task.error}" if task.error else ""
        super().__init__(f"task {task.task_id} {task.status}{reason}")
        self.task = task


class TaskCancelledError(TaskFailedError):
    """The task was cancelled before it completed."""


class ResultTimeoutError(QmillClientError, TimeoutError):
    """The caller's timeout ran out while the task was still running (it keeps running)."""

    def __init__(self, task: Task, waited: float) -> None:
        super().__init__(
            f"task {task.task_id} is still {task.status} after {waited:.1f} s; "
            "it keeps running, ask again later"
        )
        self.task = task


def _int_or_none(body: Any, key: str) -> int | None:
    value = body.get(key) if isinstance(body, dict) else None
    return value if isinstance(value, int) else None


def _detail_text(detail: Any) -> str:
    """A readable line from a ``detail``: a string, or pydantic's list of field errors."""
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                where = ".".join(str(p) for p in item.get("loc", ()))
                parts.append(f"{where}: {item.get('msg', item)}" if where else str(item.get("msg")))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(detail)


_ERRORS_BY_STATUS: dict[int, type[APIError]] = {
    400: InvalidCircuitError,
    401: AuthenticationError,
    403: AuthenticationError,
    404: TaskNotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: InvalidRequestError,
    429: RateLimitedError,
    502: ServiceUnavailableError,
    503: ServiceUnavailableError,
    504: ServiceUnavailableError,
}


def error_from_response(
    status: int, body: Any, headers: Mapping[str, str], text: str = ""
) -> APIError:
    """The typed error for an error answer. ``body`` is the parsed JSON, or None."""
    detail = body.get("detail") if isinstance(body, dict) else None
    if detail is None:
        detail = text.strip()[:200] or f"HTTP {status}"
    cls = _ERRORS_BY_STATUS.get(status, APIError)
    if cls is InvalidRequestError and isinstance(body, dict) and "limit" in body:
        cls = LimitExceededError
    return cls(
        f"HTTP {status}: {_detail_text(detail)}",
        status=status,
        detail=detail,
        body=body,
        retry_after=parse_retry_after(headers.get("retry-after")),
    )


# --- Retries ---------------------------------------------------------------------------------


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header, or None if absent or unreadable.

    RFC 9110 allows delay-seconds or an HTTP-date; a date in the past means "now".
    """
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@dataclass(frozen=True)
class RetryPolicy:
    """When to retry a request the server could not take (429, 502-504, no connection).

    Without ``Retry-After`` the waits grow exponentially from ``backoff`` with jitter, so
    many clients do not come back in step. A ``Retry-After`` is honoured as given (plus
    up to 10% jitter, never less); if it is longer than ``max_delay`` the client gives up
    and raises instead of either ignoring it or hanging.
    """

    retries: int = 5
    backoff: float = 0.5
    max_delay: float = 30.0

    def delay(
        self, attempt: int, retry_after: float | None, rand: Callable[[], float] = random.random
    ) -> float | None:
        """Seconds before retry number ``attempt + 1`` (attempt counts from 0), or None."""
        if attempt >= self.retries:
            return None
        if retry_after is not None:
            if retry_after > self.max_delay:
                return None
            return retry_after + rand() * 0.1 * retry_after
        ceiling = min(self.max_delay, self.backoff * 2.0**attempt)
        return ceiling / 2 + rand() * ceiling / 2


# --- Tasks -----------------------------------------------------------------------------------


def _when(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


@dataclass(frozen=True)
class Task:
    """A task as ``GET /tasks/{id}`` describes it. ``counts`` is set once it completed."""

    task_id: str
    status: str
    shots: int
    counts: dict[str, int] | None = None
    error: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    qubits: int | None = None
    depth: int | None = None
    method: str | None = None
    execution_seconds: float | None = None
    queue_seconds: float | None = None
    worker_id: str | None = None
    attempts: int = 0
    seed: int | None = None
    memory: list[str] | None = None
    # The whole JSON answer, so fields this client does not know yet stay reachable.
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Task:
        return cls(
            task_id=str(body.get("task_id") or body.get("id")),
            status=str(body.get("status")),
            shots=int(body.get("shots") or 0),
            counts=body.get("result"),
            error=body.get("error"),
            created_at=_when(body.get("created_at")),
            started_at=_when(body.get("started_at")),
            completed_at=_when(body.get("completed_at")),
            qubits=body.get("qubits"),
            depth=body.get("depth"),
            method=body.get("method"),
            execution_seconds=body.get("execution_seconds"),
            queue_seconds=body.get("queue_seconds"),
            worker_id=body.get("worker_id"),
            attempts=int(body.get("attempts") or 0),
            seed=body.get("seed"),
            memory=body.get("memory"),
            raw=dict(body),
        )

    @property
    def done(self) -> bool:
        """Terminal: completed, failed or cancelled. It will not change again."""
        return self.status in TERMINAL_STATUSES


def raise_for_task(task: Task) -> Task:
    """The task if it completed; else `TaskFailedError` / `TaskCancelledError`."""
    if task.status == "cancelled":
        raise TaskCancelledError(task)
    if task.status != "completed":
        raise TaskFailedError(task)
    return task


def to_qasm(circuit: Circuit) -> str:
    """The program to send: a string as is, a ``qiskit.QuantumCircuit`` as OpenQASM 3.

    qiskit is imported only here, and only for a circuit object (which means the caller
    has already imported it), so plain-QASM users never pay for it.
    """
    if isinstance(circuit, str):
        return circuit
    if any(
        cls.__name__ == "QuantumCircuit" and cls.__module__.startswith("qiskit")
        for cls in type(circuit).__mro__
    ):
        from qiskit import qasm3

        return str(qasm3.dumps(circuit))
    raise TypeError(
        f"a circuit is an OpenQASM string or a qiskit.QuantumCircuit, not {type(circuit).__name__}"
    )


# --- Shared request building -----------------------------------------------------------------


@dataclass(frozen=True)
class _Call:
    """One API request, built the same way for both clients."""

    method: str
    path: str
    json: Any = None
    params: dict[str, str] | None = None
    headers: dict[str, str] | None = None
    # Seconds the server may take on purpose (a long-poll), added to the read timeout.
    hold: float = 0.0
    # Safe to send again after a connection broke mid-request (the server may have
    # acted on it): reads, deletes and keyed submits are; an unkeyed POST is not.
    replayable: bool = True
    retry: bool = True


def _task_path(task_id: str, suffix: str = "") -> str:
    # Quoted as one segment: an "id" like "../health" must not reach another endpoint.
    return f"/tasks/{quote(str(task_id), safe='')}{suffix}"


class _Base:
    """Settings and request builders shared by `Client` and `AsyncClient`."""

    def __init__(
        self,
        url: str | None,
        api_key: str | None,
        timeout: float,
        retry: RetryPolicy | None,
    ) -> None:
        self.url = (url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        self.timeout = timeout
        self.retry_policy = retry or RetryPolicy()
        self._headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if key:
            self._headers["Authorization"] = f"Bearer {key}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def _http_kwargs(self) -> dict[str, Any]:
        return {
            "base_url": self.url,
            "headers": self._headers,
            "timeout": httpx.Timeout(self.timeout, connect=min(self.timeout, 5.0)),
            "follow_redirects": False,
        }

    @staticmethod
    def _submit_call(
        circuit: Circuit,
        shots: int,
        seed: int | None,
        memory: bool,
        idempotency_key: str | None,
    ) -> _Call:
        return _Call(
            "POST",
            "/tasks",
            json=_task_body(circuit, shots, seed, memory),
            headers={"Idempotency-Key": idempotency_key or str(uuid.uuid4())},
        )

    @staticmethod
    def _batch_call(circuits: list[Circuit], shots: int, seed: int | None) -> _Call:
        # No idempotency on the batch endpoint: a broken connection is not retried
        # (a 503 is: the server queues a batch all or nothing and says 503 for nothing).
        tasks = [_task_body(c, shots, seed, False) for c in circuits]
        return _Call("POST", "/batches", json={"tasks": tasks}, replayable=False)

    @staticmethod
    def _get_call(task_id: str, wait: float = 0.0) -> _Call:
        params = {"wait": f"{wait:g}"} if wait > 0 else None
        return _Call("GET", _task_path(task_id), params=params, hold=wait)

    def _timeout_for(self, call: _Call) -> httpx.Timeout:
        return httpx.Timeout(self.timeout + call.hold, connect=min(self.timeout, 5.0))

    def _after_failure(
        self,
        call: _Call,
        attempt: int,
        outcome: httpx.Response | httpx.TransportError,
        deadline: float | None,
    ) -> tuple[float | None, QmillClientError]:
        """For a retryable failure: (seconds to wait before retrying or None, the error)."""
        if isinstance(outcome, httpx.TransportError):
            error: QmillClientError = ServerUnreachableError(
                f"no answer from {self.url}: {type(outcome).__name__}: {outcome}".rstrip(": ")
            )
            sent = not isinstance(outcome, httpx.ConnectError | httpx.ConnectTimeout)
            if not call.retry or (sent and not call.replayable):
                return None, error
            delay = self.retry_policy.delay(attempt, None)
        else:
            api_error = _error(outcome)
            delay = self.retry_policy.delay(attempt, api_error.retry_after)
            error = api_error
        if delay is not None and deadline is not None and time.monotonic() + delay > deadline:
            delay = None
        return delay, error


def _task_body(circuit: Circuit, shots: int, seed: int | None, memory: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"quantum_circuit": to_qasm(circuit), "shots": shots}
    if seed is not None:
        body["seed"] = seed
    if memory:
        body["memory"] = True
    return body


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _error(response: httpx.Response) -> APIError:
    return error_from_response(
        response.status_code, _json(response), response.headers, response.text
    )


def _checked(response: httpx.Response) -> Any:
    """The JSON of a 2xx answer; the typed error for anything else."""
    if not response.is_success:
        raise _error(response)
    body = _json(response)
    if body is None:
        raise APIError(
            f"HTTP {response.status_code}: expected JSON, got {response.text[:80]!r}",
            status=response.status_code,
        )
    return body


def _retryable(call: _Call, response: httpx.Response) -> bool:
    return call.retry and response.status_code in RETRYABLE_STATUSES


def _batch_unsupported(response: httpx.Response) -> bool:
    """A server without ``POST /batches`` (older deployment): fall back to single submits."""
    return response.status_code in (404, 405)


class _Waiter:
    """The long-poll loop's bookkeeping, shared by both clients.

    Asks for at most ``long_poll`` seconds per request and for no longer than the time
    left; if the server answers early with the task unfinished (an old server that
    ignores ``?wait=``), pauses with a growing delay so that never becomes a busy loop.
    """

    def __init__(self, timeout: float | None, long_poll: float) -> None:
        self.started = time.monotonic()
        self.deadline = None if timeout is None else self.started + timeout
        self.long_poll = max(0.0, long_poll)
        self.pause = 0.0
        self.asked = 0.0
        self.sent_at = 0.0

    def next_wait(self) -> float:
        left = math.inf if self.deadline is None else self.deadline - time.monotonic()
        self.asked = max(0.0, min(self.long_poll, left))
        self.sent_at = time.monotonic()
        return self.asked

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def pause_before_next(self) -> float:
        early = time.monotonic() - self.sent_at < min(self.asked, 2.0) / 2
        self.pause = min(max(self.pause * 2, 0.1), 2.0) if early else 0.0
        return self.pause

    def timed_out(self, task: Task) -> ResultTimeoutError:
        return ResultTimeoutError(task, time.monotonic() - self.started)


# --- The clients -----------------------------------------------------------------------------


class Client(_Base):
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

    def _send(self, call: _Call, deadline: float | None = None) -> httpx.Response:
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
            if isinstance(outcome, httpx.Response) and not _retryable(call, outcome):
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
        seed: int | None = None,
        memory: bool = False,
        idempotency_key: str | None = None,
    ) -> str:
        """Queue a circuit; returns the task id at once. Safe to retry (Idempotency-Key)."""
        call = self._submit_call(circuit, shots, seed, memory, idempotency_key)
        return str(_checked(self._send(call))["task_id"])

    def submit_batch(
        self, circuits: Iterable[Circuit], shots: int = 1024, *, seed: int | None = None
    ) -> list[str]:
        """Queue several circuits (all or nothing with ``POST /batches``); their task ids.

        A server without the batch endpoint gets one submit per circuit instead; if one
        of those fails, the error carries a note with the ids already queued.
        """
        items = list(circuits)
        if not items:
            return []
        response = self._send(self._batch_call(items, shots, seed))
        if not _batch_unsupported(response):
            return [str(t) for t in _checked(response)["task_ids"]]
        task_ids: list[str] = []
        try:
            for circuit in items:
                task_ids.append(self.submit(circuit, shots, seed=seed))
        except QmillClientError as exc:
            exc.add_note(f"already queued by this batch: {task_ids}")
            raise
        return task_ids

    def get(self, task_id: str) -> Task:
        """The task's current state, without waiting."""
        return Task.from_json(_checked(self._send(self._get_call(task_id))))

    def wait(
        self,
        task_id: str,
        *,
        timeout: float | None = 300.0,
        long_poll: float = LONG_POLL_SECONDS,
        on_update: Callable[[Task], None] | None = None,
    ) -> Task:
        """Wait until the task is terminal and return it, whatever its status.

        ``timeout=None`` waits for ever; otherwise `ResultTimeoutError` after it (the task
        keeps running). ``on_update`` sees each answer; a shorter ``long_poll`` shows
        intermediate states (pending -> processing) sooner.
        """
        waiter = _Waiter(timeout, long_poll)
        while True:
            call = self._get_call(task_id, waiter.next_wait())
            task = Task.from_json(_checked(self._send(call, waiter.deadline)))
            if on_update is not None:
                on_update(task)
            if task.done:
                return task
            if waiter.expired():
                raise waiter.timed_out(task)
            time.sleep(waiter.pause_before_next())

    def result(self, task_id: str, *, timeout: float | None = 300.0) -> Task:
        """Wait for the task and return it completed (``.counts``), or raise
        `TaskFailedError` / `TaskCancelledError` / `ResultTimeoutError`."""
        return raise_for_task(self.wait(task_id, timeout=timeout))

    def run(
        self,
        circuit: Circuit,
        shots: int = 1024,
        *,
        seed: int | None = None,
        timeout: float | None = 300.0,
    ) -> Task:
        """`submit` then `result`: the completed task, with its ``counts``."""
        return self.result(self.submit(circuit, shots, seed=seed), timeout=timeout)

    def cancel(self, task_id: str) -> Task:
        """Cancel a pending or running task; `ConflictError` if it already finished."""
        return Task.from_json(_checked(self._send(_Call("DELETE", _task_path(task_id)))))

    def histogram_svg(self, task_id: str) -> str:
        """The completed task's counts as an SVG bar chart (for notebooks and issues)."""
        response = self._send(_Call("GET", _task_path(task_id, "/histogram.svg")))
        if not response.is_success:
            raise _error(response)
        return response.text

    def health(self) -> dict[str, Any]:
        """``GET /health``'s answer, healthy or not; never retried (it is a probe)."""
        response = self._send(_Call("GET", "/health", retry=False))
        body = _json(response)
        if isinstance(body, dict) and "status" in body:
            return body
        raise _error(response)


class AsyncClient(_Base):
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

    async def _send(self, call: _Call, deadline: float | None = None) -> httpx.Response:
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
            if isinstance(outcome, httpx.Response) and not _retryable(call, outcome):
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
        seed: int | None = None,
        memory: bool = False,
        idempotency_key: str | None = None,
    ) -> str:
        """See `Client.submit`."""
        call = self._submit_call(circuit, shots, seed, memory, idempotency_key)
        return str(_checked(await self._send(call))["task_id"])

    async def submit_batch(
        self, circuits: Iterable[Circuit], shots: int = 1024, *, seed: int | None = None
    ) -> list[str]:
        """See `Client.submit_batch`."""
        items = list(circuits)
        if not items:
            return []
        response = await self._send(self._batch_call(items, shots, seed))
        if not _batch_unsupported(response):
            return [str(t) for t in _checked(response)["task_ids"]]
        task_ids: list[str] = []
        try:
            for circuit in items:
                task_ids.append(await self.submit(circuit, shots, seed=seed))
        except QmillClientError as exc:
            exc.add_note(f"already queued by this batch: {task_ids}")
            raise
        return task_ids

    async def get(self, task_id: str) -> Task:
        """See `Client.get`."""
        return Task.from_json(_checked(await self._send(self._get_call(task_id))))

    async def wait(
        self,
        task_id: str,
        *,
        timeout: float | None = 300.0,
        long_poll: float = LONG_POLL_SECONDS,
        on_update: Callable[[Task], None] | None = None,
    ) -> Task:
        """See `Client.wait`."""
        waiter = _Waiter(timeout, long_poll)
        while True:
            call = self._get_call(task_id, waiter.next_wait())
            task = Task.from_json(_checked(await self._send(call, waiter.deadline)))
            if on_update is not None:
                on_update(task)
            if task.done:
                return task
            if waiter.expired():
                raise waiter.timed_out(task)
            await asyncio.sleep(waiter.pause_before_next())

    async def result(self, task_id: str, *, timeout: float | None = 300.0) -> Task:
        """See `Client.result`."""
        return raise_for_task(await self.wait(task_id, timeout=timeout))

    async def run(
        self,
        circuit: Circuit,
        shots: int = 1024,
        *,
        seed: int | None = None,
        timeout: float | None = 300.0,
    ) -> Task:
        """See `Client.run`."""
        return await self.result(await self.submit(circuit, shots, seed=seed), timeout=timeout)

    async def cancel(self, task_id: str) -> Task:
        """See `Client.cancel`."""
        response = await self._send(_Call("DELETE", _task_path(task_id)))
        return Task.from_json(_checked(response))

    async def histogram_svg(self, task_id: str) -> str:
        """See `Client.histogram_svg`."""
        response = await self._send(_Call("GET", _task_path(task_id, "/histogram.svg")))
        if not response.is_success:
            raise _error(response)
        return response.text

    async def health(self) -> dict[str, Any]:
        """See `Client.health`."""
        response = await self._send(_Call("GET", "/health", retry=False))
        body = _json(response)
        if isinstance(body, dict) and "status" in body:
            return body
        raise _error(response)
