"""`GET /backend`: what this deployment runs, enough to build a Qiskit `Target`."""

from __future__ import annotations

from typing import Any

from pydantic import (
    Field,
)

from qmill.server.models.common import (
    AnswerModel,
)
from qmill.server.workload.spec import (
    FloatPrecision,
)


class MethodView(AnswerModel):
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


class BackendView(AnswerModel):
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
