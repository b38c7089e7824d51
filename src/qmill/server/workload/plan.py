"""Admission of a task's options against its parsed program: what will run, and how big.

`plan` is the one place that decides whether a request's parameters, observables,
method, precision and noise fit its program and the deployment's limits, and which
Aer method runs it (`automatic` is resolved here, so the worker's memory budget
reserves what will actually be simulated). Its answer, a `Plan`, is stored with the
task and is all the worker needs besides the program.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from qmill.server.errors import InvalidCircuit, InvalidRequest, LimitExceeded
from qmill.server.workload.methods import (
    METHODS,
    NOISY_GATES,
    clifford_method,
    max_qubits,
    state_bytes,
)
from qmill.server.workload.spec import (
    FloatPrecision,
    Method,
    Noise,
    Observables,
    Sweep,
)

if TYPE_CHECKING:
    from qiskit import QuantumCircuit

    from qmill.server.config import Settings
    from qmill.server.models import SubmitRequest
    from qmill.server.qasm import ParsedProgram


class Plan(BaseModel):
    """A task's options as admitted: stored with the task (JSON), read by the worker.

    Internal (Redis) data: unknown fields are ignored, so workers of the next version
    can read what this one stored.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    # The method the worker runs: never `automatic`.
    method: Method = Method.STATEVECTOR
    precision: FloatPrecision | None = None
    # With observables: the target standard error of the expectation values (None: exact).
    target_precision: float | None = None
    noise: Noise | None = None
    parameters: Sweep | None = None
    observables: Observables | None = None
    # The shape of the answer: the bindings' shape, broadcast with the observables'.
    shape: list[int] = []
    mps_bond_dimension: int | None = None
    state_bytes: int = 0
    # The most the answer can take as stored JSON (`answer_bytes`): what a tenant's
    # storage quota is charged at admission, before the real size is known.
    answer_bytes: int = 0

    @property
    def plain(self) -> bool:
        """A task as the first API knew it: one circuit, counts, Aer's defaults."""
        return (
            self.parameters is None
            and self.observables is None
            and self.noise is None
            and self.precision is None
        )


def broadcast(*shapes: Sequence[int]) -> list[int]:
    """numpy's broadcasting of shapes (what an EstimatorV2 PUB does); ValueError if none."""
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for axis in range(rank):
        sizes = {s[axis - rank + len(s)] for s in shapes if axis - rank + len(s) >= 0}
        sizes.discard(1)
        if len(sizes) > 1:
            raise ValueError(" and ".join(str(list(s)) for s in shapes))
        out.append(sizes.pop() if sizes else 1)
    return out


def plan(request: SubmitRequest, parsed: ParsedProgram, settings: Settings) -> Plan:
    """Check the request's options against its program and the limits; raise a
    RequestError naming what is wrong, else return what the worker will run."""
    limits = settings.limits
    sweep = request.parameters
    observables = request.observables
    noise = request.noise if request.noise is not None and not request.noise.empty else None
    circuit = parsed.circuit
    if noise is not None:
        _check_noise(noise)
    _check_parameters(circuit, sweep, settings)
    precision, target = _precision(request, observables is not None)
    size = sweep.size if sweep is not None else 1
    if observables is None:
        _check_measures(circuit)
        total = request.shots * size
        if total > limits.max_total_shots:
            raise LimitExceeded("shots over all bindings", total, limits.max_total_shots)
        if request.memory and total > limits.max_shots:
            raise LimitExceeded("shots over all bindings with memory", total, limits.max_shots)
        shape = list(sweep.shape) if sweep is not None else []
        size_bytes = sample_bytes(circuit, request.shots, shape, request.memory)
    else:
        if request.memory:
            raise InvalidRequest(
                "memory: observables give expectation values, not shots to keep; "
                "leave memory out or the observables"
            )
        shape = _check_observables(observables, parsed, sweep, settings)
        size_bytes = evs_bytes(shape)
    if size_bytes > limits.max_result_bytes:
        raise LimitExceeded("result bytes (estimated)", size_bytes, limits.max_result_bytes)
    method = resolve_method(
        request.method, parsed, noise, observables, precision, request.shots, settings
    )
    _check_method(method, parsed, noise, observables, precision, settings)
    chi = limits.mps_max_bond_dimension
    return Plan(
        method=method,
        precision=precision,
        target_precision=target,
        noise=noise,
        parameters=sweep,
        observables=observables,
        shape=shape,
        mps_bond_dimension=chi if method is Method.MATRIX_PRODUCT_STATE else None,
        state_bytes=state_bytes(method, parsed.qubits, precision, chi),
        answer_bytes=size_bytes,
    )


