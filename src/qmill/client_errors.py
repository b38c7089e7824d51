"""The client's errors: typed after the API's answers, so callers catch what they can act on.

`error_from_response` is the one place an HTTP error answer becomes one of these.
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qmill.client_batches import Batch
    from qmill.client_core import Task

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
#    ├── ResultTimeoutError           still running when the caller's timeout ran out
#    └── BatchTimeoutError            a batch not finished when the caller's timeout ran out


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

    @property
    def index(self) -> int | None:
        """From ``submit_batch``: the position of the circuit the error is about."""
        return _int_or_none(self.body, "index")


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


class BatchTimeoutError(QmillClientError, TimeoutError):
    """The caller's timeout ran out before every task of the batch finished (they keep
    running); ``batch`` is the batch as last read."""

    def __init__(self, batch: Batch, waited: float) -> None:
        finished = sum(1 for task in batch.tasks if task.done)
        super().__init__(
            f"batch {batch.batch_id}: {finished} of {len(batch.tasks)} tasks finished after "
            f"{waited:.1f} s; the others keep running, ask again later"
        )
        self.batch = batch


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
