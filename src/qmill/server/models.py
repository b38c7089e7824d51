"""Wire models: what crosses HTTP, NATS and Redis. JSON only, never pickle.

Readers ignore unknown fields, so a function and a worker of different versions can
run side by side during a rollout.

The models of the HTTP API are also its documentation: the schemas of openapi.json are
generated from them (`qmill.server.openapi`), so docstrings and ``description``s here
are what API users read. Constraints the server guarantees but does not check when it
builds a response (an id is a UUID, counts are not negative) are added to the schema
only (`WithJsonSchema`, ``json_schema_extra``), so a stored record is never refused.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    StrictStr,
    WithJsonSchema,
)
from pydantic.json_schema import SkipJsonSchema

from qmill.server.tags import KEYS_SCHEMA as TAG_KEYS_SCHEMA
from qmill.server.workload.spec import (
    OBSERVABLES_SCHEMA,
    PARAMETERS_SCHEMA,
    EvsMethod,
    FloatPrecision,
    Method,
    Noise,
    Observables,
    Sweep,
    observables_from_wire,
    sweep_from_wire,
)


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


class _Answer(_Open):
    """A response body: every field with a default is still always sent, so the schema
    lists it as required (pydantic would otherwise mark it optional)."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)


Uuid = Annotated[str, WithJsonSchema({"type": "string", "format": "uuid"})]
# A measured outcome: one bit per clbit, registers separated by spaces.
_OUTCOME = "^[01 ]+$"


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


def _sweep(value: object) -> object:
    return value if value is None or isinstance(value, Sweep) else sweep_from_wire(value)


def _observables(value: object) -> object:
    if value is None or isinstance(value, Observables):
        return value
    return observables_from_wire(value)


def _precision(value: object) -> object:
    """``"single"``/``"double"``, or a positive number (a target standard error)."""
    if value is None or isinstance(value, FloatPrecision):
        return value
    if isinstance(value, str):
        try:
            return FloatPrecision(value)
        except ValueError:
            raise ValueError(
                f'must be "single", "double" or a positive number, not {value[:40]!r}'
            ) from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError('must be "single", "double" or a positive number')
    if not math.isfinite(value) or value <= 0 or value > 1e6:
        raise ValueError("a number must be positive and finite (a target standard error)")
    return float(value)


class _Forbid(BaseModel):
    # A public request body: an unknown field is refused, never ignored
    # (`qmill.server.tasks` turns pydantic's error into one that lists the fields).
    model_config = ConfigDict(extra="forbid")


class SubmitRequest(_Forbid):
    """A program to run, and how. Unknown fields are refused (422)."""

    # Types are JSON's, strictly: a string is not a number and ``0`` is not ``false``,
    # so a request means what openapi.json says it means.
    quantum_circuit: StrictStr = Field(
        description="An OpenQASM 3 program (the default when there is no version line) or "
        "an `OPENQASM 2.0;` one. It may include only `stdgates.inc` (3) or `qelib1.inc` (2), "
        "and must measure something unless `observables` are given. Free parameters are "
        "`input float[64] name;` declarations (what `qiskit.qasm3.dumps` writes)."
    )
    # The floor and ceiling are [limits] settings, checked with the other limits (a 422
    # that names the limit); the schema states the floor no setting can go under.
    shots: JsonInt = Field(
        default=1024,
        description="Shots per binding. At most `[limits] max_shots` (100000 by default). "
        "Expectation values do not use them (they are exact, or as precise as `precision`).",
        json_schema_extra={"minimum": 1},
    )
    seed: Annotated[int | None, BeforeValidator(_json_integer)] = Field(
        default=None,
        ge=0,
        le=2**63 - 1,
        description="Fixes the simulator's seed: the same task gives the same counts.",
    )
    memory: StrictBool = Field(
        default=False, description="Also return every shot's outcome, in order."
    )
    parameters: Annotated[
        Sweep | None, BeforeValidator(_sweep), WithJsonSchema(PARAMETERS_SCHEMA)
    ] = None
    observables: Annotated[
        Observables | None, BeforeValidator(_observables), WithJsonSchema(OBSERVABLES_SCHEMA)
    ] = None
    method: Method = Field(
        default=Method.AUTOMATIC,
        description="Aer's simulation method. `automatic` runs Clifford circuits on the "
        "stabilizer method, noisy ones on the density matrix where it fits, the rest on the "
        "statevector. `GET /backend` lists each method's limits.",
    )
    precision: Annotated[
        FloatPrecision | float | None,
        BeforeValidator(_precision),
        WithJsonSchema(
            {
                "oneOf": [
                    {"type": "string", "enum": [p.value for p in FloatPrecision]},
                    {"type": "number", "exclusiveMinimum": 0, "maximum": 1e6},
                    {"type": "null"},
                ],
                "description": "`single` or `double`: the simulator's floating point "
                "precision. A number (with `observables` only): the target standard error "
                "of the expectation values, which are then the exact values plus normal "
                "noise of that standard deviation (`evs_method: normal_approximation`).",
            }
        ),
    ] = None
    noise: Noise | None = Field(
        default=None, description="A noise model, as data. Every probability is in [0, 1]."
    )
    tags: dict[StrictStr, StrictStr] = Field(
        default_factory=dict,
        description="Labels to find the task by (`GET /tasks?tag=key:value`): at most "
        "`[limits] max_tags` (16); keys of letters, digits and `_ . - /` up to "
        "`max_tag_key_chars` (64), printable values up to `max_tag_value_chars` (256).",
        json_schema_extra=TAG_KEYS_SCHEMA,
    )

    @classmethod
    def fields(cls) -> list[str]:
        """The accepted fields, as a 422 for an unknown one lists them."""
        return list(cls.model_fields)


