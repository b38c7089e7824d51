"""OpenQASM 3 and 2 into qiskit circuits, for programs that are an attacker's input.

The submit function parses every program it is sent, and the worker parses it again to
build what it simulates; both call `parse`. Without bounds, measured here:
``qubit[99999999] q;`` made qiskit allocate ~800 MB (Rust aborted the process when that
failed); ``h q;`` on a 1000-qubit register grows the circuit 1000 gates a statement; a
1 MiB program costs the ANTLR parser 40-70 s of CPU and 650-830 MB; deep nesting
overflows the Rust importer's stack (a segfault); ``for int i in [0:100000000]`` is one
instruction to ``size()`` and 10**8 gates to the simulator; ``rz(1e99999)`` is an
infinite angle. So, in order:

* `prescan`: one linear pass over the text measures what parsing will cost;
* `checks`: refuses from those measurements (against `limits`, which come from
  ``[limits]`` in the settings, their hard ceilings being the bounds of those fields),
  and, after parsing, from the circuit;
* `program`: chooses the importer from the pre-scan and runs it;
* `parsers`: the importers, metered by a `Budget` at admission, and the gate modifiers
  bounded by what qiskit would build for them (``ctrl(7) @ pow(0.5) @ x`` built a
  256 x 256 matrix and synthesised it for 39.8 s in one call);
* `pool` and `zygote`: the submit function parses every program that is not cheap
  enough to parse inline (`NotInline`) in a parse process, SIGKILLed at the deadline.

Every exception a parser raises on hostile input becomes `InvalidCircuit` (400), never
a 500.

Private APIs this package depends on (``tests/unit/test_qasm_private_apis.py`` pins
each, so an upgrade that moves one fails there, not in production):

* ``qiskit._accelerate.qasm2``: ``bytecode_from_string(string, include_path,
  custom_instructions, custom_classical, strict)``, ``CustomInstruction(name,
  num_params, num_qubits, builtin)``, and ``OpCode`` with ``Gate``, ``ConditionedGate``,
  ``Measure``, ``ConditionedMeasure``, ``Reset``, ``ConditionedReset``,
  ``DeclareQreg``, ``DeclareCreg``, ``DeclareGate``, ``EndDeclareGate``; bytecode items
  have ``.opcode`` and ``.operands`` (a register's size at ``operands[1]``).
* ``qiskit.qasm2.parse.from_bytecode(bytecode, custom_instructions)``, an internal
  module of ``qiskit.qasm2``.
* ``qiskit.circuit.Instruction._directive`` (barriers and other directives).
* ``qiskit_qasm3_import.converter.ConvertVisitor``: subclassed; overrides ``visit``,
  ``visit_QuantumGateDefinition``, ``visit_QuantumGate``,
  ``visit_QuantumMeasurementStatement``, ``visit_QuantumReset``,
  ``visit_QubitDeclaration``, ``visit_ClassicalDeclaration`` and
  ``_apply_gate_modifier(modifier, gate, context)``, calls ``_resolve_qarg``,
  ``_resolve_constant_int`` and ``_resolve_constant_float`` (node, context), and reads
  ``convert(program).circuit`` and ``context.circuit``.
* ``openqasm3._antlr.qasm3Lexer.qasm3Lexer`` and ``openqasm3._antlr.qasm3Parser.
  qasm3Parser`` (``program()``), the generated ANTLR classes ``openqasm3.parse`` wraps,
  and ``openqasm3.parser.QASMNodeVisitor`` (``visit``, ``visitProgram``).
* ``antlr4.CommonTokenStream.fetch(n)`` and ``consume()``, overridden to meter tokens.
* ``qiskit.circuit.library.UnitaryGate`` (what ``Gate.power`` returns, and whose
  ``control`` builds the whole controlled matrix) and ``ControlledGate.base_gate`` and
  ``num_ctrl_qubits`` (``ControlledGate.inverse`` controls the inverted base again).
"""

from qmill.server.qasm.checks import ALLOWED_INCLUDES
from qmill.server.qasm.limits import Budget, Limits, parse_budget
from qmill.server.qasm.program import (
    CLIFFORD_OPS,
    Importer,
    NotInline,
    ParsedProgram,
    ProgramShape,
    choose_importer,
    fast_importer_fits,
    parse,
    state_bytes,
)

__all__ = [
    "ALLOWED_INCLUDES",
    "CLIFFORD_OPS",
    "Budget",
    "Importer",
    "Limits",
    "NotInline",
    "ParsedProgram",
    "ProgramShape",
    "choose_importer",
    "fast_importer_fits",
    "parse",
    "parse_budget",
    "state_bytes",
]
