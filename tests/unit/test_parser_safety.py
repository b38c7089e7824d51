"""Parser safety: each input here once crashed, hung or overran a process, or got a 500.

Every one must now be a fast RequestError (400 InvalidCircuit or 422 LimitExceeded)
raised before the parsers allocate anything large.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from qmill.server.config import Settings
from qmill.server.errors import InvalidRequest, LimitExceeded, RequestError
from qmill.server.http import read_json
from qmill.server.qasm import parse, parse_budget, prescan
from qmill.server.tasks import validate_submit

Q3 = 'OPENQASM 3.0; include "stdgates.inc"; '
Q2 = 'OPENQASM 2.0; include "qelib1.inc"; '
BELL3 = Q3 + "qubit[2] q; bit[2] c; h q[0]; cx q[0], q[1]; c = measure q;"


def refused(source: str, settings: Settings | None = None) -> RequestError:
    started = time.perf_counter()
    with pytest.raises(RequestError) as info:
        validate_submit({"quantum_circuit": source}, settings or Settings())
    # Each is refused before any expensive work (generous: the machine may be loaded).
    assert time.perf_counter() - started < 5
    return info.value


@pytest.mark.parametrize(
    ("source", "limit"),
    [
        # ~800 MB register before: Rust aborted the process when the allocation failed.
        (Q3 + "qubit[99999999] q; bit c; c = measure q[0];", "qubits (Clifford circuit)"),
        (Q3 + "qubit[99999*99999] q; bit c; c = measure q[0];", "qubits (Clifford circuit)"),
        (Q3 + "qreg q[0x7fffffff]; bit c; c = measure q[0];", "qubits (Clifford circuit)"),
        (Q3 + "qubit q; bit[1_000_000_000] c; c[0] = measure q;", "classical bits"),
        (Q2 + "qreg q[99999999]; creg c[1]; measure q[0] -> c[0];", "qubits (Clifford circuit)"),
        (Q2 + "qreg q[1]; creg c[99999999]; measure q[0] -> c[0];", "classical bits"),
        # 10**8 iterations were one instruction to size(), and so accepted.
        (Q3 + "qubit q; bit c; for int i in [0:100000000] { x q; } c = measure q;", "gates"),
        # Broadcasts grew the circuit far past max_gates before it was counted.
        (Q3 + "qubit[1000] q; bit c; " + "h q; " * 100 + "c = measure q[0];", "gates"),
        (Q2 + "qreg q[1000]; creg c[1]; " + "h q; " * 100 + "measure q[0] -> c[0];", "gates"),
    ],
)
def test_oversized_programs_are_refused_before_they_are_built(source: str, limit: str) -> None:
    exc = refused(source)
    assert isinstance(exc, LimitExceeded) and exc.limit == limit


def test_gates_defined_by_gates_count_as_what_they_unroll_to() -> None:
    # Each call of a defined gate copies its definition: ten-fold chains took exponential
    # time to parse (g5: 2 s, g7: minutes). Now refused where the chain gets too big.
    chain = "gate g0 a { x a; x a; x a; x a; x a; x a; x a; x a; x a; x a; } "
    chain += " ".join(f"gate g{i} a {{ " + f"g{i - 1} a; " * 10 + "}" for i in range(1, 8))
    exc = refused(Q3 + chain + " qubit q; bit c; g7 q; c = measure q;")
    assert isinstance(exc, LimitExceeded) and exc.limit == "gates (gate 'g4' unrolled)"
    assert exc.value == 10**5
    # qasm2 defines gates lazily; the unrolled count is checked once the circuit is built.
    exc = refused(Q2 + chain + " qreg q[1]; creg c[1]; g7 q[0]; measure q -> c;")
    assert isinstance(exc, LimitExceeded) and exc.limit == "gates" and exc.value == 10**8 + 1


@pytest.mark.parametrize(
    ("source", "words"),
    [
        # qiskit built g's 65536 x 65536 matrix (32 GiB) for pow() of a 16-qubit gate.
        (
            Q3
            + "gate g a0,a1,a2,a3,a4,a5,a6,a7,a8,a9,a10,a11 { h a0; } qubit[12] q; bit c; "
            + "pow(2) @ g q[0],q[1],q[2],q[3],q[4],q[5],q[6],q[7],q[8],q[9],q[10],q[11]; "
            + "c = measure q[0];",
            "pow() of a gate on 12 qubits",
        ),
        # x $99999999 made the importer create 10**8 hardware qubits, inline on the loop.
        (Q3 + "bit c; x $99999999; c = measure $99999999;", "qubits"),
        # An input nothing binds (no `parameters`): the simulator would fail the task.
        (Q3 + "input angle a; qubit q; bit c; rz(a) q; c = measure q;", "no value for 'a'"),
        (Q3 + "qubit q; bit c; box[1e99999s] { x q; } c = measure q;", "not a finite number"),
        (Q2 + "opaque o a; qreg q[1]; creg c[1]; o q[0]; measure q -> c;", "no definition"),
        (Q3 + "qubit q; bit c; cx q, q; c = measure q;", "same qubit more than once"),
        (Q3 + "qubit q; bit c; rz(" + "-" * 100 + "1) q; c = measure q;", "nested too deeply"),
        # ctrl(10**8) built a 10**8-bit control state and a gate expecting 10**8 qubits.
        (Q3 + "qubit[2] q; bit c; ctrl(99999999) @ x q[0], q[1]; c = measure q[0];", "qubits"),
    ],
)
def test_gate_modifiers_are_bounded(source: str, words: str) -> None:
    assert words in refused(source).message


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("// \ud800\n" + BELL3, "U+D800 (a lone surrogate)"),  # was a 500 from Redis
        (BELL3.replace("h q[0];", "h q[0];\x00"), "U+0000 (a control character)"),
        (Q3 + "qubit q; bit c; rz(" + "(" * 100 + "1" + ")" * 100 + ") q;", "nesting depth"),
        (
            Q3 + "qubit q; bit c; barrier " + ",".join(["q"] * 20000) + "; c = measure q;",
            "one statement",
        ),
        (Q3 + "qubit q; bit c; rz(1e99999) q; c = measure q;", "not a finite number"),
        (Q2 + "qreg q[1]; creg c[1]; rz(1e99999) q[0]; measure q -> c;", "not a finite number"),
        (Q3 + "qubit q; bit c; rz(" + "9" * 400 + ") q; c = measure q;", "not a finite number"),
        ('OPENQASM 2.0; include "/etc//passwd";', 'include "/etc//passwd" is not allowed'),
        ("OPENQASM 2.0; include'/etc/passwd';", 'include "/etc/passwd" is not allowed'),
        ('OPENQASM 3.0; include"../../etc/passwd";', "is not allowed"),
        ("OPENQASM 3.0; include /* a */ '/etc/passwd';", "is not allowed"),
        ("OPENQASM 3.0; include;", "include is not allowed"),
        (Q3 + "const uint n = 4; qubit[n] q;", "must be a constant integer"),
    ],
)
def test_hostile_programs_are_refused_with_a_message(source: str, words: str) -> None:
    exc = refused(source)
    assert words in exc.message, exc.message


def test_includes_in_comments_and_strings_are_not_includes() -> None:
    commented = BELL3.replace("OPENQASM 3.0;", "OPENQASM 3.0; /* include x */")
    source = '// include "/etc/passwd"\n' + commented
    assert validate_submit({"quantum_circuit": source}, Settings()).parsed.qubits == 2


def test_parsing_stops_at_the_deadline() -> None:
    settings = Settings.model_validate({"limits": {"max_parse_seconds": 0.2}})
    # A defined gate sends the program to the reference (metered) importer.
    calls = "g q[0], q[1]; " * 15000
    program = Q3 + "gate g a, b { cx a, b; } qubit[2] q; bit[2] c; " + calls + "c = measure q;"
    started = time.perf_counter()
    exc = refused(program, settings)
    assert isinstance(exc, LimitExceeded) and exc.limit == "parse seconds"
    assert time.perf_counter() - started < 3


def test_a_batch_shares_one_budget() -> None:
    budget = parse_budget(Settings())
    assert budget.qubits == 1000 and budget.gates == 20000
    with pytest.raises(LimitExceeded):
        budget.check_registers(1001, 0)
    budget.deadline = time.monotonic() - 1
    with pytest.raises(LimitExceeded):
        budget.check_time()


@pytest.mark.parametrize(
    ("text", "value"),
    [("5", 5), ("1_000", 1000), ("0x10", 16), ("2*3+1", 7), ("-(4)", -4), ("n", None)],
)
def test_register_sizes_are_evaluated_safely(text: str, value: int | None) -> None:
    assert prescan._constant(text) == value


def test_register_size_arithmetic_is_clamped() -> None:
    assert prescan._constant("99999999*99999999*99999999*99999999") == 2**63


class _Body:
    def __init__(self, raw: bytes) -> None:
        self.headers: dict[str, str] = {"content-type": "application/json"}
        self._raw = raw

    async def stream(self):  # type: ignore[no-untyped-def]
        yield self._raw


def test_bodies_must_be_utf8() -> None:
    for raw in ('{"quantum_circuit": "x"}'.encode("utf-16"), b'\xef\xbb\xbf{"a": 1}'):
        with pytest.raises(InvalidRequest, match="not valid JSON"):
            asyncio.run(read_json(_Body(raw), 1 << 20))  # type: ignore[arg-type]


def test_error_bodies_stay_encodable() -> None:
    from qmill.server.errors import InvalidCircuit as Bad
    from qmill.server.http import error_response

    response = error_response(Bad('include "\ud800" is not allowed'))
    assert response.status_code == 400 and "\ufffd" in response.body.decode()


def test_deeply_nested_json_is_a_422_not_a_500() -> None:
    with pytest.raises(InvalidRequest, match="nested too deeply"):
        asyncio.run(read_json(_Body(b"[" * 200_000), 1 << 20))  # type: ignore[arg-type]


def _qubits(n: int) -> str:
    return ", ".join(f"q[{i}]" for i in range(n))


# Issue 13: one short statement made qiskit build a dense matrix, or synthesise
# thousands of gates, in one call no deadline can interrupt. Each is now refused before
# qiskit starts, by what it would build (the times are the ones measured before).
@pytest.mark.parametrize(
    ("source", "limit", "value"),
    [
        # 39.8 s on the event loop, then a 422 for its gates.
        (f"qubit[8] q; bit c; ctrl(7) @ pow(0.5) @ x {_qubits(8)};", "matrix", 8),
        # pow() makes a 0-qubit matrix of a phase; its controls make it dense.
        (f"qubit[8] q; bit c; ctrl(8) @ pow(0.5) @ gphase(0.2) {_qubits(8)};", "matrix", 8),
        # inv re-controls the base: qiskit rebuilds the whole matrix.
        (f"qubit[7] q; bit c; inv @ ctrl(3) @ ctrl(3) @ pow(0.5) @ x {_qubits(7)};", "matrix", 7),
        # In a gate definition, and on a defined gate.
        (
            "gate g a,b,c,d,e,f,h,i { ctrl(7) @ pow(0.5) @ x a,b,c,d,e,f,h,i; } "
            + f"qubit[8] q; bit c; g {_qubits(8)};",
            "matrix",
            8,
        ),
        (
            "gate g a,b,c { h a; cx a, b; cx b, c; } "
            + f"qubit[6] q; bit c; ctrl(3) @ pow(0.5) @ g {_qubits(6)};",
            "matrix",
            6,
        ),
        # 319209 gates synthesised (5.6 s) before the gate limit could refuse them.
        (f"qubit[401] q; bit c; ctrl(400) @ h {_qubits(401)};", "controls on one gate", 400),
        (f"qubit[81] q; bit c; ctrl(40) @ ctrl(40) @ x {_qubits(81)};", "controls", 80),
    ],
)
def test_modifiers_are_bounded_before_qiskit_builds_them(
    source: str, limit: str, value: int
) -> None:
    exc = refused(Q3 + source + " c = measure q[0];")
    assert isinstance(exc, LimitExceeded) and limit in exc.limit and exc.value == value


def test_a_controlled_matrix_within_the_bound_is_accepted() -> None:
    source = Q3 + f"qubit[5] q; bit c; ctrl(4) @ pow(0.5) @ x {_qubits(5)}; c = measure q[0];"
    assert validate_submit({"quantum_circuit": source}, Settings()).parsed.qubits == 5


def test_gates_of_one_name_are_counted_by_their_width() -> None:
    # Both are 'mcx': counted by name, the second cost what the first did (63 gates in
    # all, where the simulator runs 1777), whichever came first.
    first = f"qubit[31] q; bit c; ctrl(3) @ x {_qubits(4)}; ctrl(30) @ x {_qubits(31)};"
    second = f"qubit[31] q; bit c; ctrl(30) @ x {_qubits(31)}; ctrl(3) @ x {_qubits(4)};"
    sizes = {parse(Q3 + s + " c = measure q[0];").size for s in (first, second)}
    assert len(sizes) == 1 and sizes.pop() > 1700