class BatchRequest(_Forbid):
    """Several programs in one request, validated all or nothing. Unknown fields are
    refused, in the batch and in each task."""

    tasks: list[SubmitRequest] = Field(
        min_length=1, description="At most `[limits] max_batch_tasks` (1000 by default)."
    )
    # Checked against 2**63 - 1 with each task's index where it is used (a 422 naming
    # the task): the schema states the floor and ceiling of the seed itself.
    seed: Annotated[int | None, BeforeValidator(_json_integer)] = Field(
        default=None,
        ge=0,
        le=2**63 - 1,
        description="Task `i` gets seed `seed + i` unless it has its own `seed`: every "
        "circuit its own reproducible stream (the same batch again gives the same counts).",
    )
    tags: dict[StrictStr, StrictStr] | None = Field(
        default=None,
        description="Tags for every task of the batch; a task's own `tags` win per key. "
        "The merged set obeys the limits of a task's `tags`.",
        json_schema_extra=TAG_KEYS_SCHEMA,
    )


class BatchResponse(_Answer):
    """A batch accepted and queued: its id, and its tasks' ids in submission order."""

    batch_id: Uuid
    task_ids: list[Uuid]
    # True when an Idempotency-Key matched an earlier batch (sent as a header, not body).
    replayed: bool = Field(default=False, exclude=True)


class SubmitResponse(_Answer):
    """A task accepted and queued."""

    task_id: Uuid
    status: TaskStatus = TaskStatus.PENDING
    # True when an Idempotency-Key matched an earlier submit (sent as a header, not body).
    replayed: bool = Field(default=False, exclude=True)


class TaskMessage(_Open):
    """What goes on the bus: the id, and the memory its simulation state needs so a
    worker can budget memory before it takes the task. The circuit lives in Redis."""

    task_id: str
    state_bytes: int = 0


def _not_negative() -> Any:
    """An optional measurement, documented as never negative."""
    return Field(default=None, json_schema_extra={"minimum": 0})


def _circuit_optional(schema: dict[str, Any]) -> None:
    # Sent only when asked for, so it is the one field a task view may lack.
    schema["required"].remove("quantum_circuit")


class SampleResult(_Answer):
    """One binding's answer in a sampling sweep."""

    counts: dict[str, int]
    memory: list[str] | None = None


class TaskView(_Answer):
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
            "propertyNames": {"pattern": _OUTCOME},
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
        json_schema_extra={"items": {"type": "string", "pattern": _OUTCOME}},
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


class StatusCounts(_Answer):
    """How many tasks of a batch are in each status."""

    pending: int = Field(default=0, json_schema_extra={"minimum": 0})
    processing: int = Field(default=0, json_schema_extra={"minimum": 0})
    completed: int = Field(default=0, json_schema_extra={"minimum": 0})
    failed: int = Field(default=0, json_schema_extra={"minimum": 0})
    cancelled: int = Field(default=0, json_schema_extra={"minimum": 0})

    @classmethod
    def of(cls, statuses: Iterable[TaskStatus]) -> StatusCounts:
        return cls(**Counter(status.value for status in statuses))