# JSON's longest float (`-2.2250738585072014e-308`), and the separators around an item.
_FLOAT_CHARS = 24
_ITEM_SEPARATOR = 2  # ", "
# A sweep leaf without its counts and memory: '{"counts": , "memory": null}, '.
_LEAF_CHARS = 30
# The fields around the answer (`"evs_method": "normal_approximation"`, `null`s), once.
_ANSWER_OVERHEAD = 256


def _nesting(shape: Sequence[int]) -> int:
    """The most characters the lists of a nested array of ``shape`` add: at most one
    list per element per level, each '[', ']' and a separator."""
    return 4 * len(shape) * math.prod(shape)


def sample_bytes(circuit: QuantumCircuit, shots: int, shape: Sequence[int], memory: bool) -> int:
    """The most a sampling answer can take as stored JSON (``json.dumps``, whose
    separators are wider than the HTTP answer's), over the bindings of ``shape``.

    Per binding, a count for every distinct outcome there can be (at most one a shot,
    at most 2**clbits): '"0101 1": 1234, ' with the count's digits at most the shots';
    with memory, every shot's outcome '"0101 1", '. A sweep's leaves add their
    '{"counts": ..., "memory": ...}' and the nesting lists. An upper bound, tested
    against the simulator's answers (tests/integration/test_result_storage.py).
    """
    clbits: int = circuit.num_clbits
    width = clbits + max(0, len(circuit.cregs) - 1)  # bits and spaces between registers
    outcomes = shots if clbits >= 63 else min(shots, 1 << clbits)
    per_binding = 2 + outcomes * (width + 6 + len(str(shots)))
    if memory:
        per_binding += 2 + shots * (width + 2 + _ITEM_SEPARATOR)
    bindings = math.prod(shape)
    if shape:
        per_binding += _LEAF_CHARS
    return bindings * per_binding + _nesting(shape) + _ANSWER_OVERHEAD


def evs_bytes(shape: Sequence[int]) -> int:
    """The most expectation values and their standard errors take as stored JSON: two
    arrays of ``shape`` (a number each when it is `[]`) of floats at their longest."""
    one = math.prod(shape) * (_FLOAT_CHARS + _ITEM_SEPARATOR) + _nesting(shape)
    return 2 * one + _ANSWER_OVERHEAD


def _precision(
    request: SubmitRequest, has_observables: bool
) -> tuple[FloatPrecision | None, float | None]:
    value = request.precision
    if value is None or isinstance(value, FloatPrecision):
        return value, None
    if not has_observables:
        raise InvalidRequest(
            "precision: a number is the target standard error of expectation values, so it "
            'needs observables; for the simulator\'s precision use "single" or "double"'
        )
    return None, float(value)


def _check_noise(noise: Noise) -> None:
    unknown = sorted(set(noise.gates) - NOISY_GATES)
    if unknown:
        raise InvalidRequest(
            f"noise.gates: no one- or two-qubit gate is named {_listed(unknown)} (a circuit "
            f"with noise runs as these gates: {', '.join(sorted(NOISY_GATES))})"
        )


def _check_parameters(circuit: QuantumCircuit, sweep: Sweep | None, settings: Settings) -> None:
    names = sorted(p.name for p in circuit.parameters)
    limits = settings.limits
    if len(names) > limits.max_parameters:
        raise LimitExceeded("parameters", len(names), limits.max_parameters)
    given = sweep.names if sweep is not None else []
    missing = [n for n in names if n not in given]
    extra = [n for n in given if n not in names]
    if missing:
        raise InvalidRequest(
            f"parameters: no value for {_listed(missing)}; the program's parameters are "
            f"{_listed(names)}"
        )
    if extra:
        known = f"its parameters are {_listed(names)}" if names else "it has none"
        raise InvalidRequest(f"parameters: the program has no parameter {_listed(extra)}; {known}")
    if sweep is not None and sweep.size > limits.max_sweep_size:
        raise LimitExceeded("bindings in a sweep", sweep.size, limits.max_sweep_size)


