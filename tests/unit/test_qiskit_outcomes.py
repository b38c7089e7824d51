"""`qmill.qiskit` on the way back: server answers into ``Result`` and ``PrimitiveResult``,
and the things built from ``GET /backend`` (target, job status). Plain data, no server."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pytest
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister, transpile
from qiskit.circuit import Clbit
from qiskit.circuit.library import QFTGate
from qiskit.providers import JobStatus

from qmill.qiskit import build_target, to_program
from qmill.qiskit.jobs import batch_status
from qmill.qiskit.outcomes import (
    backend_result,
    binding_counts,
    estimator_pub_result,
    register_samples,
    sampler_pub_result,
    split_outcome,
)


def _two_registers() -> QuantumCircuit:
    """Register ``a`` (1 bit) declared before ``b`` (2 bits): keys read ``"bb a"``."""
    qc = QuantumCircuit(
        QuantumRegister(3, "q"), ClassicalRegister(1, "a"), ClassicalRegister(2, "b")
    )
    qc.measure([0, 1, 2], [0, 1, 2])
    return qc


def _view(**fields: Any) -> dict[str, Any]:
    return {"task_id": "t-1", "status": "completed", "shots": 8, "method": "statevector"} | fields


def test_split_outcome_reads_registers_right_to_left() -> None:
    assert split_outcome("10 0", [1, 2]) == ["0", "10"]
    assert split_outcome("100", [1, 2]) == ["0", "10"]  # spaces are not relied on
    assert split_outcome("1", [1, 0]) == ["1", ""]
    with pytest.raises(ValueError, match="has 2 bits; the registers have 3"):
        split_outcome("1 0", [1, 2])


def test_samples_keep_each_shots_registers_together() -> None:
    counts = {"11 1": 3, "00 0": 5}  # a and b always agree
    samples = register_samples(counts, [("a", 1), ("b", 2)], 8, np.random.default_rng(1))
    assert samples["a"].shape == (8, 1) and samples["b"].shape == (8, 1)
    pairs = Counter(zip(samples["a"][:, 0].tolist(), samples["b"][:, 0].tolist(), strict=True))
    assert pairs == {(1, 3): 3, (0, 0): 5}
    # Shuffled: not the key order (with this seed), but the same permutation for both.
    assert samples["a"][:, 0].tolist() != [1, 1, 1, 0, 0, 0, 0, 0]


def test_samples_must_add_up_to_the_shots() -> None:
    with pytest.raises(ValueError, match="add up to 3 shots, not 4"):
        register_samples({"0": 3}, [("c", 1)], 4)


def test_wide_registers_pack_big_endian() -> None:
    key = "1" + "0" * 8 + "1"  # 10 bits: bit 9 and bit 0
    samples = register_samples({key: 1}, [("c", 10)], 1)
    assert samples["c"].tolist() == [[0b10, 0b1]]


def test_a_sweep_becomes_bit_arrays_of_its_shape() -> None:
    program = to_program(_two_registers())
    shape = (2, 3)
    leaves = [
        [{"counts": {f"{i:02b} {j % 2}": 8}, "memory": None} for j in range(3)] for i in range(2)
    ]
    view = _view(shape=[2, 3], result=None, results=leaves)
    result = sampler_pub_result(view, program, shape, 8, {"m": 1}, np.random.default_rng(0))
    assert result.data.shape == shape
    assert result.data.a.shape == shape and result.data.a.num_shots == 8
    assert result.data.b.num_bits == 2
    assert result.data.b.get_counts((1, 2)) == {"01": 8}
    assert result.data.a.get_counts((1, 1)) == {"1": 8}
    assert result.metadata["shots"] == 8 and result.metadata["circuit_metadata"] == {"m": 1}
    assert result.metadata["task_id"] == "t-1"
    # The joint counts come back exactly.
    joined = result.join_data(["a", "b"]).get_counts((0, 1))  # a least significant
    assert joined == {"001": 8}


def test_one_binding_reads_result() -> None:
    program = to_program(_two_registers())
    view = _view(shape=[], result={"10 1": 5, "01 0": 3}, results=None)
    pub = sampler_pub_result(view, program, (), 8)
    assert pub.data.a.get_counts() == {"1": 5, "0": 3}
    assert pub.data.b.get_counts() == {"10": 5, "01": 3}
    assert pub.join_data().get_counts() == {"101": 5, "010": 3}


def test_a_shape_other_than_the_pubs_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"answered shape \(2,\), not \(3,\)"):
        binding_counts(_view(shape=[2], results=[{}, {}]), (3,))


def test_expectation_values_keep_the_broadcast_shape() -> None:
    evs = np.arange(12, dtype=float).reshape(3, 4) / 10
    view = _view(shape=[3, 4], evs=evs.tolist(), stds=np.zeros((3, 4)).tolist(), evs_method="exact")
    result = estimator_pub_result(view, (3, 4), None, {"n": 2})
    assert result.data.shape == (3, 4)
    np.testing.assert_array_equal(result.data.evs, evs)
    assert result.data.stds.shape == (3, 4)
    assert result.metadata["target_precision"] == 0.0
    assert result.metadata["evs_method"] == "exact"
    scalar = estimator_pub_result(_view(shape=[], evs=0.25, stds=0.01), (), 0.01)
    assert scalar.data.evs.shape == () and float(scalar.data.evs) == 0.25
    assert float(scalar.data.stds) == 0.01 and scalar.metadata["target_precision"] == 0.01
    with pytest.raises(ValueError, match=r"answered shape \(\), not \(2,\)"):
        estimator_pub_result(_view(shape=[], evs=0.1, stds=0.0), (2,), None)


def test_backend_results_read_like_aers() -> None:
    qc = _two_registers()
    qc.name = "two"
    bell = QuantumCircuit(2, 2, name="bell")
    bell.measure([0, 1], [0, 1])
    views = [
        _view(shape=[], result={"10 1": 2, "01 0": 1}, memory=["10 1", "01 0", "10 1"], shots=3),
        _view(shape=[], result={"11": 2}, memory=["11", "11"], shots=2),
    ]
    result = backend_result(
        views,
        [qc, bell],
        [to_program(qc), to_program(bell)],
        memory=True,
        backend_name="qmill",
        backend_version="0.1.0",
        job_id="b-1",
    )
    assert result.get_counts(0) == {"10 1": 2, "01 0": 1}
    assert result.get_memory(0) == ["10 1", "01 0", "10 1"]
    assert result.get_counts("bell") == {"11": 2}
    assert result.get_memory(1) == ["11", "11"]
    first = result.results[0]
    # What BackendSamplerV2 parses: hex words, bit i = clbit i.
    assert first.data.memory == ["0x5", "0x2", "0x5"]
    assert first.shots == 3 and first.meas_level == 2
    assert first.header["creg_sizes"] == [["a", 1], ["b", 2]]
    assert first.header["memory_slots"] == 3
    assert result.job_id == "b-1" and result.success


def test_interleaved_registers_map_back_to_the_circuits_clbits() -> None:
    bits = [Clbit() for _ in range(4)]
    a = ClassicalRegister(bits=[bits[0], bits[2]], name="a")
    b = ClassicalRegister(bits=[bits[1], bits[3]], name="b")
    qc = QuantumCircuit(QuantumRegister(4), bits, a, b)
    # Server key "b1b0 a1a0": a = 01 (a[0] = 1), b = 10 (b[1] = 1): clbits 0 and 3 set.
    view = _view(shape=[], result={"10 01": 1}, memory=["10 01"], shots=1)
    result = backend_result(
        [view],
        [qc],
        [to_program(qc)],
        memory=True,
        backend_name="q",
        backend_version="",
        job_id="j",
    )
    assert result.results[0].data.memory == [hex(0b1001)]


def test_memory_asked_for_must_come_back() -> None:
    bell = QuantumCircuit(2, 2)
    with pytest.raises(ValueError, match="memory was asked for"):
        backend_result(
            [_view(shape=[], result={"00": 1}, memory=None, shots=1)],
            [bell],
            [to_program(bell)],
            memory=True,
            backend_name="q",
            backend_version="",
            job_id="j",
        )


# --- what GET /backend builds ---------------------------------------------------------------

DESCRIPTION: dict[str, Any] = {
    "name": "qmill",
    "version": "0.1.0",
    "max_qubits": 1000,
    "max_batch_tasks": 1000,
    "max_shots": 100000,
    "min_shots": 1,
    "methods": {
        "statevector": {"max_qubits": 26},
        "stabilizer": {"max_qubits": 5000},
        "matrix_product_state": {"max_qubits": 100, "max_bond_dimension": 64},
        "automatic": {},
    },
    "gates": ["h", "x", "rz", "sx", "cx", "U", "gphase", "no_such_gate", "phase"],
}


def test_the_target_lists_the_servers_gates_all_to_all() -> None:
    target = build_target(DESCRIPTION)
    assert target.num_qubits == 1000  # stabilizer's 5000, capped by max_qubits
    names = set(target.operation_names)
    assert {"h", "x", "rz", "sx", "cx", "u", "p"} <= names
    assert {"measure", "reset", "delay", "if_else", "while_loop", "for_loop"} <= names
    assert not {"no_such_gate", "global_phase", "U", "gphase"} & names
    assert target.build_coupling_map() is None  # no routing: every pair is connected
    assert target.instruction_supported("cx", (17, 503))


def test_the_width_is_the_widest_methods() -> None:
    narrow = DESCRIPTION | {"methods": {"statevector": {"max_qubits": 26}}}
    assert build_target(narrow).num_qubits == 26
    assert build_target(DESCRIPTION | {"methods": {}}).num_qubits == 1000


def test_transpiling_to_the_target_lowers_but_keeps_the_width() -> None:
    qc = QuantumCircuit(3, 3)
    qc.append(QFTGate(3), [0, 1, 2])
    qc.measure([0, 1, 2], [0, 1, 2])
    out = transpile(qc, target=build_target(DESCRIPTION), optimization_level=1, seed_transpiler=1)
    assert out.num_qubits == 3
    assert set(out.count_ops()) <= set(DESCRIPTION["gates"]) | {"u", "p", "measure"}


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        (["completed", "completed"], JobStatus.DONE),
        ([], JobStatus.DONE),
        (["pending", "pending"], JobStatus.QUEUED),
        (["pending", "processing"], JobStatus.RUNNING),
        (["completed", "pending"], JobStatus.RUNNING),
        (["failed", "pending"], JobStatus.RUNNING),
        (["failed", "completed"], JobStatus.ERROR),
        (["failed", "cancelled"], JobStatus.CANCELLED),
        (["cancelled", "completed"], JobStatus.CANCELLED),
    ],
)
def test_batch_status(statuses: list[str], expected: JobStatus) -> None:
    assert batch_status(statuses) is expected
