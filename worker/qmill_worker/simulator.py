"""Run one task on qiskit-aer. Everything expensive is built once per process.

``transpile(qc, backend)`` costs ~68 ms a call because it rebuilds a pass manager each
time; a pass manager built once (`qmill_worker.workloads.pass_manager`) costs ~0.15 ms
a call. It also unrolls gates a program defines for itself, which Aer would otherwise
reject.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from typing import Any

from qmill.server import qasm
from qmill.server.errors import RequestError
from qmill.server.store import Answer, StartedTask
from qmill.server.workload import Method, Plan
from qmill_worker import circuits, workloads
from qmill_worker.circuits import Lowered
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

    @classmethod
    def of(cls, task: StartedTask) -> SimJob:
        """What a started task's record gives its simulation."""
        return cls(
            task_id=task.task_id,
            circuit=task.circuit,
            shots=task.shots,
            seed=task.seed,
            memory=task.memory,
            plan=task.plan,
        )

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
        # Shallow: the values are JSON-ready and only ever serialised. `asdict` copies
        # every nested dict, 41 ms for a 1000-point sweep's counts (~5% of its time).
        return {f.name: getattr(self, f.name) for f in fields(self)}

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
def backend() -> Any:
    """The process's one simulator (its options are passed per run)."""
    from qiskit_aer import AerSimulator

    return AerSimulator(method="automatic")


def preload() -> None:
    """Import Aer and the parsers and build the pass manager, without simulating.

    What a fork server does before it forks: everything here is copied into each
    child for free, and nothing here starts OpenMP's thread pool (a simulation would),
    which a forked child could not use.
    """
    for method in _PRELOAD_METHODS:
        workloads.pass_manager(method, False)
    for program in _PRELOAD_PROGRAMS:
        qasm.parse(program)


def warm_up() -> None:
    """Import Aer, build the pass manager and run one tiny circuit now, so the first
    task neither pays for it nor has it counted against its time limit."""
    preload()
    simulate(SimJob(task_id="warm-up", circuit=_WARM_UP_CIRCUIT, shots=1))


# What `automatic` resolves to without noise (tasks recorded before plans existed run
# as Aer's own automatic), lowered for in every child without building it again.
_PRELOAD_METHODS = ("statevector", "stabilizer", "automatic")
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


# Aer's statevector_parallel_threshold (and mps_parallel_threshold): a state of fewer
# qubits runs its gates on one thread whatever max_parallel_threads says.
PARALLEL_QUBITS = 14


def useful_threads(available: int, qubits: int, plan: Plan | None) -> int:
    """The OpenMP threads worth giving a simulation, up to ``available``.

    Idle OpenMP threads still cost CPU (a Bell circuit, 1024 shots, took 3.2 ms of CPU on
    two threads against 1.8 ms on one, for the same wall time), so a circuit Aer would
    run on one thread anyway gets one: a single noiseless point of a state narrower than
    `PARALLEL_QUBITS`. A sweep (Aer runs its points in parallel), a noisy circuit (its
    shots in parallel) or a wide state gets them all.
    """
    plan = plan or Plan()  # a task as the first API knew it: one noiseless point
    width = 2 * qubits if plan.method is Method.DENSITY_MATRIX else qubits
    points = plan.parameters.size if plan.parameters is not None else 1
    parallel = width >= PARALLEL_QUBITS or points > 1 or plan.noise is not None
    return available if parallel else 1


def read_plan(job: SimJob) -> Plan | None:
    """The job's admitted options; None for a task recorded before plans existed."""
    try:
        return Plan.model_validate_json(job.plan) if job.plan else None
    except ValueError as exc:
        raise SimulationError(
            f"unreadable task options: {exc}", FailureReason.INVALID_CIRCUIT
        ) from None


def lower(program: str, method: str, noisy: bool, swept: bool) -> Lowered:
    """The program parsed and lowered (`circuits.CACHE`): SimulationError if it does not
    parse. The circuit is shared with later runs of the program: never change it."""
    try:
        return circuits.CACHE.lowered(program, method, noisy, swept)
    except RequestError as exc:
        raise SimulationError(exc.message, FailureReason.INVALID_CIRCUIT) from None


