"""The fast (Rust) importer and the reference (ANTLR) importer build the same circuit.

qmill uses the fast one when it accepts a program and falls back to the reference one
otherwise, so wherever both accept a program they must agree gate for gate.
"""

from __future__ import annotations

import random

import pytest
from qiskit import QuantumCircuit, qasm3
from qiskit_qasm3_import import parse as reference_parse

from qmill.server.config import Settings
from qmill.server.errors import LimitExceeded
from qmill.server.qasm import fast_importer_fits as _safe_for_fast_parser
from qmill.server.qasm import parse
from qmill.server.tasks import validate_submit

pytestmark = pytest.mark.filterwarnings("ignore::qiskit.exceptions.ExperimentalWarning")

# Not "id": the reference importer builds it as U(0, 0, 0), the fast one as an IGate
# (the same identity, a different instruction).
ONE = ["h", "x", "y", "z", "s", "sdg", "t", "tdg", "sx"]
ONE_PARAM = ["rx", "ry", "rz", "p"]
TWO = ["cx", "cy", "cz", "swap", "ch"]
TWO_PARAM = ["cp", "crx", "cry", "crz"]


def random_program(rng: random.Random, qubits: int, gates: int) -> str:
    lines = ["OPENQASM 3.0;", 'include "stdgates.inc";', f"qubit[{qubits}] q;", f"bit[{qubits}] c;"]
    for _ in range(gates):
        a, b = rng.sample(range(qubits), 2)
        angle = round(rng.uniform(-3.2, 3.2), 6)
        kind = rng.randrange(5)
        if kind == 0:
            lines.append(f"{rng.choice(ONE)} q[{a}];")
        elif kind == 1:
            lines.append(f"{rng.choice(ONE_PARAM)}({angle}) q[{a}];")
        elif kind == 2:
            lines.append(f"{rng.choice(TWO)} q[{a}], q[{b}];")
        elif kind == 3:
            lines.append(f"{rng.choice(TWO_PARAM)}({angle}) q[{a}], q[{b}];")
        else:
            c = next(i for i in range(qubits) if i not in (a, b))
            lines.append(f"ccx q[{a}], q[{b}], q[{c}];")
    lines.append("c = measure q;")
    return "\n".join(lines)


def signature(circuit: QuantumCircuit) -> list[tuple[str, tuple[int, ...], tuple[float, ...]]]:
    return [
        (
            inst.operation.name,
            tuple(circuit.find_bit(q).index for q in inst.qubits),
            tuple(round(float(p), 9) for p in inst.operation.params),
        )
        for inst in circuit.data
    ]


@pytest.mark.parametrize("seed", range(40))
def test_fast_and_reference_importers_agree(seed: int) -> None:
    rng = random.Random(seed)
    source = random_program(rng, rng.randint(3, 6), rng.randint(1, 40))
    fast = qasm3.loads_experimental(source)
    assert signature(fast) == signature(reference_parse(source))
    assert signature(parse(source).circuit) == signature(fast)


@pytest.mark.parametrize(
    "source",
    [
        'OPENQASM 3.0; include "stdgates.inc"; gate bell a, b { h a; cx a, b; } '
        "qubit[2] q; bit[2] c; bell q[0], q[1]; c = measure q;",
        'OPENQASM 3.0; include "stdgates.inc"; qubit[2] q; bit[2] c; h q[0]; measure q -> c;',
        'OPENQASM 3.0; include "stdgates.inc"; qubit[1] q; bit[1] c; rz(pi/4) q[0]; '
        "c[0] = measure q[0];",
    ],
)
def test_programs_the_fast_importer_rejects_still_parse(source: str) -> None:
    with pytest.raises(Exception):  # noqa: B017, PT011 (any importer error)
        qasm3.loads_experimental(source)
    assert parse(source).qubits >= 1


@pytest.mark.parametrize(
    "expression",
    ["(" * 20000 + "1" + ")" * 20000, "+".join(["1"] * 100000), "-" * 100000 + "1"],
)
def test_inputs_that_crash_the_fast_parser_never_reach_it(expression: str) -> None:
    """These overflow the Rust parser's stack (a segfault: run one in a subprocess to
    see). The fast path must refuse them, and admission refuses them before any parser
    runs (the reference parser would take seconds on them)."""
    source = (
        f'OPENQASM 3.0; include "stdgates.inc"; qubit q; bit c; rz({expression}) q; c = measure q;'
    )
    assert not _safe_for_fast_parser(source)
    with pytest.raises(LimitExceeded):
        validate_submit({"quantum_circuit": source}, Settings())
