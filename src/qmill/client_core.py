"""What `Client` and `AsyncClient` share: the task model, retry policy and request building.

Building requests and reading answers is the same for both clients; only the I/O and
the sleeping differ (`qmill.client`). Importing this module does not import qiskit: a
circuit object is converted with ``qiskit.qasm3`` only when one is given.
"""

from __future__ import annotations

import math
import os
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

if TYPE_CHECKING:
    from qmill.client_batches import Batch

from qmill.client_body import Circuit, TaskOptions, task_body
from qmill.client_errors import (
    APIError,
    BatchTimeoutError,
    QmillClientError,
    ResultTimeoutError,
    ServerUnreachableError,
    TaskCancelledError,
    TaskFailedError,
    error_from_response,
)

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


# --- Retries ---------------------------------------------------------------------------------


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
    """A task as ``GET /tasks/{id}`` describes it. ``counts`` is set once it completed.

    A plain dataclass, so calling the service needs only httpx. Its fields are the
    server's task view (``qmill.server.models.TaskView``) under the same names, except
    where ``metadata["wire"]`` names the JSON field; tests/unit/test_task_model.py
    compares the two so they cannot drift apart.
    """

    task_id: str
    status: str
    shots: int
    # "result" on the wire: the counts are what a caller of this client is after.
    counts: dict[str, int] | None = field(default=None, metadata={"wire": "result"})
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
    # Sweeps and expectation values (see `TaskOptions`): the answer's shape, a sampling
    # sweep's per-binding {"counts", "memory"} as nested lists of that shape, and the
    # expectation values with their standard errors (a number when the shape is []).
    shape: list[int] = field(default_factory=list)
    results: list[Any] | None = None
    evs: float | list[Any] | None = None
    stds: float | list[Any] | None = None
    evs_method: str | None = None
    precision: str | float | None = None
    noise: dict[str, Any] | None = None
    # The batch it was submitted in (None: submitted alone).
    batch_id: str | None = None
    # Its tags, as submitted ({} if none).
    tags: dict[str, str] = field(default_factory=dict)
    # The whole JSON answer, so fields this client does not know yet stay reachable.
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Task:
        """Each field from its wire name; the few that need it converted (`_READERS`)."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name != "raw":
                raw = body.get(f.metadata.get("wire", f.name))
                values[f.name] = _READERS[f.name](raw) if f.name in _READERS else raw
        values["task_id"] = str(body.get("task_id") or body.get("id"))
        return cls(**values, raw=dict(body))

    @property
    def done(self) -> bool:
        """Terminal: completed, failed or cancelled. It will not change again."""
        return self.status in TERMINAL_STATUSES


# Fields whose JSON value is converted (or defaulted) on the way in.
_READERS: dict[str, Callable[[Any], Any]] = {
    "status": str,
    "shots": lambda v: int(v or 0),
    "attempts": lambda v: int(v or 0),
    "created_at": _when,
    "started_at": _when,
    "completed_at": _when,
    "shape": lambda v: list(v or []),
    "tags": lambda v: dict(v or {}),
}


def raise_for_task(task: Task) -> Task:
    """The task if it completed; else `TaskFailedError` / `TaskCancelledError`."""
    if task.status == "cancelled":
        raise TaskCancelledError(task)
    if task.status != "completed":
        raise TaskFailedError(task)
    return task


# --- Shared request building -----------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One API request, built the same way for both clients."""

    method: str
    path: str
    json: Any = None
    params: dict[str, str] | httpx.QueryParams | None = None
    headers: dict[str, str] | None = None
    # Seconds the server may take on purpose (a long-poll), added to the read timeout.
    hold: float = 0.0
    # Safe to send again after a connection broke mid-request (the server may have
    # acted on it): reads, deletes and keyed submits are; an unkeyed POST is not.
    replayable: bool = True
    retry: bool = True


def task_path(task_id: str, suffix: str = "") -> str:
    # Quoted as one segment: an "id" like "../health" must not reach another endpoint.
    return f"/tasks/{quote(str(task_id), safe='')}{suffix}"


class ClientBase:
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
        circuit: Circuit, shots: int, options: TaskOptions, idempotency_key: str | None
    ) -> Call:
        return Call(
            "POST",
            "/tasks",
            json=task_body(circuit, shots, options),
            headers={"Idempotency-Key": idempotency_key or str(uuid.uuid4())},
        )

    @staticmethod
    def _get_call(task_id: str, wait: float = 0.0) -> Call:
        params = {"wait": f"{wait:g}"} if wait > 0 else None
        return Call("GET", task_path(task_id), params=params, hold=wait)

    def _timeout_for(self, call: Call) -> httpx.Timeout:
        return httpx.Timeout(self.timeout + call.hold, connect=min(self.timeout, 5.0))

    def _after_failure(
        self,
        call: Call,
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
            api_error = response_error(outcome)
            delay = self.retry_policy.delay(attempt, api_error.retry_after)
            error = api_error
        if delay is not None and deadline is not None and time.monotonic() + delay > deadline:
            delay = None
        return delay, error


def read_json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def response_error(response: httpx.Response) -> APIError:
    return error_from_response(
        response.status_code, read_json(response), response.headers, response.text
    )


def checked(response: httpx.Response) -> Any:
    """The JSON of a 2xx answer; the typed error for anything else."""
    if not response.is_success:
        raise response_error(response)
    body = read_json(response)
    if body is None:
        raise APIError(
            f"HTTP {response.status_code}: expected JSON, got {response.text[:80]!r}",
            status=response.status_code,
        )
    return body


def retryable(call: Call, response: httpx.Response) -> bool:
    return call.retry and response.status_code in RETRYABLE_STATUSES


def batch_unsupported(response: httpx.Response) -> bool:
    """A server without ``POST /batches`` (older deployment): fall back to single submits."""
    return response.status_code in (404, 405)


class Waiter:
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

    def batch_timed_out(self, batch: Batch) -> BatchTimeoutError:
        return BatchTimeoutError(batch, time.monotonic() - self.started)
