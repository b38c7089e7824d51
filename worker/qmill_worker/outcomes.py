"""One delivery of a task as the worker handles it, and what became of it.

Handling a delivery decides an `Outcome`; `Worker._settle` is the one place that acts
on it: store, then ack; or hand the message back. Keeping the decision apart from the
action is what makes "ack only after the outcome is in Redis" hold on every path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nats.aio.msg import Msg

from qmill.server import logs
from qmill.server.constants import REQUEST_ID_HEADER
from qmill.server.models import TaskMessage
from qmill_worker.errors import FailureReason
from qmill_worker.simulator import SimResult


@dataclass(slots=True)
class TaskContext:
    """One delivery of one task: the message to settle, and what the handling needs to know.

    Not frozen: ``owner`` is only known once the task is started, and the outcome is
    stored under it (it frees the owner's in-flight place).
    """

    msg: Msg
    task_id: str
    worker_id: str
    # Simulation state the task needs; it waits for room in the worker's memory budget.
    state_bytes: int
    max_attempts: int
    owner: str | None = None
    # The X-Request-ID of the request that submitted it (from the message's headers).
    request_id: str | None = None
    # The task's attempt that this delivery runs (1 the first time), as the start
    # transition counted it in Redis; 0 until this delivery started the task. Not
    # JetStream's delivery count: a worker that stops hands its tasks back (`HandedBack`),
    # and those deliveries are not attempts (``WorkerTasks.release`` takes them back).
    attempt: int = 0

    @classmethod
    def parse(cls, msg: Msg, worker_id: str, max_attempts: int) -> TaskContext:
        """The context of a delivery; ValueError if the message is not a task message."""
        message = TaskMessage.model_validate_json(msg.data)
        return cls(
            msg=msg,
            task_id=message.task_id,
            worker_id=worker_id,
            state_bytes=message.state_bytes,
            max_attempts=max_attempts,
            request_id=logs.valid_request_id((msg.headers or {}).get(REQUEST_ID_HEADER)),
        )

    @property
    def last_attempt(self) -> bool:
        """A retryable failure now is final: no attempt is left to retry it."""
        return self.attempt >= self.max_attempts

    @property
    def started(self) -> bool:
        """This delivery moved the task to `processing` (and counted an attempt)."""
        return self.attempt > 0

    @property
    def attempts_spent(self) -> bool:
        """Every attempt was made and none finished (each worker crashed or stalled).

        The consumer redelivers without bound (``max_deliver`` -1: a hand-back is not an
        attempt), so the worker is what ends the task: this delivery only marks it
        failed rather than leave it `processing` forever.
        """
        return self.attempt > self.max_attempts

    @property
    def log_extra(self) -> dict[str, Any]:
        """The structured fields every log line about this task carries."""
        extra: dict[str, Any] = {"task_id": self.task_id, "worker_id": self.worker_id}
        if self.owner is not None:
            extra["owner"] = self.owner
        if self.request_id is not None:
            extra["request_id"] = self.request_id
        return extra


@dataclass(frozen=True, slots=True)
class Completed:
    """Simulated: store the result, then ack."""

    result: SimResult
    queue_seconds: float


@dataclass(frozen=True, slots=True)
class Failed:
    """Failed for good: store ``message`` as the task's error, then ack.

    ``reason`` is the ``qmill_tasks_failed_total`` label; ``message`` is what the user reads.
    """

    reason: FailureReason
    message: str
    queue_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class Released:
    """Nothing stored: hand the message back to JetStream (nak) for another delivery.
    The attempt counts (a retryable failure, an error, an outcome Redis could not take);
    a stopping worker's hand-back is `HandedBack`.

    ``delay``: seconds before it is delivered again (None: at once). ``retry``: the
    failure the attempt ended with, counted as a retry; None when no attempt ran.
    """

    delay: float | None = None
    retry: FailureReason | None = None


@dataclass(frozen=True, slots=True)
class HandedBack:
    """The worker is stopping (scale-in, a platform's termination deadline) before the
    task ended: record the release (the attempt does not count, `WorkerTasks.release`)
    if this delivery started it, then nak it for another worker at once (``delay``:
    only while a pull request of this worker may still be open, see
    `Worker.handback_delay`)."""

    delay: float | None = None


@dataclass(frozen=True, slots=True)
class Settled:
    """Redis already holds the task's final state (a redelivery of a finished task, or
    a task its user cancelled): nothing to store, just ack."""


Outcome = Completed | Failed | Released | HandedBack | Settled
