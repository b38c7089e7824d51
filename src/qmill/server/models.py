"""Wire models: what crosses HTTP, NATS and Redis. JSON only, never pickle.

Readers ignore unknown fields, so a function and a worker of different versions can
run side by side during a rollout.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictStr


class TaskStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})


class _Open(BaseModel):
    model_config = ConfigDict(extra="ignore")


def _json_integer(value: object) -> object:
    """JSON's integers, as JSON Schema (and so openapi.json) defines them: ``5`` and
    ``5.0`` are the same integer, ``"5"``, ``true`` and ``5.5`` are not. pydantic's lax
    mode accepted ``"5"`` and ``true`` (schemathesis' negative data found it)."""
    if value is None:
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be an integer")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("must be an integer")
        return int(value)
    return value


JsonInt = Annotated[int, BeforeValidator(_json_integer)]


class SubmitRequest(_Open):
    """``POST /tasks`` body, as the seed's clients send it.

    Types are JSON's, strictly: a string is not a number and ``0`` is not ``false``, so
    a request means what openapi.json says it means. Unknown fields are ignored.
    """

    quantum_circuit: StrictStr
    shots: JsonInt = 1024
    # Fixes the simulator's random seed, so the same task gives the same counts.
    seed: Annotated[int | None, BeforeValidator(_json_integer)] = Field(
        default=None, ge=0, le=2**63 - 1
    )
    # Also return every shot's outcome, in order (``memory`` in the task view).
    memory: StrictBool = False


class BatchRequest(_Open):
    """``POST /batches``: several tasks in one request, validated all or nothing."""

    tasks: list[SubmitRequest] = Field(min_length=1)


class BatchResponse(_Open):
    batch_id: str
    task_ids: list[str]


class SubmitResponse(_Open):
    task_id: str
    status: TaskStatus = TaskStatus.PENDING
    # True when an Idempotency-Key matched an earlier submit (sent as a header, not body).
    replayed: bool = Field(default=False, exclude=True)


class TaskMessage(_Open):
    """What goes on the bus: the id, and the memory its simulation state needs so a
    worker can budget memory before it takes the task. The circuit lives in Redis."""

    task_id: str
    state_bytes: int = 0


class TaskView(_Open):
    """``GET /tasks/{id}``: the seed's fields first, then details users ask for."""

    id: str
    task_id: str
    status: TaskStatus
    shots: int
    result: dict[str, int] | None = None
    error: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    # Details (None until known).
    qubits: int | None = None
    depth: int | None = None
    method: str | None = None
    execution_seconds: float | None = None
    queue_seconds: float | None = None
    worker_id: str | None = None
    attempts: int = 0
    seed: int | None = None
    # The tenant (API key) that submitted it; never sent to clients.
    owner: str | None = Field(default=None, exclude=True)
    # Per-shot outcomes, when submitted with ``memory: true``.
    memory: list[str] | None = None
    # Echoed only with ?include=circuit.
    quantum_circuit: str | None = Field(default=None)

    def to_json(self, include_circuit: bool = False) -> dict[str, Any]:
        exclude = None if include_circuit else {"quantum_circuit"}
        return self.model_dump(mode="json", exclude=exclude)


class HealthView(_Open):
    status: str
    services: dict[str, bool]


def utcnow() -> datetime:
    return datetime.now(UTC)
