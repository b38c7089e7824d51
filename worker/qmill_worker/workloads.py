"""A task's plan on Aer: bind a whole sweep in one call, take expectation values, add noise.

The program was parsed once (`qmill_worker.simulator`) and is lowered once here; a sweep
of any size is one ``AerSimulator.run`` with ``parameter_binds`` (Aer binds each
point in C++, so a 1000-point sweep costs about what raw Aer costs for it), and the
observables' distinct Pauli strings are each one ``save_expectation_value``, evaluated
for every binding in the same run. Results are then split per binding and, for
observables, combined with their coefficients and broadcast as an ``EstimatorV2``
PUB broadcasts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache
from typing import Any

from qmill.server.workload import (
    NOISY_GATES,
    SIMULATOR_GATES,
    EvsMethod,
    Noise,
    Plan,
    Sweep,
    broadcast,
)


def noise_model(noise: Noise) -> Any:
    """The qiskit-aer NoiseModel a task's noise data describes (see `Noise`)."""
    from qiskit_aer.noise import NoiseModel, ReadoutError, depolarizing_error

    model = NoiseModel(basis_gates=sorted(NOISY_GATES))
    for name in sorted(NOISY_GATES):
        width = SIMULATOR_GATES[name]
        default = noise.depolarizing_1q if width == 1 else noise.depolarizing_2q
        p = noise.gates.get(name, default)
        if p:
            model.add_all_qubit_quantum_error(depolarizing_error(p, width), [name])
    if noise.readout:
        p = noise.readout
        model.add_all_qubit_readout_error(ReadoutError([[1 - p, p], [p, 1 - p]]))
    return model


# Controlled rotations whose parameters qiskit-aer 0.18 does not bind: a sweep over one
# runs a single experiment instead of one per binding (checked for every parameterized
# gate a program may use by tests/integration/test_simulator_workloads.py). A swept
# circuit is lowered without them, to gates whose parameters Aer binds.
UNBINDABLE_GATES = frozenset({"cp", "crx", "cry", "crz", "cu", "cu1", "cu3"})


@cache
def pass_manager(method: str, noisy: bool, swept: bool = False) -> Any:
    """Lowers to what ``method`` runs natively (the density matrix and matrix product
    state methods lack some of the statevector's gates), without the backend's Target:
    a Target carries Aer's memory-based qubit count and refuses a 100-qubit Clifford
    circuit the stabilizer method runs with ease. With noise, to `NOISY_GATES` only, so
    every gate of the circuit gets the error its width calls for (a Toffoli would
    otherwise run noiselessly). ``swept``: without `UNBINDABLE_GATES`. Built once per
    process and kind: ~0.15 ms a run instead of ~68 ms for ``transpile``."""
    from qiskit.circuit.library.standard_gates import get_standard_gate_name_mapping
    from qiskit.transpiler import generate_preset_pass_manager
    from qiskit_aer import AerSimulator

    standard = set(get_standard_gate_name_mapping())
    extras = {"measure", "reset", "delay"}
    if noisy:
        basis = set(NOISY_GATES) | extras
    else:
        basis = set(AerSimulator(method=method).configuration().basis_gates) & (standard | extras)
    if swept:
        basis -= UNBINDABLE_GATES
    return generate_preset_pass_manager(optimization_level=0, basis_gates=sorted(basis))


def run_options(plan: Plan, shots: int, seed: int | None, memory: bool) -> dict[str, Any]:
    """Aer's run options for a plan (the method is always a named one)."""
    options: dict[str, Any] = {"shots": shots, "method": plan.method.value}
    if plan.precision is not None:
        options["precision"] = plan.precision.value
    if plan.noise is not None:
        options["noise_model"] = noise_model(plan.noise)
    if plan.mps_bond_dimension is not None:
        options["matrix_product_state_max_bond_dimension"] = plan.mps_bond_dimension
    if seed is not None:
        options["seed_simulator"] = seed
    if memory:
        options["memory"] = True
    return options


# Bindings times operations per Aer call: a sweep past this runs in several calls, so
# the memory Aer holds for one call (results, and its per-point bookkeeping) stays
# bounded whatever the sweep's size. A 4-qubit, 3-layer ansatz (~30 operations) runs
# 60000 points in one call.
SWEEP_CHUNK_OPS = 2_000_000


