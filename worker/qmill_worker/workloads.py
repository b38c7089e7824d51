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
from functools import lru_cache
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


@lru_cache(maxsize=1)
def noisy_pass_manager() -> Any:
    """Lowers to one- and two-qubit gates only, so every gate of a noisy circuit gets
    the error its width calls for (a Toffoli would otherwise run noiselessly)."""
    from qiskit.transpiler import generate_preset_pass_manager

    basis = sorted(NOISY_GATES | {"measure", "reset", "delay"})
    return generate_preset_pass_manager(optimization_level=0, basis_gates=basis)


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


def parameter_binds(circuit: Any, sweep: Sweep | None) -> list[dict[Any, list[float]]] | None:
    """Aer's ``parameter_binds`` for one circuit: every parameter's values, one per binding.

    Names were matched at admission; a program changed since (it cannot be) or a
    binding Aer cannot take fails the task with the name in the message.
    """
    if sweep is None:
        return None
    by_name = {p.name: p for p in circuit.parameters}
    missing = [n for n in sweep.names if n not in by_name]
    if missing or len(by_name) != len(sweep.names):
        raise ValueError(f"the parameters do not match the program's: {missing or sorted(by_name)}")
    return [{by_name[name]: values for name, values in zip(sweep.names, sweep.values, strict=True)}]


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
