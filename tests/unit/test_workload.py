"""Task options as the submit function admits them: the wire forms of parameters and
observables, their checks against the program, method resolution and per-method limits.
Pure logic: no servers (the worker side is tests/integration/test_simulator_workloads.py)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from qmill.server.config import LimitsSettings, Settings, WorkerSettings
from qmill.server.errors import InvalidCircuit, InvalidRequest, LimitExceeded, RequestError
from qmill.server.tasks import Accepted, validate_submit
from qmill.server.workload import (
    FloatPrecision,
    Method,
    broadcast,
    max_qubits,
    observables_from_wire,
    state_bytes,
    sweep_from_wire,
)
from qmill.server.workload.methods import CLIFFORD_STATEVECTOR_QUBITS

HEAD = 'OPENQASM 3.0; include "stdgates.inc"; '
# One parameter, two qubits, measured: a sampling program.
RY = (
    HEAD
    + "input float[64] theta; qubit[2] q; bit[2] c; ry(theta) q[0]; cx q[0], q[1]; c = measure q;"
)
# Two parameters, no measurement: an estimator program.
ANSATZ = (
    HEAD
    + "input float[64] a; input float[64] b; qubit[2] q; ry(a) q[0]; rz(b) q[1]; cx q[0], q[1];"
)
BELL = HEAD + "qubit[2] q; bit[2] c; h q[0]; cx q[0], q[1]; c = measure q;"
T_BELL = HEAD + "qubit[2] q; bit[2] c; h q[0]; t q[0]; cx q[0], q[1]; c = measure q;"


def ghz(n: int, measure: bool = True) -> str:
    body = "h q[0]; " + " ".join(f"cx q[{i}], q[{i + 1}];" for i in range(n - 1))
    return HEAD + f"qubit[{n}] q; bit[{n}] c; {body}" + (" c = measure q;" if measure else "")


def admit(settings: Settings | None = None, **body: Any) -> Accepted:
    return validate_submit(body, settings or Settings())


def refused(settings: Settings | None = None, **body: Any) -> RequestError:
    with pytest.raises(RequestError) as info:
        admit(settings, **body)
    return info.value


# --- parameters -------------------------------------------------------------------------------


def test_one_binding_has_the_empty_shape() -> None:
    sweep = sweep_from_wire({"theta": 0.5})
    assert (sweep.names, sweep.shape, sweep.values) == (["theta"], [], [[0.5]])


def test_a_sweep_of_any_rank_is_flattened_in_c_order() -> None:
    sweep = sweep_from_wire({"b": [[1, 2, 3], [4, 5, 6]], "a": [[0, 0, 0], [1, 1, 1]]})
    assert sweep.names == ["a", "b"]
    assert sweep.shape == [2, 3]
    assert sweep.values == [[0, 0, 0, 1, 1, 1], [1, 2, 3, 4, 5, 6]]


def test_a_list_of_binding_maps_is_a_one_dimensional_sweep() -> None:
    sweep = sweep_from_wire([{"a": 0.1, "b": 1}, {"b": 2, "a": 0.2}])
    assert (sweep.names, sweep.shape, sweep.values) == (["a", "b"], [2], [[0.1, 0.2], [1, 2]])


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ({"a": [1, 2], "b": [1, 2, 3]}, "has shape [3] but 'a' has shape [2]"),
        ({"a": [[1, 2], [3]]}, "not rectangular"),
        ({"a": [[1, 2], 3]}, "not rectangular"),
        ({"a": []}, "empty array"),
        ({"a": float("nan")}, "not a finite number"),
        ({"a": float("inf")}, "not a finite number"),
        ({"a": 10**400}, "not a finite number"),
        ({"a": True}, "must be a number"),
        ({"a": "0.5"}, "must be a number"),
        ({"a": [[[[[[[[[[1]]]]]]]]]]}, "nested deeper"),
        ([{"a": 1}, {"b": 2}], "[1] names other parameters than [0]: missing a; extra b"),
        ([{"a": 1}, 5], "[1] must be an object"),
        ([], "empty array of bindings"),
        ({}, "is empty"),
        ("theta", "must be an object"),
    ],
)
def test_malformed_parameters_say_what_is_wrong(value: object, words: str) -> None:
    error = refused(quantum_circuit=RY, parameters=value)
    assert isinstance(error, InvalidRequest)
    assert error.status_code == 422
    assert words in str(error.detail)


def test_parameters_must_match_the_program_by_name() -> None:
    missing = refused(quantum_circuit=RY)
    assert "no value for 'theta'" in missing.message
    extra = refused(quantum_circuit=RY, parameters={"theta": 1, "phi": 2})
    assert "no parameter 'phi'" in extra.message and "'theta'" in extra.message
    none = refused(quantum_circuit=BELL, parameters={"x": 1})
    assert "it has none" in none.message
    for error in (missing, extra, none):
        assert error.status_code == 422


def test_a_sweep_over_its_limit_is_refused() -> None:
    settings = Settings(limits=LimitsSettings(max_sweep_size=10))
    error = refused(settings, quantum_circuit=RY, parameters={"theta": [0.0] * 11})
    assert isinstance(error, LimitExceeded)
    assert (error.limit, error.value, error.allowed) == ("bindings in a sweep", 11, 10)


def test_shots_over_all_bindings_are_bounded() -> None:
    settings = Settings(limits=LimitsSettings(max_total_shots=1000))
    error = refused(settings, quantum_circuit=RY, shots=100, parameters={"theta": [0.0] * 11})
    assert isinstance(error, LimitExceeded) and error.limit == "shots over all bindings"
    memory = refused(quantum_circuit=RY, shots=60000, memory=True, parameters={"theta": [0, 1]})
    assert isinstance(memory, LimitExceeded) and "with memory" in memory.limit


def test_the_estimated_result_size_is_bounded() -> None:
    settings = Settings(limits=LimitsSettings(max_result_bytes=1024 * 1024))
    wide = ghz(40)  # every shot a distinct 40-bit outcome, in the worst case
    error = refused(settings, quantum_circuit=wide, shots=100_000)
    assert isinstance(error, LimitExceeded) and error.limit == "result bytes (estimated)"
    assert admit(settings, quantum_circuit=wide, shots=1000).plan.shape == []


# --- observables -------------------------------------------------------------------------------


def test_one_pauli_sum_has_the_empty_shape() -> None:
    obs = observables_from_wire([["XX", 0.18], ["ZI", -0.39]])
    assert (obs.shape, obs.sums, obs.labels) == ([], [[("XX", 0.18), ("ZI", -0.39)]], ["XX", "ZI"])


def test_an_array_of_pauli_sums_keeps_its_shape() -> None:
    obs = observables_from_wire([[[["ZZ", 1]]], [[["XX", 1], ["ZZ", 2]]]])
    assert obs.shape == [2, 1]
    assert obs.labels == ["ZZ", "XX"]
    assert obs.terms == 3


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ([["XQ", 1]], "not a Pauli label"),
        ([["XX", float("nan")]], "not a finite number"),
        ([["XX", "1"]], "must be a number"),
        ([["XX"]], "must be a Pauli sum"),
        ([["XX", 1], ["ZZ"]], "[1] must be a [label, coefficient] pair"),
        ([], "must be a Pauli sum"),
        ([[["XX", 1]], [["XX", 1]], [[["XX", 1]]]], "arrays nested unevenly"),
        ("XX", "must be a Pauli sum"),
    ],
)
def test_malformed_observables_say_what_is_wrong(value: object, words: str) -> None:
    error = refused(quantum_circuit=ANSATZ, parameters={"a": 0, "b": 0}, observables=value)
    assert error.status_code == 422
    assert words in str(error.detail)


def test_observables_are_checked_against_the_circuit() -> None:
    params = {"a": 0.1, "b": 0.2}
    width = refused(quantum_circuit=ANSATZ, parameters=params, observables=[["XXX", 1]])
    assert "'XXX' has 3 letters, but the circuit has 2 qubits" in width.message
    mid = HEAD + "qubit[2] q; bit c; h q[0]; c = measure q[0]; cx q[0], q[1];"
    assert "measurements are final" in refused(quantum_circuit=mid, observables=[["ZZ", 1]]).message
    settings = Settings(limits=LimitsSettings(max_observable_terms=2))
    terms = refused(settings, quantum_circuit=ghz(2), observables=[["ZZ", 1], ["XX", 1], ["YY", 1]])
    assert isinstance(terms, LimitExceeded) and terms.limit == "observable terms"


def test_observables_broadcast_with_the_sweep_like_an_estimator_pub() -> None:
    sweep = {"a": [0.0, 0.1, 0.2, 0.3], "b": [0.0] * 4}
    column = [[[["ZZ", 1.0]]], [[["XI", 1.0]]], [[["IZ", 1.0]]]]
    accepted = admit(quantum_circuit=ANSATZ, parameters=sweep, observables=column)
    assert accepted.plan.shape == [3, 4]
    three = [[["ZZ", 1.0]], [["XI", 1.0]], [["IZ", 1.0]]]
    error = refused(quantum_circuit=ANSATZ, parameters=sweep, observables=three)
    assert "do not broadcast" in error.message


def test_broadcast_is_numpys() -> None:
    assert broadcast([3, 1], [4]) == [3, 4]
    assert broadcast([], [2]) == [2]
    assert broadcast([2, 1, 5], [3, 1]) == [2, 3, 5]
    with pytest.raises(ValueError, match=r"\[3\] and \[4\]"):
        broadcast([3], [4])


def test_a_program_without_measurements_needs_observables() -> None:
    error = refused(quantum_circuit=ghz(2, measure=False))
    assert isinstance(error, InvalidCircuit) and "measures nothing" in error.message
    assert admit(quantum_circuit=ghz(2, measure=False), observables=[["ZZ", 1]]).plan.shape == []


# --- method, precision, noise ----------------------------------------------------------------


def test_automatic_resolves_to_what_the_circuit_needs() -> None:
    assert admit(quantum_circuit=ghz(100)).plan.method is Method.STABILIZER
    # A narrow Clifford circuit runs cheaper on the statevector; noisy, on the stabilizer.
    assert admit(quantum_circuit=BELL).plan.method is Method.STATEVECTOR
    assert admit(quantum_circuit=BELL, noise={"depolarizing_2q": 0.01}).plan.method is (
        Method.STABILIZER
    )
    assert admit(quantum_circuit=T_BELL).plan.method is Method.STATEVECTOR
    noisy = {"depolarizing_2q": 0.01}
    assert admit(quantum_circuit=T_BELL, noise=noisy).plan.method is Method.DENSITY_MATRIX
    # A floating point precision is something a stabilizer tableau does not have.
    assert admit(quantum_circuit=BELL, precision="single").plan.method is Method.STATEVECTOR


def test_clifford_circuits_run_on_the_statevector_up_to_the_crossover() -> None:
    narrow = ghz(CLIFFORD_STATEVECTOR_QUBITS)
    assert admit(quantum_circuit=narrow).plan.method is Method.STATEVECTOR
    assert admit(quantum_circuit=ghz(CLIFFORD_STATEVECTOR_QUBITS + 1)).plan.method is (
        Method.STABILIZER
    )
    # Asked for by name, the stabilizer is what runs, however narrow the circuit.
    assert admit(quantum_circuit=BELL, method="stabilizer").plan.method is Method.STABILIZER


def test_each_method_has_its_own_qubit_limit() -> None:
    dm = refused(quantum_circuit=ghz(20), method="density_matrix")
    assert isinstance(dm, LimitExceeded)
    assert (dm.limit, dm.value, dm.allowed) == ("qubits (density_matrix)", 20, 13)
    assert admit(quantum_circuit=ghz(60), method="matrix_product_state").plan.method == (
        Method.MATRIX_PRODUCT_STATE
    )
    sv = refused(quantum_circuit=ghz(30), method="statevector")
    assert isinstance(sv, LimitExceeded) and sv.limit == "qubits"


def test_limits_follow_the_memory_budget_per_method_and_precision() -> None:
    settings = Settings(worker=WorkerSettings(memory_budget_mb=256))
    # 16 * 2**24 = 256 MiB; 8 * 2**25 = 256 MiB in single precision.
    assert max_qubits(settings, Method.STATEVECTOR, None) == 24
    assert max_qubits(settings, Method.STATEVECTOR, FloatPrecision.SINGLE) == 25
    assert max_qubits(settings, Method.DENSITY_MATRIX, None) == 12
    accepted = admit(settings, quantum_circuit=ghz(3) + " t q[0];", method="density_matrix")
    assert accepted.plan.state_bytes == state_bytes(Method.DENSITY_MATRIX, 3, None, 64) == 16 * 64


def test_methods_refuse_what_they_cannot_run() -> None:
    stab = refused(quantum_circuit=T_BELL, method="stabilizer")
    assert "cannot simulate: 't'" in stab.message
    ext = refused(
        quantum_circuit=ghz(2, measure=False), method="extended_stabilizer", observables=[["ZZ", 1]]
    )
    assert "cannot compute expectation values" in ext.message
    single = refused(quantum_circuit=BELL, method="stabilizer", precision="single")
    assert "no floating point precision" in single.message
    noisy = refused(
        quantum_circuit=ghz(2, measure=False),
        method="statevector",
        observables=[["ZZ", 1]],
        noise={"depolarizing_1q": 0.1},
    )
    assert "density matrix" in noisy.message


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("method", "gpu_statevector", "Input should be 'automatic'"),
        ("method", "unitary", "Input should be 'automatic'"),
        ("precision", "half", 'must be "single", "double" or a positive number'),
        ("precision", 0, "positive"),
        ("precision", -1.0, "positive"),
        ("noise", {"depolarizing_1q": 2}, "less than or equal to 1"),
        ("noise", {"readout": -0.1}, "greater than or equal to 0"),
        ("noise", {"readout": "0.1"}, "must be a number"),
        ("noise", {"gates": {"cx": 1.5}}, "less than or equal to 1"),
    ],
)
def test_bad_options_are_422(field: str, value: object, words: str) -> None:
    error = refused(**{"quantum_circuit": BELL, field: value})
    assert error.status_code == 422
    assert words in str(error.detail)


def test_observables_keep_no_shots() -> None:
    error = refused(quantum_circuit=ghz(2, measure=False), observables=[["ZZ", 1]], memory=True)
    assert "memory" in error.message and error.status_code == 422


def test_a_numeric_precision_needs_observables() -> None:
    assert "needs observables" in refused(quantum_circuit=BELL, precision=0.01).message
    accepted = admit(quantum_circuit=ghz(2, measure=False), observables=[["ZZ", 1]], precision=0.01)
    assert accepted.plan.target_precision == 0.01 and accepted.plan.precision is None


def test_noise_gates_must_be_gates_a_noisy_circuit_runs() -> None:
    error = refused(quantum_circuit=BELL, noise={"gates": {"ccx": 0.1}})
    assert "no one- or two-qubit gate is named 'ccx'" in error.message


def test_unknown_fields_are_named_with_the_accepted_ones() -> None:
    error = refused(quantum_circuit=BELL, methd="density_matrix")
    assert error.status_code == 422
    assert error.message.startswith(
        "unknown field 'methd'; accepted fields: quantum_circuit, shots"
    )
    assert error.allowed[:2] == ["quantum_circuit", "shots"]
    nested = refused(quantum_circuit=BELL, noise={"depol": 0.1})
    assert "unknown field 'noise.depol'" in nested.message and "readout" in nested.message


def test_the_state_memory_of_each_method() -> None:
    assert state_bytes(Method.STATEVECTOR, 10, None, 64) == 16 * 2**10
    assert state_bytes(Method.STATEVECTOR, 10, FloatPrecision.SINGLE, 64) == 8 * 2**10
    assert state_bytes(Method.DENSITY_MATRIX, 10, None, 64) == 16 * 4**10
    assert state_bytes(Method.MATRIX_PRODUCT_STATE, 60, None, 16) == 4 * 60 * 16**2 * 16
    assert math.isclose(state_bytes(Method.STABILIZER, 1000, None, 64), 1024 * 1024)
