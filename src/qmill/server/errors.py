"""qmill's exceptions: one root, a short tree, one place that maps them to HTTP.

    QmillError
     ├── ConfigError               bad setting at start-up (never reaches HTTP)
     ├── RequestError              the caller's fault                    -> 4xx
     │    ├── InvalidRequest        malformed body, bad field              -> 422
     │    ├── InvalidCircuit        QASM that does not parse (line, col)   -> 400
     │    ├── LimitExceeded         valid, but over a configured limit     -> 422
     │    ├── PayloadTooLarge       body over [limits] max_body_bytes      -> 413
     │    ├── Unauthorized          missing or unknown API key             -> 401
     │    ├── RateLimited           over the key's rate or in-flight cap   -> 429 + Retry-After
     │    ├── IdempotencyConflict   key reused with another body           -> 422
     │    ├── IdempotencyInProgress the key's first request still running  -> 409 + Retry-After
     │    ├── TaskNotFound          unknown (or expired) task id           -> 404
     │    ├── TaskConflict          e.g. cancelling a finished task        -> 409
     │    └── MethodNotAllowed      wrong verb on a known path             -> 405
     └── DependencyUnavailable     NATS or Redis down or too slow          -> 503 + Retry-After
          └── SimulationError       the simulator failed on a task (worker side only)

`http_status` is the only place that knows status codes.
"""

from __future__ import annotations


class QmillError(Exception):
    """Root of every error qmill raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(QmillError):
    """A setting is missing or invalid; the message names the key."""


class RequestError(QmillError):
    """The request cannot be served as sent; retrying it unchanged will not help."""

    # Which task of a batch the error is about (its position in ``tasks``), else None.
    index: int | None = None

    def in_batch(self, index: int) -> None:
        """Say that this error is about ``tasks[index]`` of a batch: the index becomes an
        attribute (the HTTP body's ``index``) and leads the message."""
        self.index = index
        self.message = f"tasks[{index}]: {self.message}"
        self.args = (self.message,)


class InvalidRequest(RequestError):
    def __init__(self, message: str, detail: object | None = None) -> None:
        super().__init__(message)
        # Structured detail (pydantic's error list) when there is one, else the message.
        self.detail = detail if detail is not None else message

    def in_batch(self, index: int) -> None:
        plain = self.detail == self.message
        super().in_batch(index)
        if plain:
            self.detail = self.message


class InvalidCircuit(RequestError):
    """The program does not parse; ``line``/``column`` are 1-based when known."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        where = f"line {line}, column {column}: " if line is not None and column is not None else ""
        super().__init__(f"invalid OpenQASM: {where}{message}")
        self.line = line
        self.column = column

    def in_batch(self, index: int) -> None:
        # The lead stays first: the documented 400 body's detail starts with it.
        lead = "invalid OpenQASM: "
        self.index = index
        self.message = self.message.replace(lead, f"{lead}tasks[{index}]: ", 1)
        self.args = (self.message,)


class LimitExceeded(RequestError):
    """A valid request over a configured limit; says which limit and the allowed value."""

    def __init__(self, limit: str, value: object, allowed: object) -> None:
        super().__init__(f"{limit} is {value}, the allowed maximum is {allowed}")
        self.limit = limit
        self.value = value
        self.allowed = allowed


class PayloadTooLarge(RequestError):
    def __init__(self, allowed: int) -> None:
        super().__init__(f"request body is larger than {allowed} bytes")
        self.allowed = allowed


class IdempotencyConflict(RequestError):
    def __init__(self) -> None:
        super().__init__(
            "this Idempotency-Key was already used with a different request body; "
            "use a new key for a new request"
        )


class IdempotencyInProgress(RequestError):
    """The first request with this key has not finished: its task may yet be refused.

    Answering with that task's id now could promise a task that is then withdrawn
    (its publish failed); 409 is what the IETF Idempotency-Key draft prescribes.
    """

    def __init__(self, retry_after: int = 1) -> None:
        super().__init__(
            "a request with this Idempotency-Key is still being processed; retry shortly"
        )
        self.retry_after = retry_after


class Unauthorized(RequestError):
    pass


class RateLimited(RequestError):
    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TaskNotFound(RequestError):
    def __init__(self, what: str = "Task") -> None:
        super().__init__(f"{what} not found")


class TaskConflict(RequestError):
    def __init__(self, status: str) -> None:
        super().__init__(f"the task is already {status}")
        self.status = status


class MethodNotAllowed(RequestError):
    def __init__(self, method: str, allowed: tuple[str, ...]) -> None:
        super().__init__(f"method {method} not allowed here; use {', '.join(allowed)}")
        self.allowed = allowed


class DependencyUnavailable(QmillError):
    """NATS or Redis could not be reached in time; the caller should retry later."""

    def __init__(self, service: str, message: str, retry_after: int = 1) -> None:
        super().__init__(f"{service} unavailable: {message}")
        self.service = service
        self.retry_after = retry_after


class SimulationError(QmillError):
    """The simulator rejected or crashed on a task. ``retryable`` if another attempt may work."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


def http_status(exc: QmillError) -> int:
    """The HTTP status for an error; 500 is reserved for bugs and never returned for these."""
    statuses: list[tuple[type[QmillError], int]] = [
        (InvalidCircuit, 400),
        (Unauthorized, 401),
        (RateLimited, 429),
        (TaskNotFound, 404),
        (MethodNotAllowed, 405),
        (TaskConflict, 409),
        (IdempotencyInProgress, 409),
        (PayloadTooLarge, 413),
        (InvalidRequest, 422),
        (IdempotencyConflict, 422),
        (LimitExceeded, 422),
        (DependencyUnavailable, 503),
    ]
    for cls, status in statuses:
        if isinstance(exc, cls):
            return status
    return 400 if isinstance(exc, RequestError) else 503
