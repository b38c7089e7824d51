"""qmill's exceptions: one root, a short tree; each class carries its HTTP answer.

    QmillError
     ├── ConfigError               bad setting at start-up (never reaches HTTP)
     ├── RequestError              the caller's fault                    -> 4xx
     │    ├── InvalidRequest        malformed body, bad field              -> 422
     │    ├── InvalidCircuit        QASM that does not parse (line, col)   -> 400
     │    ├── LimitExceeded         valid, but over a configured limit     -> 422
     │    │    └── TooLargeToDraw   a circuit over the diagram's bounds    -> 422
     │    ├── PayloadTooLarge       body over [limits] max_body_bytes      -> 413
     │    ├── UnsupportedMediaType  a body that is not application/json    -> 415
     │    ├── MisdirectedRequest    Host not in [server] allowed_hosts     -> 421
     │    ├── ForeignOrigin         a cross-site POST or DELETE            -> 403
     │    ├── HeadersTooLarge       head over [server] max_header_bytes    -> 431
     │    ├── RequestTimeout        body stalled [server] client_timeout   -> 408
     │    ├── Unauthorized          missing or unknown API key             -> 401
     │    ├── RateLimited           over the key's rate or in-flight cap   -> 429 + Retry-After
     │    │    └── StorageQuotaExceeded  over the key's stored bytes      -> 429 + Retry-After
     │    ├── IdempotencyConflict   key reused with another body           -> 422
     │    ├── IdempotencyInProgress the key's first request still running  -> 409 + Retry-After
     │    ├── TaskNotFound          unknown (or expired) task id           -> 404
     │    ├── TaskConflict          e.g. cancelling a finished task        -> 409
     │    └── MethodNotAllowed      wrong verb on a known path             -> 405
     └── DependencyUnavailable     NATS or Redis down, too slow or full    -> 503 + Retry-After
          └── StoreFull             Redis at maxmemory, refusing writes    -> 503 + Retry-After

Like Starlette's ``HTTPException``, an error carries its answer: ``status_code`` is a
class attribute (a subclass inherits its parent's) and ``headers`` the response headers
it needs. `qmill.server.http.error_response` reads both and knows no class by name, so
a new error is mapped where it is declared. 500 is never declared: it is kept for bugs.
The worker's own errors (a simulation that failed or timed out) never reach HTTP; they
live in ``qmill_worker.errors``, under the same root.
"""

from __future__ import annotations


class QmillError(Exception):
    """Root of every error qmill raises on purpose."""

    # An error that is not the caller's fault and names no better status: retry later.
    status_code: int = 503
    # Whole seconds to wait before retrying, for errors that are over with time; sent as
    # Retry-After so clients (and qmill's own) back off by what the server knows.
    retry_after: int | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        # The response body's ``detail``: the message, or something more structured.
        self.detail: object = message

    @property
    def headers(self) -> dict[str, str]:
        """Headers the response must carry: Retry-After when the error has one."""
        return {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}


class ConfigError(QmillError):
    """A setting is missing or invalid; the message names the key."""


class RequestError(QmillError):
    """The request cannot be served as sent; retrying it unchanged will not help."""

    status_code = 400

    # Which task of a batch the error is about (its position in ``tasks``), else None.
    index: int | None = None

    def in_batch(self, index: int) -> None:
        """Say that this error is about ``tasks[index]`` of a batch: the index becomes an
        attribute (the HTTP body's ``index``) and leads the message."""
        self._relabel(index, f"tasks[{index}]: {self.message}")

    def _relabel(self, index: int, message: str) -> None:
        if self.detail == self.message:  # a plain detail follows the message
            self.detail = message
        self.index = index
        self.message = message
        self.args = (message,)


class InvalidRequest(RequestError):
    status_code = 422

    def __init__(
        self, message: str, detail: object | None = None, allowed: object | None = None
    ) -> None:
        super().__init__(message)
        # Structured detail (pydantic's error list) when there is one.
        if detail is not None:
            self.detail = detail
        # What would have been accepted (an unknown field's list of fields).
        self.allowed = allowed


class InvalidCircuit(RequestError):
    """The program does not parse; ``line``/``column`` are 1-based when known."""

    status_code = 400

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        where = f"line {line}, column {column}: " if line is not None and column is not None else ""
        super().__init__(f"invalid OpenQASM: {where}{message}")
        self.line = line
        self.column = column

    def in_batch(self, index: int) -> None:
        # The lead stays first: the documented 400 body's detail starts with it.
        lead = "invalid OpenQASM: "
        self._relabel(index, self.message.replace(lead, f"{lead}tasks[{index}]: ", 1))


class LimitExceeded(RequestError):
    """A valid request over a configured limit; says which limit and the allowed value."""

    status_code = 422

    def __init__(self, limit: str, value: object, allowed: object) -> None:
        super().__init__(f"{limit} is {value}, the allowed maximum is {allowed}")
        self.limit = limit
        self.value = value
        self.allowed = allowed


