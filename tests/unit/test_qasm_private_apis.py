"""The private qiskit, qiskit_qasm3_import, openqasm3 and antlr4 APIs `qmill.server.qasm`
depends on (its module docstring lists them) still exist with the shape it uses.

An upgrade that moves or reshapes one fails here, with the name of what moved, rather
than as a parse that silently stops being metered or a 500 in production.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def parameters(function: Any) -> list[str]:
    return [p for p in inspect.signature(function).parameters if p != "self"]


def test_qasm2_native_bytecode_api() -> None:
    from qiskit._accelerate import qasm2 as native

    signature = native.bytecode_from_string.__text_signature__
    assert signature == "(string, include_path, custom_instructions, custom_classical, strict)"
    assert native.CustomInstruction.__text_signature__ == (
        "(name, num_params, num_qubits, builtin)"
    )
    for opcode in (
        "Gate",
        "ConditionedGate",
        "Measure",
        "ConditionedMeasure",
        "Reset",
        "ConditionedReset",
        "DeclareQreg",
        "DeclareCreg",
        "DeclareGate",
        "EndDeclareGate",
    ):
        assert hasattr(native.OpCode, opcode), opcode


def test_qasm2_bytecode_items_and_builder() -> None:
    from qiskit import qasm2
    from qiskit._accelerate import qasm2 as native
    from qiskit.qasm2 import parse as builder

    assert parameters(builder.from_bytecode) == ["bytecode", "custom_instructions"]
    custom = list(qasm2.LEGACY_CUSTOM_INSTRUCTIONS)
    items = list(
        native.bytecode_from_string(
            "OPENQASM 2.0; qreg q[3]; creg c[2];",
            [],
            [
                native.CustomInstruction(c.name, c.num_params, c.num_qubits, c.builtin)
                for c in custom
            ],
            (),
            False,
        )
    )
    sizes = [int(i.operands[1]) for i in items if i.opcode == native.OpCode.DeclareQreg]
    assert sizes == [3]
    assert [int(i.operands[1]) for i in items if i.opcode == native.OpCode.DeclareCreg] == [2]
    assert builder.from_bytecode(iter(items), custom).num_qubits == 3


def test_directive_flag() -> None:
    from qiskit.circuit import Barrier
    from qiskit.circuit.library import HGate

    assert Barrier(2)._directive is True
    assert HGate()._directive is False


def test_qasm3_converter_hooks() -> None:
    from qiskit_qasm3_import.converter import ConvertVisitor

    two = ["node", "context"]
    for name in (
        "visit_QuantumGateDefinition",
        "visit_QuantumGate",
        "visit_QuantumMeasurementStatement",
        "visit_QuantumReset",
        "visit_QubitDeclaration",
        "visit_ClassicalDeclaration",
        "_resolve_qarg",
        "_resolve_constant_int",
        "_resolve_constant_float",
        "visit",
    ):
        assert parameters(getattr(ConvertVisitor, name)) == two, name
    assert parameters(ConvertVisitor._apply_gate_modifier) == ["modifier", "gate", "context"]
    assert parameters(ConvertVisitor.convert)[0] == "node"


def test_qasm3_converter_state_has_the_circuit() -> None:
    import openqasm3
    from qiskit_qasm3_import.converter import ConvertVisitor

    program = openqasm3.parse('OPENQASM 3.0; include "stdgates.inc"; qubit[2] q; h q[0];')
    seen: list[int] = []

    class Probe(ConvertVisitor):
        def visit_QuantumGate(self, node: Any, context: Any) -> Any:
            seen.append(context.circuit.num_qubits)
            return super().visit_QuantumGate(node, context)

    assert Probe().convert(program).circuit.num_qubits == 2
    assert seen == [2]


def test_qasm3_ast_fields_the_meters_read() -> None:
    from openqasm3 import ast

    for node, fields in {
        ast.QuantumGateDefinition: {"name", "body"},
        ast.QuantumGate: {"name", "qubits"},
        ast.QuantumMeasurementStatement: {"measure"},
        ast.QuantumMeasurement: {"qubit"},
        ast.QuantumReset: {"qubits"},
        ast.QubitDeclaration: {"size"},
        ast.ClassicalDeclaration: {"type", "init_expression"},
        ast.BitType: {"size"},
        ast.QuantumGateModifier: {"modifier", "argument"},
    }.items():
        assert fields <= set(node.__dataclass_fields__), node.__name__


def test_openqasm3_antlr_classes() -> None:
    from openqasm3._antlr.qasm3Lexer import qasm3Lexer
    from openqasm3._antlr.qasm3Parser import qasm3Parser
    from openqasm3.parser import QASMNodeVisitor

    assert callable(qasm3Parser.program)
    assert callable(qasm3Lexer.removeErrorListeners)
    assert callable(QASMNodeVisitor.visitProgram)
    assert parameters(QASMNodeVisitor.visit) == ["tree"]


def test_antlr_token_stream_hooks() -> None:
    from antlr4 import CommonTokenStream

    assert parameters(CommonTokenStream.fetch) == ["n"]
    assert parameters(CommonTokenStream.consume) == []


def test_the_metered_parsers_still_meter() -> None:
    """End to end through the hooks above: a budget of one gate stops both languages."""
    from qmill.server.errors import LimitExceeded
    from qmill.server.qasm import parsers
    from qmill.server.qasm.limits import Budget

    for load, source in (
        (parsers.load_qasm3_reference, "OPENQASM 3.0; qubit q; U(0, 0, 0) q; U(0, 0, 0) q;"),
        (parsers.load_qasm2, "OPENQASM 2.0; qreg q[1]; U(0, 0, 0) q[0]; U(0, 0, 0) q[0];"),
    ):
        with pytest.raises(LimitExceeded):
            load(source, Budget(qubits=4, clbits=4, gates=1, seconds=10))


def test_what_the_modifier_bounds_assume_about_qiskit() -> None:
    # pow() of a gate is a UnitaryGate, ctrl() of one keeps it as the base gate, and
    # inverting that controls the inverted base again (through its whole matrix).
    from qiskit.circuit import ControlledGate
    from qiskit.circuit.library import UnitaryGate, XGate

    powered = XGate().power(0.5)
    assert isinstance(powered, UnitaryGate)
    controlled = powered.control(2)
    assert isinstance(controlled, ControlledGate)
    assert isinstance(controlled.base_gate, UnitaryGate) and controlled.num_ctrl_qubits == 2
    inverted = controlled.inverse()
    assert isinstance(inverted.base_gate, UnitaryGate) and inverted.num_qubits == 3
