"""What the API answers about tasks: a task, a batch, a listing, and the service's health."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pydantic import (
    ConfigDict,
    Field,
    PrivateAttr,
)

from qmill.server.models.common import (
    OUTCOME_PATTERN,
    AnswerModel,
    TaskStatus,
    Uuid,
)
from qmill.server.workload.spec import (
    EvsMethod,
    FloatPrecision,
    Noise,
)


class BatchResponse(AnswerModel):
    """A batch accepted and queued: its id, and its tasks' ids in submission order."""

    batch_id: Uuid
    task_ids: list[Uuid]
    # True when an Idempotency-Key matched an earlier batch (sent as a header, not body).
    replayed: bool = Field(default=False, exclude=True)


class SubmitResponse(AnswerModel):
    """A task accepted and queued."""

    task_id: Uuid
    status: TaskStatus = TaskStatus.PENDING
    # True when an Idempotency-Key matched an earlier submit (sent as a header, not body).
    replayed: bool = Field(default=False, exclude=True)


def _not_negative() -> Any:
    """An optional measurement, documented as never negative."""
    return Field(default=None, json_schema_extra={"minimum": 0})


def _circuit_optional(schema: dict[str, Any]) -> None:
    # Sent only when asked for, so it is the one field a task view may lack.
    schema["required"].remove("quantum_circuit")


class SampleResult(AnswerModel):
    """One binding's answer in a sampling sweep."""

    counts: dict[str, int]
    memory: list[str] | None = None


class TaskView(AnswerModel):
    """A task: its status and, once completed, its counts (or expectation values) and how
    they were made."""

    model_config = ConfigDict(json_schema_extra=_circuit_optional)

    # The first version of the API's fields first, then details users ask for.
    id: Uuid = Field(description="Same as task_id (the API's first name for it).")
    task_id: Uuid
    status: TaskStatus
    shots: int = Field(json_schema_extra={"minimum": 1})
    result: dict[str, int] | None = Field(
        default=None,
        description="Counts per outcome once completed (registers separated by spaces); "
        "null for a sweep (see `results`) or expectation values (see `evs`).",
        json_schema_extra={
            "propertyNames": {"pattern": OUTCOME_PATTERN},
            "additionalProperties": {"type": "integer", "minimum": 0},
        },
    )
    error: str | None = Field(default=None, description="Why the task failed (or was cancelled).")
    created_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    # Details (None until known).
    qubits: int | None = _not_negative()
    depth: int | None = _not_negative()
    method: str | None = Field(
        default=None, description="Aer's simulation method, e.g. `statevector` or `stabilizer`."
    )
    execution_seconds: float | None = _not_negative()
    queue_seconds: float | None = _not_negative()
    worker_id: str | None = None
    attempts: int = Field(default=0, json_schema_extra={"minimum": 0})
    seed: int | None = None
    batch_id: Uuid | None = Field(
        default=None, description="The batch it was submitted in; null if submitted alone."
    )
    tags: dict[str, str] = Field(default_factory=dict, description="As submitted ({} if none).")
    # The tenant (API key) that submitted it; never sent to clients.
    owner: str | None = Field(default=None, exclude=True)
    memory: list[str] | None = Field(
        default=None,
        description="Every shot's outcome in order, when submitted with `memory: true`.",
        json_schema_extra={"items": {"type": "string", "pattern": OUTCOME_PATTERN}},
    )
    quantum_circuit: str | None = Field(default=None, description="Only with `?include=circuit`.")
    # Sweeps and expectation values (null for a task that asked for neither).
    shape: list[int] = Field(
        default_factory=list,
        description="The shape of the answer: `[]` for one circuit; a sweep's bindings "
        "shape; with observables, their shape broadcast with the parameters'.",
        json_schema_extra={"items": {"type": "integer", "minimum": 1}},
    )
    results: list[Any] | None = Field(
        default=None,
        description="A sampling sweep's answer (`shape` not `[]`): nested arrays of that "
        'shape whose leaves are `{"counts": {...}, "memory": [...] or null}`, one per '
        "binding, in order.",
    )
    evs: float | list[Any] | None = Field(
        default=None,
        description="Expectation values: a number when `shape` is `[]`, else nested arrays "
        "of that shape.",
    )
    stds: float | list[Any] | None = Field(
        default=None,
        description="Standard errors of `evs`, same shape: 0 when exact.",
        json_schema_extra={"minimum": 0},
    )
    evs_method: EvsMethod | None = Field(
        default=None,
        description="How `evs` were made: `exact` (from the simulator's state) or "
        "`normal_approximation` (exact plus normal noise of standard deviation `precision`).",
    )
    precision: FloatPrecision | float | None = Field(default=None, description="As submitted.")
    noise: Noise | None = Field(default=None, description="As submitted.")

    # The answer as stored compressed (`qmill.server.store.answers.Packed`), when read
    # with ``packed=True``: the answer's fields above are then None, and the result
    # function sends it without decompressing it. Never part of the JSON.
    _packed: Any = PrivateAttr(default=None)

    @property
    def packed(self) -> Any:
        return self._packed

    @packed.setter
    def packed(self, value: Any) -> None:
        self._packed = value

    def to_json(self, include_circuit: bool = False) -> dict[str, Any]:
        exclude = None if include_circuit else {"quantum_circuit"}
        return self.model_dump(mode="json", exclude=exclude)


class StatusCounts(AnswerModel):
    """How many tasks of a batch are in each status."""

    pending: int = Field(default=0, json_schema_extra={"minimum": 0})
    processing: int = Field(default=0, json_schema_extra={"minimum": 0})
    completed: int = Field(default=0, json_schema_extra={"minimum": 0})
    failed: int = Field(default=0, json_schema_extra={"minimum": 0})
    cancelled: int = Field(default=0, json_schema_extra={"minimum": 0})

    @classmethod
    def of(cls, statuses: Iterable[TaskStatus]) -> StatusCounts:
        return cls(**Counter(status.value for status in statuses))


class BatchView(AnswerModel):
    """Every task of a batch, in submission order, and how many are in each status."""

    batch_id: str
    counts: StatusCounts = Field(default_factory=StatusCounts)
    done: bool = Field(
        default=False,
        description="Every task is terminal (`completed`, `failed` or `cancelled`): the "
        "batch will not change again.",
    )
    tasks: list[TaskView]

    @classmethod
    def of(cls, batch_id: str, tasks: list[TaskView]) -> BatchView:
        counts = StatusCounts.of(task.status for task in tasks)
        done = all(task.status.terminal for task in tasks)
        return cls(batch_id=batch_id, counts=counts, done=done, tasks=tasks)


class TaskSummary(AnswerModel):
    """A task as `GET /tasks` lists it: its state and labels, never its answer."""

    task_id: Uuid
    status: TaskStatus
    created_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    shots: int = Field(json_schema_extra={"minimum": 1})
    qubits: int | None = _not_negative()
    method: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    batch_id: Uuid | None = None
    error: str | None = None


class TaskList(AnswerModel):
    """One page of the caller's tasks, newest first."""

    tasks: list[TaskSummary]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null when there is none."
    )


class HealthView(AnswerModel):
    """Whether each dependency answered; `healthy` when all did."""

    status: str = Field(json_schema_extra={"enum": ["healthy", "unhealthy"]})
    services: dict[str, bool] = Field(
        json_schema_extra={
            "required": ["nats", "redis"],
            "properties": {"nats": {"type": "boolean"}, "redis": {"type": "boolean"}},
        }
    )
