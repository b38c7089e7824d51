"""Admission limits: each refusal names the limit and the allowed value."""

from __future__ import annotations

import pytest

from qmill.server.config import Settings
from qmill.server.errors import InvalidRequest, LimitExceeded
from qmill.server.tasks import validate_submit
from tests.conftest import BELL


def ghz(n: int) -> str:
    gates = " ".join(f"cx q[{i}], q[{i + 1}];" for i in range(n - 1))
    head = f'OPENQASM 3.0; include "stdgates.inc"; qubit[{n}] q; bit[{n}] c;'
    return f"{head} h q[0]; {gates} c = measure q;"


def wide_t(n: int) -> str:  # a T gate makes it non-Clifford: it needs a statevector
    head = f'OPENQASM 3.0; include "stdgates.inc"; qubit[{n}] q; bit[1] c;'
    return f"{head} t q[0]; c[0] = measure q[0];"


def limits(**values: object) -> Settings:
    return Settings.model_validate({"limits": values})


def refused(body: dict[str, object], settings: Settings) -> LimitExceeded:
    with pytest.raises(LimitExceeded) as info:
        validate_submit(body, settings)
    return info.value


def test_clifford_circuits_may_be_much_wider_than_statevectors() -> None:
    settings = limits()
    assert validate_submit({"quantum_circuit": ghz(100)}, settings).parsed.clifford
    exc = refused({"quantum_circuit": wide_t(30)}, settings)
    assert (exc.limit, exc.value, exc.allowed) == ("qubits", 30, settings.statevector_qubit_limit)
    assert "allowed maximum is 26" in exc.message


def test_qubit_limit_follows_the_worker_memory_budget() -> None:
    settings = Settings.model_validate({"worker": {"memory_budget_mb": 48}})
    validate_submit({"quantum_circuit": wide_t(21)}, settings)  # 32 MiB fits
    assert refused({"quantum_circuit": wide_t(22)}, settings).allowed == 21  # 64 MiB does not


@pytest.mark.parametrize(
    ("values", "body", "limit"),
    [
        ({"max_shots": 10}, {"quantum_circuit": BELL, "shots": 11}, "shots"),
        ({"max_clifford_qubits": 50}, {"quantum_circuit": ghz(51)}, "qubits (Clifford circuit)"),
        ({"max_clbits": 1}, {"quantum_circuit": BELL}, "classical bits"),
        ({"max_gates": 3}, {"quantum_circuit": BELL}, "gates"),
        ({"max_depth": 2}, {"quantum_circuit": BELL}, "depth"),
        ({"max_statements": 5}, {"quantum_circuit": BELL}, "statements"),
        ({}, {"quantum_circuit": BELL + "x" * 5000}, "characters in one statement"),
        (
            {"max_nesting": 2},
            {"quantum_circuit": BELL.replace("q[0]", "q[((0))]")},
            "nesting depth",
        ),
    ],
)
def test_each_limit(values: dict[str, object], body: dict[str, object], limit: str) -> None:
    exc = refused(body, limits(**values))
    assert exc.limit == limit
    assert str(exc.allowed) in exc.message


def test_too_few_shots_is_invalid() -> None:
    with pytest.raises(InvalidRequest):
        validate_submit({"quantum_circuit": BELL, "shots": 0}, limits())
