"""Parsing: both languages, positioned errors, and the inputs the parsers choke on."""

from __future__ import annotations

import pytest

from qmill.server.errors import InvalidCircuit
from qmill.server.qasm import parse
from tests.conftest import BELL

BELL2 = """OPENQASM 2.0;
include "qelib1.inc";
qreg q[2];
creg c[2];
h q[0];
cx q[0],q[1];
measure q -> c;
"""


def error(source: str) -> InvalidCircuit:
    with pytest.raises(InvalidCircuit) as info:
        parse(source)
    return info.value


def test_qasm3_bell() -> None:
    parsed = parse(BELL)
    assert (parsed.version, parsed.qubits, parsed.clbits) == (3, 2, 2)
    assert parsed.circuit.count_ops() == {"h": 1, "cx": 1, "measure": 2}


def test_qasm2_bell() -> None:
    parsed = parse(BELL2)
    assert (parsed.version, parsed.qubits, parsed.depth) == (2, 2, 3)


def test_version_header_is_optional_and_means_3() -> None:
    assert parse('include "stdgates.inc"; qubit q; bit c; x q; c = measure q;').version == 3


def test_custom_gate_definitions_parse() -> None:
    source = (
        'OPENQASM 3.0; include "stdgates.inc"; gate bell a, b { h a; cx a, b; } '
        "qubit[2] q; bit[2] c; bell q[0], q[1]; c = measure q;"
    )
    assert parse(source).circuit.count_ops()["bell"] == 1


@pytest.mark.parametrize(
    ("source", "line", "column", "words"),
    [
        (
            'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[2] q;\nh q[0]\ncx q[0], q[1];',
            5,
            1,
            "';'",
        ),
        ("OPENQASM 3.0;\nqubit[2] q;\nfoo q[0];", 3, 1, "'foo' is not defined"),
        ('OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\nh q[0]\ncx q[0],q[1];', 5, 1, "';'"),
        ("OPENQASM 2.0;\nqreg q[2];\n  foo q[0];", 3, 3, "'foo' is not defined"),
        ("hello world", 1, 12, "';'"),
    ],
)
def test_errors_name_line_and_column(source: str, line: int, column: int, words: str) -> None:
    exc = error(source)
    assert (exc.line, exc.column) == (line, column)
    assert words in exc.message
    assert f"line {line}, column {column}" in exc.message


@pytest.mark.parametrize(
    "include", ["/etc/passwd", "../../etc/hostname", "other.inc", "qelib1.inc"]
)
def test_qasm3_includes_only_stdgates(include: str) -> None:
    exc = error(f'OPENQASM 3.0;\ninclude "{include}";\nqubit q;')
    assert "is not allowed" in exc.message
    assert (exc.line, exc.column) == (2, 1)


def test_qasm2_includes_only_qelib1() -> None:
    assert "is not allowed" in error('OPENQASM 2.0;\ninclude "/etc/passwd";\nqreg q[1];').message


def test_include_inside_comment_is_ignored() -> None:
    parse(
        'OPENQASM 3.0; // include "/etc/passwd";\ninclude "stdgates.inc"; qubit q; bit c; '
        "c = measure q;"
    )


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("", "empty"),
        ("   \n// only a comment\n", "empty"),
        ("OPENQASM 4.0; qubit q;", "unsupported OpenQASM version 4"),
        ("OPENQASM 3.0; qubit[2] q; bit[2] c; c = measure q[5];", "could not be parsed"),
        ("OPENQASM 3.0; qubit q; bit c; c = measure q;" + "(" * 20000, "nested too deeply"),
    ],
)
def test_rejections_are_invalid_circuit(source: str, words: str) -> None:
    assert words in error(source).message