class BatchView(_Answer):
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


class TaskSummary(_Answer):
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


class TaskList(_Answer):
    """One page of the caller's tasks, newest first."""

    tasks: list[TaskSummary]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null when there is none."
    )


class HealthView(_Answer):
    """Whether each dependency answered; `healthy` when all did."""

    status: str = Field(json_schema_extra={"enum": ["healthy", "unhealthy"]})
    services: dict[str, bool] = Field(
        json_schema_extra={
            "required": ["nats", "redis"],
            "properties": {"nats": {"type": "boolean"}, "redis": {"type": "boolean"}},
        }
    )


# --- Error bodies: what `qmill.server.http.error_response` sends -------------------------


class ValidationIssue(_Open):
    """One problem with a request body, as pydantic reports it."""

    type: str
    loc: list[str | int]
    msg: str


# The optional fields of an error body are left out when they do not apply, never null:
# SkipJsonSchema[None] keeps null out of the schema.
class ErrorBody(_Open):
    """Every error is JSON with a `detail`; the other fields come with some errors."""

    detail: (
        Annotated[str, Field(min_length=1)] | Annotated[list[ValidationIssue], Field(min_length=1)]
    )
    line: Annotated[int, Field(ge=1)] | SkipJsonSchema[None] = None
    column: Annotated[int, Field(ge=1)] | SkipJsonSchema[None] = None
    limit: str | SkipJsonSchema[None] = Field(
        default=None, description="With a 422 over a limit, or a 429 over a quota: which one."
    )
    allowed: Any = Field(
        default=None,
        description="With a 422 over a limit or a 429 over a quota: the allowed value; with a "
        "405: the allowed methods; with a 415: the accepted media type.",
    )
    service: str | SkipJsonSchema[None] = Field(
        default=None,
        description="With a 503: `nats`, `redis`, or `auth` (the keys file cannot be read).",
    )
    index: Annotated[int, Field(ge=0)] | SkipJsonSchema[None] = Field(
        default=None,
        description="With an error about one task of a batch: its position in `tasks`.",
    )


class CircuitError(ErrorBody):
    """A program that does not parse; `line` and `column` are 1-based when known."""

    detail: Annotated[str, Field(pattern="^invalid OpenQASM: ")]


class NoCounts(ErrorBody):
    """A histogram asked of a task without counts: `status` says what it is."""

    status: TaskStatus


def utcnow() -> datetime:
    return datetime.now(UTC)


# --- GET /backend ---------------------------------------------------------------------------


class MethodView(_Answer):
    """One simulation method as this deployment runs it."""

    max_qubits: int = Field(
        description="The widest circuit it runs here, in double precision: the configured "
        "cap, lowered until its state fits the worker's memory budget."
    )
    max_qubits_single: int | None = Field(
        default=None, description="The same in single precision (null: no such precision)."
    )
    noise: bool
    observables: bool
    precisions: list[FloatPrecision]
    gates: list[str] | None = Field(
        default=None, description="The only gates it runs (null: every gate of `gates`)."
    )
    max_bond_dimension: int | None = Field(
        default=None, description="Matrix product states are truncated to this."
    )


class BackendView(_Answer):
    """What this deployment offers: enough to build a Qiskit `Target` and to learn every
    limit before a 422."""

    name: str
    version: str
    max_qubits: int = Field(description="The widest circuit any method runs here.")
    methods: dict[str, MethodView]
    gates: list[str] = Field(
        description="Gates an OpenQASM 3 program may use (`stdgates.inc` and `U`), by "
        "their Qiskit names."
    )
    simulator_gates: list[str] = Field(
        description="Gates the simulator runs natively; others are decomposed into them."
    )
    min_shots: int
    max_shots: int
    max_total_shots: int
    max_result_bytes: int
    max_batch_tasks: int
    max_sweep_size: int
    max_parameters: int
    max_observables: int
    max_observable_terms: int
    max_clbits: int
    max_gates: int
    max_depth: int
    max_execution_seconds: float
    noise: dict[str, Any] = Field(description="The JSON schema of a task's `noise`.")
    task_fields: list[str] = Field(description="Every field `POST /tasks` accepts.")
