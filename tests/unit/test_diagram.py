"""A task's circuit drawn as text (`qasm.diagram`, what GET /tasks/{id}/diagram.txt
answers), and the bounds that keep the drawer from running for minutes: 1000 qubits x
100 operations, a Clifford circuit admission accepts, took Qiskit's text drawer 292 s."""

from __future__ import annotations

import time

import pytest

from qmill.server.config import Settings
from qmill.server.errors import LimitExceeded, TooLargeToDraw
from qmill.server.qasm import diagram, pool, zygote

Q3 = 'OPENQASM 3.0; include "stdgates.inc"; '
BELL = Q3 + "qubit[2] q; bit[2] c; h q[0]; cx q[0], q[1]; c = measure q;"


def refused(program: str) -> TooLargeToDraw:
    started = time.perf_counter()
    with pytest.raises(TooLargeToDraw) as info:
        diagram.draw(program, Settings())
    assert time.perf_counter() - started < 5  # refused before drawing, not after
    return info.value


def test_bell_is_drawn_by_qiskits_text_drawer() -> None:
    text = diagram.draw(BELL, Settings())
    lines = text.splitlines()
    assert lines[1].startswith("q_0: ┤ H ├──■──")
    assert lines[3].startswith("q_1: ─────┤ X ├")
    assert lines[5].startswith("c: 2/═")
    assert text.endswith("\n")


def test_a_long_circuit_is_folded() -> None:
    text = diagram.draw(Q3 + "qubit[1] q; " + "h q; " * 40, Settings())
    assert max(len(line) for line in text.splitlines()) <= diagram.FOLD_COLUMNS
    assert text.count("q: ┤ H ├") == 3  # the wire goes on after each fold, marked «


def test_a_wide_clifford_circuit_is_refused_before_it_is_drawn() -> None:
    error = refused(Q3 + "qubit[1000] q; h q; cx q[0], q[999];")
    assert error.status_code == 422
    assert error.message == (
        "the circuit is too large to draw: 1000 wires (qubits and classical bits), "
        "at most 128 are drawn"
    )
    assert (error.limit, error.value, error.allowed) == (
        "wires (qubits and classical bits)",
        1000,
        128,
    )


def test_too_many_operations_and_too_long_labels_are_refused() -> None:
    assert refused(Q3 + "qubit q; " + "x q; " * 501).limit == "operations"
    # A loop's body is drawn once, so it counts once (with the loop itself).
    assert diagram.draw(Q3 + "qubit q; for int i in [0:9999] { x q; }", Settings())
    name = "g" * 200
    labels = Q3 + f"gate {name} a {{ x a; }} qubit q; " + f"{name} q; " * 50
    assert refused(labels).limit == "characters of gate names and parameters"
    wider = Settings.model_validate({"limits": {"max_diagram_operations": 1000}})
    assert name in diagram.draw(labels, wider)


def test_the_refusal_survives_the_trip_from_a_parse_process() -> None:
    error = refused(Q3 + "qubit[200] q; h q;")
    back = pool.decode_error(zygote.encode_error(error))
    assert isinstance(back, TooLargeToDraw) and isinstance(back, LimitExceeded)
    assert (back.message, back.detail, back.allowed) == (error.message, error.message, 128)
