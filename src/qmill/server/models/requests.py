"""What clients send: a task (`SubmitRequest`), a batch, and what goes on the bus."""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import (
    BeforeValidator,
    Field,
    StrictBool,
    StrictStr,
    WithJsonSchema,
)

from qmill.server.models.common import (
    JsonInt,
    OpenModel,
    RequestModel,
    json_integer,
)
from qmill.server.tags import KEYS_SCHEMA as TAG_KEYS_SCHEMA
from qmill.server.workload.spec import (
    OBSERVABLES_SCHEMA,
    PARAMETERS_SCHEMA,
    FloatPrecision,
    Method,
    Noise,
    Observables,
    Sweep,
    observables_from_wire,
    sweep_from_wire,
)


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


class SubmitRequest(RequestModel):
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
    seed: Annotated[int | None, BeforeValidator(json_integer)] = Field(
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


class BatchRequest(RequestModel):
    """Several programs in one request, validated all or nothing. Unknown fields are
    refused, in the batch and in each task."""

    tasks: list[SubmitRequest] = Field(
        min_length=1, description="At most `[limits] max_batch_tasks` (1000 by default)."
    )
    # Checked against 2**63 - 1 with each task's index where it is used (a 422 naming
    # the task): the schema states the floor and ceiling of the seed itself.
    seed: Annotated[int | None, BeforeValidator(json_integer)] = Field(
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


class TaskMessage(OpenModel):
    """What goes on the bus: the id, and the memory its simulation state needs so a
    worker can budget memory before it takes the task. The circuit lives in Redis."""

    task_id: str
    state_bytes: int = 0