class TooLargeToDraw(LimitExceeded):
    """A task's circuit has more wires or operations than ``GET /tasks/{id}/diagram.txt``
    draws (``[limits] max_diagram_wires``, ``max_diagram_operations``)."""

    def __init__(self, limit: str, value: int, allowed: int) -> None:
        super().__init__(limit, value, allowed)
        self.message = (
            f"the circuit is too large to draw: {value} {limit}, at most {allowed} are drawn"
        )
        self.detail = self.message
        self.args = (self.message,)


class PayloadTooLarge(RequestError):
    status_code = 413

    def __init__(self, allowed: int) -> None:
        super().__init__(f"request body is larger than {allowed} bytes")
        self.allowed = allowed


class UnsupportedMediaType(RequestError):
    """A body that is not declared JSON. Refused, not parsed anyway: a web page can send
    ``text/plain`` (or no type) cross-site without a CORS preflight, ``application/json``
    it cannot, so this is what keeps other sites from submitting tasks."""

    status_code = 415

    def __init__(self, got: str | None, accepted: str) -> None:
        sent = "no Content-Type" if got is None else f"Content-Type {got[:100]!r}"
        super().__init__(f"the request body must be {accepted}; got {sent}")
        self.allowed = [accepted]


class MisdirectedRequest(RequestError):
    """The Host header names no host this deployment serves (a DNS-rebinding page, or a
    proxy that is not ours): 421, as RFC 9110 section 15.5.20 has it."""

    status_code = 421

    def __init__(self, host: str) -> None:
        super().__init__(
            f"this server does not serve host {host[:100]!r}; see [server] allowed_hosts"
        )


class ForeignOrigin(RequestError):
    """A state-changing request that a page of another site sent (its Origin header)."""

    status_code = 403

    def __init__(self, origin: str) -> None:
        super().__init__(
            f"requests from origin {origin[:100]!r} may not change state here; "
            "see [server] allowed_hosts"
        )


class HeadersTooLarge(RequestError):
    """The request line and headers are over ``[server] max_header_bytes``; answered by the
    gateway, which then closes the connection."""

    status_code = 431

    def __init__(self, allowed: int) -> None:
        super().__init__(f"request line and headers are larger than {allowed} bytes")
        self.allowed = allowed


class RequestTimeout(RequestError):
    """The client stopped sending its body for ``[server] client_timeout_seconds``;
    answered by the gateway, which then closes the connection."""

    status_code = 408

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no more of the request body arrived within {seconds:g} s")


class IdempotencyConflict(RequestError):
    status_code = 422

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

    status_code = 409

    def __init__(self, retry_after: int = 1) -> None:
        super().__init__(
            "a request with this Idempotency-Key is still being processed; retry shortly"
        )
        self.retry_after = retry_after


class Unauthorized(RequestError):
    status_code = 401

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="qmill"'}


class RateLimited(RequestError):
    status_code = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StorageQuotaExceeded(RateLimited):
    """The tenant's stored task records would take more than its quota.

    A 429 like the other per-key limits: it passes with time, as records expire, and
    ``retry_after`` says when enough will have (a client whose patience is shorter gives
    up at once instead of waiting). ``limit``/``value``/``allowed`` are in bytes.
    """

    def __init__(self, value: int, allowed: int, retry_after: int) -> None:
        super().__init__(
            f"stored results of this key would take {value} bytes, the quota is {allowed} "
            f"([redis] tenant_storage_mb); enough expires in {retry_after} s",
            retry_after,
        )
        self.limit = "stored bytes"
        self.value = value
        self.allowed = allowed


class TaskNotFound(RequestError):
    status_code = 404

    def __init__(self, what: str = "Task") -> None:
        super().__init__(f"{what} not found")


class TaskConflict(RequestError):
    status_code = 409

    def __init__(self, status: str) -> None:
        super().__init__(f"the task is already {status}")
        self.status = status


class MethodNotAllowed(RequestError):
    status_code = 405

    def __init__(self, method: str, allowed: tuple[str, ...]) -> None:
        super().__init__(f"method {method} not allowed here; use {', '.join(allowed)}")
        self.allowed = allowed

    @property
    def headers(self) -> dict[str, str]:
        return {"Allow": ", ".join(self.allowed)}


class DependencyUnavailable(QmillError):
    """NATS or Redis could not be reached in time; the caller should retry later."""

    status_code = 503

    def __init__(self, service: str, message: str, retry_after: int = 1) -> None:
        super().__init__(f"{service} unavailable: {message}")
        self.service = service
        self.retry_after = retry_after


# Redis full stays full until records expire (days): no client should retry soon.
STORE_FULL_RETRY_AFTER_SECONDS = 60


class StoreFull(DependencyUnavailable):
    """Redis refused a write: it is at its maxmemory and evicts nothing (noeviction).

    Still a 503: the service cannot take the request now and the caller is not at fault.
    """

    def __init__(self) -> None:
        super().__init__(
            "redis",
            "the store is full ([redis] max_memory_mb reached; records expire after "
            "[redis] result_ttl_seconds): nothing was recorded",
            retry_after=STORE_FULL_RETRY_AFTER_SECONDS,
        )