def simulate(job: SimJob, *, threads: int = 0) -> SimResult:
    """Parse, lower to Aer's gate set, and run the task's plan: sample ``job.shots``
    times per binding, or take the observables' expectation values.

    Raises SimulationError: not retryable when the program itself is at fault.
    """
    started = time.perf_counter()
    plan = read_plan(job)
    if plan is None:
        options: dict[str, Any] = {"shots": job.shots}
        if job.seed is not None:
            options["seed_simulator"] = job.seed
        if job.memory:
            options["memory"] = True
        parsed = lower(job.circuit, "automatic", False, False)
        lowered = parsed.circuit
        chunks: list[tuple[int, Any]] = [(0, None)]
    else:
        options = workloads.run_options(plan, job.shots, job.seed, job.memory)
        swept = plan.parameters is not None
        parsed = lower(job.circuit, plan.method.value, plan.noise is not None, swept)
        lowered = parsed.circuit
        try:
            chunks = workloads.parameter_binds(lowered, plan.parameters)
        except ValueError as exc:
            raise SimulationError(str(exc), FailureReason.INVALID_CIRCUIT) from None
        if plan.observables is not None:
            lowered = workloads.with_expectation_values(lowered, plan.observables.labels)
            options["shots"] = 1
            options.pop("memory", None)
    if threads:
        options["max_parallel_threads"] = useful_threads(threads, parsed.qubits, plan)
    evs = plan is not None and plan.observables is not None
    rows: list[Any] = []
    method = "unknown"
    for offset, binds in chunks:
        chunk_options = dict(options)
        if binds is not None:
            # Aer binds each point as it runs it instead of building a bound copy of the
            # circuit per point first: 3x faster, and memory no longer grows with the
            # sweep (measured: 4000 points of a 2000-gate circuit took 4.9 GB and 93 s
            # the other way, 0.4 GB and 2.8 s this way).
            chunk_options["parameter_binds"] = binds
            chunk_options["runtime_parameter_bind_enable"] = True
        if offset and job.seed is not None:
            chunk_options["seed_simulator"] = job.seed + offset
        result = _run(lowered, chunk_options)
        expected = len(next(iter(binds[0].values()))) if binds else 1
        if len(result.results) != expected:  # never answer for fewer bindings than asked
            raise SimulationError(
                f"simulator error: {len(result.results)} results for {expected} bindings",
                FailureReason.SIMULATOR_ERROR,
            )
        method = str(result.results[0].metadata.get("method", method))
        rows += _expectation_rows(result, plan) if evs else _samples(result, job.memory)
    return SimResult(
        qubits=parsed.qubits,
        depth=parsed.depth,
        method=method,
        execution_seconds=round(time.perf_counter() - started, 6),
        **_answer(rows, plan, job),
    )


def _run(circuit: Any, options: dict[str, Any]) -> Any:
    try:
        result = backend().run(circuit, **options).result()
    except Exception as exc:  # Aer raises AerError / QiskitError / RuntimeError
        raise SimulationError(f"simulator error: {exc}", FailureReason.SIMULATOR_ERROR) from None
    if not result.success:
        raise SimulationError(f"simulator error: {result.status}", FailureReason.SIMULATOR_ERROR)
    return result


def _samples(result: Any, memory: bool) -> list[dict[str, Any]]:
    """Each experiment's counts (and shots), one experiment per binding."""
    return [
        {
            "counts": {str(k): int(v) for k, v in result.get_counts(b).items()},
            "memory": [str(m) for m in result.get_memory(b)] if memory else None,
        }
        for b in range(len(result.results))
    ]


def _expectation_rows(result: Any, plan: Plan | None) -> list[list[float]]:
    """Each experiment's expectation value of every distinct Pauli label."""
    assert plan is not None and plan.observables is not None
    count = len(plan.observables.labels)
    return [
        [float(result.data(b)[f"ev{k}"]) for k in range(count)] for b in range(len(result.results))
    ]


def _answer(rows: list[Any], plan: Plan | None, job: SimJob) -> dict[str, Any]:
    """The answer's fields: counts of one circuit, a sweep's samples, or evs and stds."""
    if plan is not None and plan.observables is not None:
        evs, stds, how = workloads.expectation_values(plan, rows, job.seed)
        if not all(math.isfinite(v) for v in _flat(evs)):
            raise SimulationError(
                "an expectation value is not a finite number (a binding gave a gate an "
                "angle that is not one)",
                FailureReason.INVALID_CIRCUIT,
            )
        return {"counts": None, "evs": evs, "stds": stds, "evs_method": how.value}
    if plan is None or not plan.shape:
        return dict(rows[0])
    return {"counts": None, "results": workloads.nest(rows, plan.shape)}


def _flat(value: Any) -> list[float]:
    if isinstance(value, list):
        return [x for item in value for x in _flat(item)]
    return [value]
