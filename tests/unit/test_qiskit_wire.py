"""`qmill.qiskit` on the way out: circuits into programs, PUBs into task bodies.

Plain data in, plain data out; no server, no HTTP.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister
from qiskit.circuit import Clbit, Gate, Parameter, ParameterVector
from qiskit.circuit.library import Initialize, n_local
from qiskit.primitives.containers.estimator_pub import EstimatorPub
from qiskit.primitives.containers.sampler_pub import SamplerPub
from qiskit.quantum_info import SparseObservable, SparsePauliOp

from qmill.qiskit import UnsupportedCircuitError, to_program
from qmill.qiskit.bodies import (
    circuit_body,
    estimator_body,
    observables_field,
    parameters_field,
    pauli_sum,
    sampler_body,
)


def _inputs(qasm: str) -> list[str]:
    return re.findall(r"^input float\[64\] (\S+);$", qasm, flags=re.MULTILINE)


# --- programs ------------------------------------------------------------------------------


def test_parameters_get_our_names_not_the_exporters() -> None:
    theta = ParameterVector("θ", 2)
    spaced = Parameter("a b")
    qc = QuantumCircuit(1, 1)
    qc.rx(spaced + 2 * theta[0], 0)
    qc.ry(theta[1], 0)
    qc.measure(0, 0)
    program = to_program(qc)
    # circuit.parameters order: "a b", "θ[0]", "θ[1]"
    assert [p.name for p in program.parameters] == ["a b", "θ[0]", "θ[1]"]
    assert program.names == ("qmill_p0", "qmill_p1", "qmill_p2")
    assert sorted(_inputs(program.qasm)) == list(program.names)
    assert "_θ_0_" not in program.qasm and "_a_b" not in program.qasm
    assert "rx(qmill_p0 + 2*qmill_p1)" in program.qasm


def test_names_the_exporter_would_clash_are_ours_too() -> None:
    """``x`` next to ``x_``: the exporter renames ``x`` to ``x_0``; we never send either."""
    qc = QuantumCircuit(1, 1)
    qc.rx(Parameter("x"), 0)
    qc.ry(Parameter("x_"), 0)
    qc.measure(0, 0)
    program = to_program(qc)
    assert sorted(_inputs(program.qasm)) == ["qmill_p0", "qmill_p1"]
    assert [p.name for p in program.parameters] == ["x", "x_"]


def test_the_callers_circuit_is_left_alone() -> None:
    qc = n_local(2, "ry", "cx", reps=1)
    before = [p.name for p in qc.parameters]
    to_program(qc)
    assert [p.name for p in qc.parameters] == before


def test_initialize_is_inlined_as_reset_and_state_preparation() -> None:
    qc = QuantumCircuit(2, 2)
    qc.append(Initialize([0, 1, 0, 0]), [0, 1])
    qc.measure([0, 1], [0, 1])
    program = to_program(qc)
    assert "initialize" not in program.qasm
    assert "reset q[0];" in program.qasm and "state_preparation" in program.qasm


def test_an_instruction_with_measurements_is_inlined() -> None:
    sub = QuantumCircuit(1, 1, name="sub")
    sub.h(0)
    sub.measure(0, 0)
    qc = QuantumCircuit(1, 1)
    qc.append(sub.to_instruction(), [0], [0])
    program = to_program(qc)
    assert "h q[0];" in program.qasm and "c[0] = measure q[0];" in program.qasm


def test_parameters_reach_gate_definitions_by_our_names() -> None:
    """A composite gate is exported as a definition called with our input (the exporter
    would have named ``t`` ``t_0``: ``t`` is the T gate)."""
    from qiskit.circuit.library import PauliEvolutionGate

    qc = QuantumCircuit(2)
    qc.append(PauliEvolutionGate(SparsePauliOp(["XX", "ZZ"]), Parameter("t")), [0, 1])
    program = to_program(qc)
    assert _inputs(program.qasm) == ["qmill_p0"]
    assert re.search(r"^PauliEvolution\w*\(qmill_p0\) q\[0\], q\[1\];$", program.qasm, re.M)


def test_a_gate_with_no_definition_is_refused_with_its_name() -> None:
    qc = QuantumCircuit(1, 1)
    qc.append(Gate("foo", 1, []), [0])
    qc.measure(0, 0)
    with pytest.raises(UnsupportedCircuitError, match="'foo' that has no definition"):
        to_program(qc)


def test_an_unsupported_circuit_is_a_value_error_too() -> None:
    qc = QuantumCircuit(1, 1)
    qc.append(Gate("foo", 1, []), [0])
    with pytest.raises(ValueError, match="cannot be written as OpenQASM 3"):
        to_program(qc)


def test_loose_and_shared_classical_bits_are_refused() -> None:
    loose = QuantumCircuit(QuantumRegister(1), [Clbit()])
    loose.measure(0, 0)
    with pytest.raises(UnsupportedCircuitError, match="in no ClassicalRegister"):
        to_program(loose)
    creg = ClassicalRegister(2, "c")
    aliased = QuantumCircuit(QuantumRegister(2), creg)
    aliased.add_register(ClassicalRegister(bits=[creg[1]], name="alias"))
    with pytest.raises(UnsupportedCircuitError, match=r"several registers \(c, alias\)"):
        to_program(aliased)


def test_registers_and_where_their_bits_are() -> None:
    bits = [Clbit() for _ in range(4)]
    a = ClassicalRegister(bits=[bits[0], bits[2]], name="a")
    b = ClassicalRegister(bits=[bits[1], bits[3]], name="b")
    qc = QuantumCircuit(QuantumRegister(4), bits, a, b)
    qc.measure(range(4), range(4))
    program = to_program(qc)
    assert program.registers == (("a", 2), ("b", 2))
    # The program declares a then b, so its bits are a[0], a[1], b[0], b[1].
    assert program.clbits == (0, 2, 1, 3)


def test_not_a_circuit() -> None:
    with pytest.raises(TypeError, match="QuantumCircuit"):
        to_program("OPENQASM 3.0;")  # type: ignore[arg-type]


# --- bodies --------------------------------------------------------------------------------


def _two_parameter_circuit() -> QuantumCircuit:
    qc = QuantumCircuit(2)
    qc.ry(Parameter("b"), 0)
    qc.rx(Parameter("a"), 1)
    qc.cx(0, 1)
    qc.measure_all()
    return qc


def test_a_two_dimensional_sweep_is_one_task_with_nested_lists() -> None:
    qc = _two_parameter_circuit()
    values = np.arange(24, dtype=float).reshape(3, 4, 2)  # circuit.parameters: a, b
    pub = SamplerPub.coerce((qc, values), shots=100)
    body = sampler_body(pub, to_program(qc), seed=7, method="statevector")
    assert body["shots"] == 100 and body["seed"] == 7 and body["method"] == "statevector"
    assert set(body) == {"quantum_circuit", "shots", "parameters", "seed", "method"}
    assert body["parameters"]["qmill_p0"] == values[..., 0].tolist()  # a
    assert body["parameters"]["qmill_p1"] == values[..., 1].tolist()  # b
    assert np.shape(body["parameters"]["qmill_p0"]) == (3, 4)


def test_one_binding_is_plain_numbers() -> None:
    qc = _two_parameter_circuit()
    pub = SamplerPub.coerce((qc, [0.5, 1.5]))
    assert parameters_field(to_program(qc), pub.parameter_values) == {
        "qmill_p0": 0.5,
        "qmill_p1": 1.5,
    }


def test_bindings_named_by_parameter_follow_the_names() -> None:
    qc = _two_parameter_circuit()
    a, b = qc.parameters
    pub = SamplerPub.coerce((qc, {b: [1.0, 2.0], a: [3.0, 4.0]}))
    assert parameters_field(to_program(qc), pub.parameter_values) == {
        "qmill_p0": [3.0, 4.0],
        "qmill_p1": [1.0, 2.0],
    }


def test_no_parameters_no_field_and_defaults_are_the_servers() -> None:
    qc = QuantumCircuit(1, 1)
    qc.h(0)
    qc.measure(0, 0)
    body = sampler_body(SamplerPub.coerce(qc, 10), to_program(qc))
    assert set(body) == {"quantum_circuit", "shots"}


def test_a_sweep_over_a_circuit_without_parameters_is_refused() -> None:
    from qiskit.primitives.containers.bindings_array import BindingsArray

    qc = QuantumCircuit(1)
    with pytest.raises(ValueError, match=r"shape \(3,\) for a circuit without parameters"):
        parameters_field(to_program(qc), BindingsArray(shape=(3,)))


def test_observables_keep_their_shape_and_labels() -> None:
    qc = _two_parameter_circuit().remove_final_measurements(inplace=False)
    observables = [[SparsePauliOp.from_list([("XZ", 0.5), ("YY", -1.0)])], ["ZI"], ["IZ"]]
    pub = EstimatorPub.coerce((qc, observables, np.zeros((4, 2))))
    assert pub.shape == (3, 4)
    body = estimator_body(pub, to_program(qc))
    assert body["observables"] == [
        [[["XZ", 0.5], ["YY", -1.0]]],
        [[["ZI", 1.0]]],
        [[["IZ", 1.0]]],
    ]
    assert np.shape(body["parameters"]["qmill_p0"]) == (4,)
    assert "precision" not in body and "shots" not in body


def test_a_single_observable_is_one_pauli_sum() -> None:
    qc = QuantumCircuit(2)
    pub = EstimatorPub.coerce((qc, "ZZ"))
    assert observables_field(pub.observables) == [["ZZ", 1.0]]


def test_projectors_become_pauli_sums() -> None:
    """``|0><0|`` on qubit 0 is (I + Z) / 2."""
    qc = QuantumCircuit(2)
    pub = EstimatorPub.coerce((qc, SparseObservable("X0")))
    terms = dict((label, coeff) for label, coeff in observables_field(pub.observables))
    assert terms == {"XI": 0.5, "XZ": 0.5}
    with pytest.raises(ValueError, match="no terms"):
        pauli_sum({})


def test_precision_is_sent_only_when_positive() -> None:
    qc = QuantumCircuit(1)
    program = to_program(qc)
    exact = estimator_body(EstimatorPub.coerce((qc, "Z"), 0.0), program)
    assert "precision" not in exact
    none = estimator_body(EstimatorPub.coerce((qc, "Z"), None), program)
    assert "precision" not in none
    noisy = estimator_body(EstimatorPub.coerce((qc, "Z"), 0.01), program, seed=3)
    assert noisy["precision"] == 0.01 and noisy["seed"] == 3


def test_backend_bodies_refuse_unbound_circuits() -> None:
    qc = _two_parameter_circuit()
    with pytest.raises(ValueError, match=r"unbound parameters \(a, b\)"):
        circuit_body(to_program(qc), shots=10)
    bound = qc.assign_parameters([0.1, 0.2])
    body = circuit_body(
        to_program(bound),
        shots=np.int64(10),
        memory=True,
        precision="single",
        noise={"readout": 0.1},
    )
    assert body["shots"] == 10 and type(body["shots"]) is int
    assert body["memory"] is True and body["precision"] == "single"
    assert body["noise"] == {"readout": 0.1}


# --- options -------------------------------------------------------------------------------


def test_primitives_refuse_options_they_do_not_know() -> None:
    from qmill.qiskit import EstimatorV2, SamplerV2, UnknownOptionError

    with pytest.raises(UnknownOptionError, match=r"does not know the option\(s\) shots") as caught:
        SamplerV2("http://127.0.0.1:9", options={"shots": 5})
    assert "default_shots" in caught.value.accepted
    with pytest.raises(TypeError, match="default_shots"):  # precision is the estimator's
        EstimatorV2("http://127.0.0.1:9", options={"default_shots": 5})
    with SamplerV2("http://127.0.0.1:9", options={"default_shots": 5, "method": "mps"}) as s:
        assert s.options.default_shots == 5 and s.options.method == "mps"