def _listed(names: Sequence[str], most: int = 10) -> str:
    shown = ", ".join(f"'{n}'" for n in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def _check_measures(circuit: QuantumCircuit) -> None:
    if circuit.num_clbits == 0 or not any(i.operation.name == "measure" for i in circuit.data):
        raise InvalidCircuit(
            "the program measures nothing, so there are no counts to return "
            "(give observables to get expectation values instead)"
        )


def _check_observables(
    observables: Observables, parsed: ParsedProgram, sweep: Sweep | None, settings: Settings
) -> list[int]:
    limits = settings.limits
    if observables.size > limits.max_observables:
        raise LimitExceeded("observables", observables.size, limits.max_observables)
    if observables.terms > limits.max_observable_terms:
        raise LimitExceeded("observable terms", observables.terms, limits.max_observable_terms)
    for index, terms in enumerate(observables.sums):
        for label, _ in terms:
            if len(label) != parsed.qubits:
                where = _where(observables.shape, index)
                raise InvalidRequest(
                    f"observables{where}: '{label[:40]}' has {len(label)} letters, but the "
                    f"circuit has {parsed.qubits} qubits (one letter a qubit, qubit 0 last)"
                )
    if _measures_mid_circuit(parsed.circuit):
        raise InvalidRequest(
            "observables: the circuit measures or resets before its end, so its state is not "
            "one state; expectation values need a circuit whose only measurements are final"
        )
    try:
        shape = broadcast(sweep.shape if sweep is not None else [], observables.shape)
    except ValueError as exc:
        raise InvalidRequest(
            f"observables of shape {observables.shape} do not broadcast with parameters of "
            f"shape {sweep.shape if sweep else []} (as numpy broadcasts: {exc})"
        ) from None
    if math.prod(shape) > limits.max_sweep_size:
        raise LimitExceeded("expectation values", math.prod(shape), limits.max_sweep_size)
    return shape


def _where(shape: Sequence[int], flat: int) -> str:
    index = []
    for size in reversed(shape):
        index.append(flat % size)
        flat //= size
    return "".join(f"[{i}]" for i in reversed(index))


def _measures_mid_circuit(circuit: QuantumCircuit) -> bool:
    """True if anything but final measurements (and barriers) collapses the state."""
    stripped = circuit.remove_final_measurements(inplace=False)
    return any(i.operation.name in ("measure", "reset") for i in stripped.data) or any(
        getattr(i.operation, "blocks", None) for i in stripped.data
    )


def resolve_method(
    requested: Method,
    parsed: ParsedProgram,
    noise: Noise | None,
    observables: Observables | None,
    precision: FloatPrecision | None,
    shots: int,
    settings: Settings,
) -> Method:
    """`automatic` made concrete: for Clifford circuits the stabilizer, or without noise
    the statevector where it is cheaper (`clifford_method`: up to 10 qubits), unless a
    floating point precision was asked for, which a tableau of bits does not have; with
    noise, the density matrix where it fits and pays (expectation values, or fewer
    amplitudes than shots: one exact run beats a trajectory per shot); else the
    statevector."""
    if requested is not Method.AUTOMATIC:
        return requested
    exact_noisy_evs = noise is not None and observables is not None
    if parsed.clifford and not exact_noisy_evs and precision is None:
        return Method.STABILIZER if noise is not None else clifford_method(parsed.qubits)
    if noise is not None:
        fits = parsed.qubits <= max_qubits(settings, Method.DENSITY_MATRIX, None)
        if exact_noisy_evs or (fits and 2**parsed.qubits <= shots):
            return Method.DENSITY_MATRIX
    return Method.STATEVECTOR


def _check_method(
    method: Method,
    parsed: ParsedProgram,
    noise: Noise | None,
    observables: Observables | None,
    precision: FloatPrecision | None,
    settings: Settings,
) -> None:
    caps = METHODS[method]
    if caps.ops is not None:
        outside = sorted(set(parsed.circuit.count_ops()) - caps.ops)
        if outside:
            raise InvalidRequest(
                f"method {method}: the circuit uses gates it cannot simulate: "
                f"{_listed(outside)}; it runs only {', '.join(sorted(caps.ops))}"
            )
    if observables is not None and not caps.observables:
        raise InvalidRequest(f"method {method} cannot compute expectation values (observables)")
    if observables is not None and noise is not None and method is not Method.DENSITY_MATRIX:
        raise InvalidRequest(
            f"observables with noise are exact only on the density matrix; method {method} "
            "would give one noise trajectory. Use method density_matrix (or automatic)"
        )
    if precision is not None and precision not in caps.precisions:
        raise InvalidRequest(
            f"precision {precision}: method {method} has no floating point precision to set"
        )
    allowed = max_qubits(settings, method, precision)
    if parsed.qubits > allowed:
        raise LimitExceeded(_qubits_limit(method, parsed.clifford), parsed.qubits, allowed)


def _qubits_limit(method: Method, clifford: bool) -> str:
    """How a qubit limit is named in a 422: as the first API named them for the two
    methods `automatic` picks without noise, else after the method."""
    if method is Method.STABILIZER and clifford:
        return "qubits (Clifford circuit)"
    if method is Method.STATEVECTOR:
        return "qubits"
    return f"qubits ({method})"