def parameter_binds(circuit: Any, sweep: Sweep | None) -> list[tuple[int, Any]]:
    """Aer's ``parameter_binds`` for one circuit, in as few calls as `SWEEP_CHUNK_OPS`
    allows: ``(offset of the first binding, binds)`` per call; ``[(0, None)]`` when the
    program has no parameters.

    Names were matched at admission; a program changed since (it cannot be) fails the
    task with the names in the message.
    """
    if sweep is None:
        return [(0, None)]
    by_name = {p.name: p for p in circuit.parameters}
    missing = [n for n in sweep.names if n not in by_name]
    if missing or len(by_name) != len(sweep.names):
        raise ValueError(f"the parameters do not match the program's: {missing or sorted(by_name)}")
    per_call = max(1, SWEEP_CHUNK_OPS // max(1, circuit.size()))
    return [
        (
            start,
            [
                {
                    by_name[name]: values[start : start + per_call]
                    for name, values in zip(sweep.names, sweep.values, strict=True)
                }
            ],
        )
        for start in range(0, sweep.size, per_call)
    ]


def without_parameterized_phase(circuit: Any) -> Any:
    """The circuit with a global phase that depends on a parameter set to 0.

    Lowering gives some gates such a phase (``cp(θ)`` becomes rzz and rz gates and a
    phase of θ/4), and Aer's run-time binding refuses it ("instruction param position
    out of range"). A global phase changes neither counts nor expectation values.
    """
    from qiskit.circuit import ParameterExpression

    if isinstance(circuit.global_phase, ParameterExpression):
        circuit.global_phase = 0
    return circuit


def with_expectation_values(circuit: Any, labels: Sequence[str]) -> Any:
    """The circuit without its final measurements, saving ⟨P⟩ of each Pauli label."""
    from qiskit.quantum_info import Pauli

    bare = circuit.remove_final_measurements(inplace=False)
    qubits = list(range(bare.num_qubits))
    for k, label in enumerate(labels):
        bare.save_expectation_value(Pauli(label), qubits, label=f"ev{k}")
    return bare


def nest(flat: Sequence[Any], shape: Sequence[int]) -> Any:
    """Flat C-order values as nested lists of ``shape`` (numpy's ``tolist`` layout)."""
    if not shape:
        return flat[0]
    if len(shape) == 1:
        return list(flat)
    step = math.prod(shape[1:])
    return [nest(flat[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


def expectation_values(
    plan: Plan, values: Sequence[Sequence[float]], seed: int | None
) -> tuple[Any, Any, EvsMethod]:
    """Combine each binding's Pauli expectation values (``values[binding][label]``) into
    the observables' sums, broadcast over the plan's shape; with a target precision, add
    normal noise of that standard deviation (as qiskit-aer's EstimatorV2 does)."""
    import numpy as np

    observables = plan.observables
    assert observables is not None
    sweep_shape = plan.parameters.shape if plan.parameters is not None else []
    shape = broadcast(sweep_shape, observables.shape)
    binding = np.broadcast_to(np.arange(math.prod(sweep_shape)).reshape(sweep_shape), shape)
    observable = np.broadcast_to(np.arange(observables.size).reshape(observables.shape), shape)
    index = {label: k for k, label in enumerate(observables.labels)}
    sums = [[(index[label], coeff) for label, coeff in terms] for terms in observables.sums]
    evs = np.zeros(shape, dtype=float)
    for at in np.ndindex(*shape):
        row = values[int(binding[at])]
        evs[at] = sum(coeff * row[k] for k, coeff in sums[int(observable[at])])
    if plan.target_precision is None:
        stds = np.zeros(shape, dtype=float)
        how = EvsMethod.EXACT
    else:
        rng = np.random.default_rng(seed)
        evs = rng.normal(evs, plan.target_precision)
        stds = np.full(shape, plan.target_precision, dtype=float)
        how = EvsMethod.NORMAL_APPROXIMATION
    return np.asarray(evs).tolist(), stds.tolist(), how
