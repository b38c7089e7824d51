"""Run one parsed circuit on qiskit-aer. Everything expensive is built once per process.

``transpile(qc, backend)`` costs ~68 ms a call because it rebuilds a pass manager each
time; a pass manager built once costs ~0.15 ms a call. The pass manager also unrolls
gates a program defines for itself, which Aer would otherwise reject.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

from qmill.server import qasm
from qmill.server.errors import RequestError
from qmill.server.store import Answer
from qmill.server.workload import Plan
from qmill_worker import workloads
from qmill_worker.errors import FailureReason, SimulationError


@dataclass(frozen=True, slots=True)
class SimJob:
    task_id: str
    circuit: str
    shots: int
    seed: int | None = None
    memory: bool = False
    # The admitted options (`qmill.server.workload.Plan` JSON); "" runs the program as
    # the first API did (Aer's automatic method, counts).
    plan: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class SimResult:
    """One task's answer: ``counts`` (and ``memory``) for one circuit; ``results`` for a
    sampling sweep; ``evs``/``stds`` for observables (see `qmill.server.store.Answer`)."""

    counts: dict[str, int] | None
    qubits: int
    depth: int
    method: str
    execution_seconds: float
    memory: list[str] | None = None
    results: list[Any] | None = None
    evs: Any = None
    stds: Any = None
    evs_method: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def answer(self) -> Answer:
        """What the task record stores of it."""
        return Answer(
            counts=self.counts,
            memory=self.memory,
            results=self.results,
            evs=self.evs,
            stds=self.stds,
            evs_method=self.evs_method,
        )


@lru_cache(maxsize=1)
def _backend() -> Any:
    from qiskit_aer import AerSimulator

    return AerSimulator(method="automatic")


@lru_cache(maxsize=1)
def _pass_manager() -> Any:
    """Lower to Aer's standard gates, without the backend's Target.

    A Target-based pass manager carries Aer's qubit count (its memory-based maximum),
    and refuses a 100-qubit Clifford circuit that the stabilizer method runs with ease.
    """
    from qiskit.circuit.library.standard_gates import get_standard_gate_name_mapping
    from qiskit.transpiler import generate_preset_pass_manager

    standard = set(get_standard_gate_name_mapping()) | {"measure", "reset", "barrier", "delay"}
    basis = sorted(set(_backend().configuration().basis_gates) & standard)
    return generate_preset_pass_manager(optimization_level=0, basis_gates=basis)


def preload() -> None:
    """Import Aer and the parsers and build the pass manager, without simulating.

    What a fork server does before it forks: everything here is copied into each
    child for free, and nothing here starts OpenMP's thread pool (a simulation would),
    which a forked child could not use.
    """
    _pass_manager()
    for program in _PRELOAD_PROGRAMS:
        qasm.parse(program)


def warm_up() -> None:
    """Import Aer, build the pass manager and run one tiny circuit now, so the first
    task neither pays for it nor has it counted against its time limit."""
    _pass_manager()
    simulate(SimJob(task_id="warm-up", circuit=_WARM_UP_CIRCUIT, shots=1))


_WARM_UP_CIRCUIT = (
    'OPENQASM 3.0; include "stdgates.inc"; qubit[1] q; bit[1] c; h q[0]; c[0] = measure q[0];'
)
# One program for each importer: the fast one, the reference one (a gate definition
# sends a program there) and OpenQASM 2's.
_PRELOAD_PROGRAMS = (
    _WARM_UP_CIRCUIT,
    'OPENQASM 3.0; include "stdgates.inc"; gate g a { h a; } qubit[1] q; bit[1] c; g q[0];'
    " c[0] = measure q[0];",
    'OPENQASM 2.0; include "qelib1.inc"; qreg q[1]; creg c[1]; h q[0]; measure q -> c;',
)


def simulate(job: SimJob, *, threads: int = 0) -> SimResult:
    """Parse, lower to Aer's gate set, and run the task's plan: sample ``job.shots``
    times per binding, or take the observables' expectation values.

    Raises SimulationError: not retryable when the program itself is at fault.
    """
    started = time.perf_counter()
    try:
        parsed = qasm.parse(job.circuit)
    except RequestError as exc:
        raise SimulationError(exc.message, FailureReason.INVALID_CIRCUIT) from None
    try:
        plan = Plan.model_validate_json(job.plan) if job.plan else None
    except ValueError as exc:
        raise SimulationError(
            f"unreadable task options: {exc}", FailureReason.INVALID_CIRCUIT
        ) from None
    if plan is None:
        options: dict[str, Any] = {"shots": job.shots}
        if job.seed is not None:
            options["seed_simulator"] = job.seed
        if job.memory:
            options["memory"] = True
        lowered = _pass_manager().run(parsed.circuit)
        binds = None
    else:
        options = workloads.run_options(plan, job.shots, job.seed, job.memory)
        manager = workloads.noisy_pass_manager() if plan.noise else _pass_manager()
        lowered = manager.run(parsed.circuit)
        try:
            binds = workloads.parameter_binds(lowered, plan.parameters)
        except ValueError as exc:
            raise SimulationError(str(exc), FailureReason.INVALID_CIRCUIT) from None
        if plan.observables is not None:
            lowered = workloads.with_expectation_values(lowered, plan.observables.labels)
            options["shots"] = 1
            options.pop("memory", None)
    if threads:
        options["max_parallel_threads"] = threads
    if binds is not None:
        options["parameter_binds"] = binds
    result = _run(lowered, options)
    answer = _answer(result, plan, job)
    return SimResult(
        qubits=parsed.qubits,
        depth=parsed.depth,
        method=str(result.results[0].metadata.get("method", "unknown")),
        execution_seconds=round(time.perf_counter() - started, 6),
        **answer,
    )


def _run(circuit: Any, options: dict[str, Any]) -> Any:
    try:
        result = _backend().run(circuit, **options).result()
    except Exception as exc:  # Aer raises AerError / QiskitError / RuntimeError
        raise SimulationError(f"simulator error: {exc}", FailureReason.SIMULATOR_ERROR) from None
    if not result.success:
        raise SimulationError(f"simulator error: {result.status}", FailureReason.SIMULATOR_ERROR)
    return result


def _answer(result: Any, plan: Plan | None, job: SimJob) -> dict[str, Any]:
    """The answer's fields from Aer's result: one experiment per binding."""
    experiments = len(result.results)
    if plan is not None and plan.observables is not None:
        count = len(plan.observables.labels)
        values = [
            [float(result.data(b)[f"ev{k}"]) for k in range(count)] for b in range(experiments)
        ]
        evs, stds, how = workloads.expectation_values(plan, values, job.seed)
        if not all(math.isfinite(v) for v in _flat(evs)):
            raise SimulationError(
                "an expectation value is not a finite number (a binding gave a gate an "
                "angle that is not one)",
                FailureReason.INVALID_CIRCUIT,
            )
        return {"counts": None, "evs": evs, "stds": stds, "evs_method": how.value}

    def sample(b: int) -> dict[str, Any]:
        counts = {str(k): int(v) for k, v in result.get_counts(b).items()}
        memory = [str(m) for m in result.get_memory(b)] if job.memory else None
        return {"counts": counts, "memory": memory}

    if plan is None or not plan.shape:
        return sample(0)
    flat = [sample(b) for b in range(experiments)]
    return {"counts": None, "results": workloads.nest(flat, plan.shape)}


def _flat(value: Any) -> list[float]:
    if isinstance(value, list):
        return [x for item in value for x in _flat(item)]
    return [value]
