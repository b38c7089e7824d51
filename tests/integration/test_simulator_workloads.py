"""The worker's side of task options, on the real simulator: a sweep in one Aer call,
expectation values against Qiskit's exact ones, noise against a hand-built channel,
methods and precisions. In process (no servers): what the worker runs is `simulate` of
what the submit function admitted."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.circuit.library.standard_gates import get_standard_gate_name_mapping
from qiskit.quantum_info import DensityMatrix, SparsePauliOp, Statevector
from qiskit_aer import AerSimulator
from qiskit_aer.noise import depolarizing_error

from qmill.server.config import Settings
from qmill.server.tasks import validate_submit
from qmill.server.workload import NOISY_GATES, SIMULATOR_GATES
from qmill.server.workload.describe import importer_gates
from qmill_worker import workloads
from qmill_worker.errors import SimulationError
from qmill_worker.simulator import SimJob, SimResult, simulate

HEAD = 'OPENQASM 3.0; include "stdgates.inc"; '
ANSATZ = (
    HEAD + "input float[64] a; input float[64] b; qubit[2] q; "
    "ry(a) q[0]; ry(b) q[1]; cx q[0], q[1]; rz(a) q[1];"
)


def run(**body: Any) -> SimResult:
    accepted = validate_submit(body, Settings())
    plan = accepted.plan.model_dump_json(exclude_defaults=True)
    return simulate(
        SimJob(
            task_id="t",
            circuit=body["quantum_circuit"],
            shots=body.get("shots", 1024),
            seed=body.get("seed"),
            memory=body.get("memory", False),
            plan=plan,
        )
    )


def reference_ansatz(a: float, b: float) -> QuantumCircuit:
    qc = QuantumCircuit(2)
    qc.ry(a, 0)
    qc.ry(b, 1)
    qc.cx(0, 1)
    qc.rz(a, 1)
    return qc


def test_the_simulator_gates_are_aers_standard_gates() -> None:
    standard = get_standard_gate_name_mapping()
    aer = set(AerSimulator().configuration().basis_gates) & set(standard)
    assert set(SIMULATOR_GATES) == aer - {"delay", "reset"}
    assert all(standard[name].num_qubits == width for name, width in SIMULATOR_GATES.items())


def test_a_sweep_answers_per_binding_in_order() -> None:
    program = (
        HEAD + "input float[64] th; qubit[2] q; bit[2] c; "
        "ry(th) q[0]; cx q[0], q[1]; c = measure q;"
    )
    result = run(
        quantum_circuit=program, shots=200, parameters={"th": [[0, math.pi], [math.pi, 0]]}
    )
    assert result.counts is None and result.results is not None
    outcomes = [[next(iter(r["counts"])) for r in row] for row in result.results]
    assert outcomes == [["00", "11"], ["11", "00"]]
    assert all(
        r["counts"][o] == 200
        for row, orow in zip(result.results, outcomes, strict=True)
        for r, o in zip(row, orow, strict=True)
    )


def test_expectation_values_are_exact_and_broadcast_like_an_estimator_pub() -> None:
    a = [0.1, 0.7, 1.3, 2.9]
    b = [0.4, -1.2, 2.2, 0.0]
    sums = [[("ZZ", 1.0), ("XI", 0.5)], [("IY", -2.0)], [("XX", 0.25), ("II", 1.0)]]
    column = [[[list(t) for t in terms]] for terms in sums]  # shape (3, 1)
    result = run(quantum_circuit=ANSATZ, parameters={"a": a, "b": b}, observables=column)
    assert result.evs_method == "exact"
    evs = np.array(result.evs)
    assert evs.shape == (3, 4) and np.array(result.stds).shape == (3, 4)
    for i, terms in enumerate(sums):
        op = SparsePauliOp.from_list(terms)
        for j in range(4):
            exact = Statevector(reference_ansatz(a[j], b[j])).expectation_value(op).real
            assert evs[i, j] == pytest.approx(exact, abs=1e-9)
    assert not np.any(np.array(result.stds))


def test_a_sweep_split_over_several_calls_answers_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    a = list(np.linspace(0, 3, 7))
    body: dict[str, Any] = {
        "quantum_circuit": ANSATZ,
        "parameters": {"a": a, "b": a[::-1]},
        "observables": [["ZZ", 1.0], ["XY", 0.3]],
    }
    whole = run(**body)
    monkeypatch.setattr(workloads, "SWEEP_CHUNK_OPS", 10)  # a call per two bindings
    assert workloads.parameter_binds(QuantumCircuit(1), None) == [(0, None)]
    split = run(**body)
    assert np.allclose(whole.evs, split.evs, atol=1e-12)


def test_a_target_precision_adds_normal_noise_of_that_size() -> None:
    body: dict[str, Any] = {
        "quantum_circuit": ANSATZ,
        "parameters": {"a": [0.3] * 400, "b": [0.9] * 400},
        "observables": [["ZZ", 1.0]],
        "precision": 0.05,
        "seed": 11,
    }
    result = run(**body)
    exact = Statevector(reference_ansatz(0.3, 0.9)).expectation_value(SparsePauliOp("ZZ")).real
    errors = np.array(result.evs) - exact
    assert result.evs_method == "normal_approximation"
    assert np.allclose(result.stds, 0.05)
    assert abs(errors.mean()) < 4 * 0.05 / math.sqrt(400)
    assert 0.04 < errors.std() < 0.06
    assert run(**body).evs == result.evs  # the seed fixes it


def _noisy_bell(p1: float, p2: float) -> DensityMatrix:
    """Bell with a depolarizing channel after each gate, by hand."""
    state = DensityMatrix.from_label("00")
    h = QuantumCircuit(1)
    h.h(0)
    cx = QuantumCircuit(2)
    cx.cx(0, 1)
    state = state.evolve(h, [0]).evolve(depolarizing_error(p1, 1).to_quantumchannel(), [0])
    return state.evolve(cx).evolve(depolarizing_error(p2, 2).to_quantumchannel(), [0, 1])


def test_noise_is_the_channel_it_describes() -> None:
    p1, p2, readout = 0.05, 0.1, 0.08
    state = _noisy_bell(p1, p2)
    bell = HEAD + "qubit[2] q; h q[0]; cx q[0], q[1];"
    noise = {"depolarizing_1q": p1, "depolarizing_2q": p2, "readout": readout}
    evs = run(quantum_circuit=bell, observables=[["ZZ", 1.0], ["XX", 1.0]], noise=noise)
    assert evs.method == "density_matrix"
    expected = state.expectation_value(SparsePauliOp(["ZZ", "XX"])).real
    assert evs.evs == pytest.approx(expected, abs=1e-9)
    # Sampled: the channel's probabilities, each bit then read flipped with `readout`.
    shots = 20000
    counts = run(
        quantum_circuit=bell + " bit[2] c; c = measure q;", shots=shots, seed=3, noise=noise
    ).counts
    assert counts is not None
    probs = state.probabilities_dict()
    flip = {
        ("0", "0"): 1 - readout,
        ("1", "1"): 1 - readout,
        ("0", "1"): readout,
        ("1", "0"): readout,
    }
    for outcome in ("00", "01", "10", "11"):
        p = sum(q * flip[(o[0], outcome[0])] * flip[(o[1], outcome[1])] for o, q in probs.items())
        sigma = math.sqrt(p * (1 - p) / shots)
        assert abs(counts.get(outcome, 0) / shots - p) < 5 * sigma, outcome


def test_a_noisy_toffoli_is_lowered_so_every_gate_gets_its_error() -> None:
    program = HEAD + "qubit[3] q; bit[3] c; x q[0]; x q[1]; ccx q[0], q[1], q[2]; c = measure q;"
    clean = run(quantum_circuit=program, shots=2000, seed=1, noise={"depolarizing_2q": 0.0})
    noisy = run(quantum_circuit=program, shots=2000, seed=1, noise={"depolarizing_2q": 0.2})
    assert clean.counts == {"111": 2000}
    assert noisy.counts is not None and noisy.counts.get("111", 0) < 1800


def test_sixty_qubit_ghz_on_matrix_product_states() -> None:
    n = 60
    program = (
        HEAD
        + f"qubit[{n}] q; bit[{n}] c; h q[0]; "
        + " ".join(f"cx q[{i}], q[{i + 1}];" for i in range(n - 1))
        + " c = measure q;"
    )
    result = run(quantum_circuit=program, shots=500, method="matrix_product_state", seed=2)
    assert result.method == "matrix_product_state"
    assert result.counts is not None and set(result.counts) == {"0" * n, "1" * n}


@pytest.mark.parametrize(
    "method",
    ["statevector", "density_matrix", "matrix_product_state", "extended_stabilizer", "stabilizer"],
)
def test_every_method_runs_a_bell_pair(method: str) -> None:
    bell = HEAD + "qubit[2] q; bit[2] c; h q[0]; cx q[0], q[1]; c = measure q;"
    result = run(quantum_circuit=bell, shots=400, method=method, seed=5)
    assert result.method == method
    assert result.counts is not None and set(result.counts) <= {"00", "11"}
    assert sum(result.counts.values()) == 400


def test_single_precision_runs() -> None:
    result = run(
        quantum_circuit=ANSATZ,
        parameters={"a": 0.2, "b": 0.4},
        observables=[["ZZ", 1]],
        precision="single",
    )
    exact = Statevector(reference_ansatz(0.2, 0.4)).expectation_value(SparsePauliOp("ZZ")).real
    assert result.evs == pytest.approx(exact, abs=1e-5)


def test_a_binding_that_makes_an_angle_infinite_fails_the_task() -> None:
    program = HEAD + "input float[64] th; qubit[1] q; rx(1/th) q[0];"
    with pytest.raises(SimulationError):
        run(quantum_circuit=program, parameters={"th": [1.0, 0.0]}, observables=[["Z", 1]])


@pytest.mark.parametrize("method", ["statevector", "density_matrix", "matrix_product_state"])
def test_noisy_gates_run_on_every_method_with_noise(method: str) -> None:
    assert set(AerSimulator(method=method).configuration().basis_gates) >= NOISY_GATES


def test_each_method_gets_a_circuit_lowered_to_its_own_gates() -> None:
    # crx is native to the statevector, not to the density matrix or MPS methods.
    program = HEAD + "qubit[2] q; bit[2] c; h q[0]; crx(0.3) q[0], q[1]; c = measure q;"
    for method in ("density_matrix", "matrix_product_state"):
        assert run(quantum_circuit=program, shots=10, method=method).method == method


def _parameterized_program_gates() -> list[str]:
    """Every gate with parameters a program may use (OpenQASM 3's stdgates.inc, and U)."""
    gates = get_standard_gate_name_mapping()
    return [name for name in importer_gates() if gates[name].params]


@pytest.mark.parametrize("name", _parameterized_program_gates())
def test_a_sweep_binds_every_parameterized_gate(name: str) -> None:
    """Aer 0.18 binds no parameter of cp/crx/cry/crz/cu/cu1/cu3 (one experiment, not one
    per binding); every gate, swept, must answer per binding what its bound circuit does."""
    gate = get_standard_gate_name_mapping()[name]
    width = gate.num_qubits
    args = ", ".join(["th"] + ["0.7"] * (len(gate.params) - 1))
    qubits = ", ".join(f"q[{i}]" for i in range(width))
    program = HEAD + f"input float[64] th; qubit[{width}] q; "
    written = "U" if name == "u" else name  # the builtin U is Qiskit's u
    program += " ".join(f"h q[{i}];" for i in range(width)) + f" {written}({args}) {qubits};"
    values = [0.3, 1.1, 2.5]
    label = "X" * width
    result = run(quantum_circuit=program, parameters={"th": values}, observables=[[label, 1.0]])
    for value, ev in zip(values, result.evs or [], strict=True):
        bound = QuantumCircuit(width)
        for q in range(width):
            bound.h(q)
        bound.append(type(gate)(value, *[0.7] * (len(gate.params) - 1)), range(width))
        exact = Statevector(bound).expectation_value(SparsePauliOp(label)).real
        assert ev == pytest.approx(exact, abs=1e-9), (name, value)
