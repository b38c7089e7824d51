"""The three importers, with what they build metered against a `Budget`.

* OpenQASM 2: ``qiskit.qasm2``'s Rust parser, its bytecode stream metered.
* OpenQASM 3, reference: openqasm3's ANTLR parser and qiskit_qasm3_import's converter,
  both metered: tokens, parse-tree nodes, and every register and gate before it is built.
* OpenQASM 3, fast: ``qasm3.loads_experimental`` (Rust), ~25x faster but unmetered: it
  builds a whole program in one call. `program.choose_importer` decides when it may run.

Parser quirks are normalised here: ``openqasm3.parse`` bails on the first syntax error
with an empty message, so the ANTLR parser runs with an error listener that keeps line
and column; qiskit's importers report ``"3,0: ..."`` with 0-based columns, which
`raise_positioned` turns into 1-based ones.
"""

from __future__ import annotations

import os
import re
import threading
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NoReturn

from qmill.server.errors import InvalidCircuit, LimitExceeded
from qmill.server.qasm.checks import finite

if TYPE_CHECKING:
    from qiskit import QuantumCircuit

    from qmill.server.qasm.limits import Budget

# ``pow(k) @ g`` makes qiskit build g's 2**n x 2**n matrix (32 GiB at 16 qubits: an
# allocation that overcommit may grant and the OOM killer then collects), and then
# synthesise it back into gates, which takes seconds from 6 qubits on.
MAX_POW_QUBITS = 3
# ``ctrl(n) @`` (or ``inv @`` of a controlled gate) on a gate given by its matrix, which
# is what ``pow`` makes, has qiskit build the whole controlled 2**w x 2**w matrix and
# synthesise it, in one call that no deadline can interrupt. Measured by the width w of
# the result: 5 qubits 0.05 s (672 gates), 6 qubits 0.3-0.8 s, 7 qubits 3 s, 8 qubits
# 39.8 s (``ctrl(7) @ pow(0.5) @ x``), 9 qubits over 120 s.
MAX_DENSE_QUBITS = 5
# Controls on one gate: qiskit synthesises n controls into ~2 * n**2 gates when the
# circuit is checked (ctrl(100) @ x: 19803 gates, 0.4 s; ctrl(400) @ h: 319209 gates,
# 5.6 s, before the gate limit could refuse it); 64 controls are ~8000 gates.
MAX_CONTROLS = 64
# "<input>:3,0: msg" (qasm2) or "3,0: msg" (qasm3 importer)
_POSITION = re.compile(r"^(?:<input>:)?(\d+),(\d+):\s*(.*)$", re.DOTALL)
_STDERR_LOCK = threading.Lock()


def load_qasm2(source: str, budget: Budget | None) -> QuantumCircuit:
    """``qiskit.qasm2.loads`` with no include path, its bytecode stream metered.

    qasm2's Rust parser yields bytecode lazily; the Python builder allocates registers
    and appends gates as it reads it, so checking each bytecode before it is passed on
    stops a program before its registers or gates are built.
    """
    from qiskit import qasm2
    from qiskit._accelerate import qasm2 as native
    from qiskit.qasm2 import parse as builder

    custom = list(qasm2.LEGACY_CUSTOM_INSTRUCTIONS)
    bytecode = native.bytecode_from_string(
        source,
        [],  # no include path: nothing but the built-in qelib1.inc can ever be read
        [native.CustomInstruction(c.name, c.num_params, c.num_qubits, c.builtin) for c in custom],
        (),
        False,
    )
    if budget is not None:
        bytecode = _metered(bytecode, budget)
    circuit: QuantumCircuit = builder.from_bytecode(bytecode, custom)
    return circuit


def _metered(bytecode: Any, budget: Budget) -> Iterator[Any]:
    from qiskit._accelerate.qasm2 import OpCode

    ops = (  # OpCode is not hashable
        OpCode.Gate,
        OpCode.ConditionedGate,
        OpCode.Measure,
        OpCode.ConditionedMeasure,
        OpCode.Reset,
        OpCode.ConditionedReset,
    )
    qubits = clbits = built = 0
    in_definition = False
    for item in bytecode:
        budget.tick()
        opcode = item.opcode
        if opcode == OpCode.DeclareQreg:
            qubits += int(item.operands[1])
            budget.check_registers(qubits, clbits)
        elif opcode == OpCode.DeclareCreg:
            clbits += int(item.operands[1])
            budget.check_registers(qubits, clbits)
        elif opcode == OpCode.DeclareGate:
            in_definition = True
        elif opcode == OpCode.EndDeclareGate:
            in_definition = False
        elif opcode in ops and not in_definition:
            built += 1
            budget.check_gates(built)
        yield item


def load_qasm3_fast(source: str) -> QuantumCircuit | None:
    """The Rust importer's circuit, or None where it does not handle the program
    (custom gates, ``if``, ``measure q -> c``, parameter expressions): then the
    reference importer decides, with the error positions users see."""
    from qiskit import qasm3
    from qiskit.exceptions import ExperimentalWarning

    # The Rust parser prints its syntax errors straight to fd 2, which would put
    # non-JSON lines into our logs for every program it does not handle; silence fd 2
    # for the call (the lock keeps two such calls from restoring each other's fd).
    with _STDERR_LOCK:
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                return qasm3.loads_experimental(source)
        except (KeyboardInterrupt, SystemExit, GeneratorExit):
            raise
        except BaseException:  # QASM3ImporterError, or a Rust PanicException
            return None
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)


def load_qasm3_reference(source: str, budget: Budget | None) -> QuantumCircuit:
    """openqasm3's ANTLR parser, then qiskit_qasm3_import's converter, both metered."""
    return _convert(_qasm3_ast(source, budget), budget)


def _qasm3_ast(source: str, budget: Budget | None) -> Any:
    """``openqasm3.parse`` with an error listener that keeps the first error's position,
    and a token stream and tree visitor that look at the deadline as they go."""
    from antlr4 import CommonTokenStream, InputStream
    from antlr4.error.ErrorListener import ErrorListener
    from openqasm3._antlr.qasm3Lexer import qasm3Lexer
    from openqasm3._antlr.qasm3Parser import qasm3Parser
    from openqasm3.parser import QASMNodeVisitor

    class _Raise(ErrorListener):  # type: ignore[misc]
        def syntaxError(
            self,
            recognizer: object,
            offending: object,
            line: int,
            column: int,
            msg: str,
            exc: object,
        ) -> None:
            raise InvalidCircuit(msg, line, column + 1)

    lexer = qasm3Lexer(InputStream(source))
    lexer.removeErrorListeners()
    lexer.addErrorListener(_Raise())
    if budget is None:
        tokens = CommonTokenStream(lexer)
        visitor = QASMNodeVisitor()  # type: ignore[no-untyped-call]
    else:
        meter = budget

        class _Tokens(CommonTokenStream):  # type: ignore[misc]
            def fetch(self, n: int) -> int:
                meter.tick(n)
                return int(super().fetch(n))

            def consume(self) -> None:
                meter.tick()
                super().consume()

        class _Visitor(QASMNodeVisitor):
            def visit(self, tree: Any) -> Any:
                meter.tick()
                return super().visit(tree)

        tokens = _Tokens(lexer)
        visitor = _Visitor()  # type: ignore[no-untyped-call]
    parser = qasm3Parser(tokens)
    parser.removeErrorListeners()
    parser.addErrorListener(_Raise())
    return visitor.visitProgram(parser.program())


def _convert(program: Any, budget: Budget | None) -> QuantumCircuit:
    """qiskit_qasm3_import's converter, with what it builds checked before it builds it.

    * Registers: their size is resolved and checked before the register is made.
    * Gates: every application (broadcasts by their width, defined gates by what they
      unroll to) is counted as it is visited, inside loop bodies too; a gate definition
      whose body unrolls past the gate limit is refused where it is defined (each call
      of a defined gate copies its definition, so ten-fold chains of definitions took
      exponential time).
    * Modifiers: ``ctrl(n)`` is checked against the qubit limit before the controlled
      gate (and its 2**n control state) is made; ``pow`` of a gate on more than
      `MAX_POW_QUBITS` qubits is refused (qiskit builds its 4**n-element matrix).
    * Time: the deadline is looked at on every node.
    """
    from qiskit_qasm3_import.converter import ConvertVisitor

    class _Modifiers(ConvertVisitor):
        """Without a budget (a program already admitted), only the modifier bounds."""

        def _apply_gate_modifier(self, modifier: Any, gate: Any, context: Any) -> Any:
            _check_modifier(self, modifier, gate, context, budget)
            return super()._apply_gate_modifier(modifier, gate, context)

    if budget is None:
        unmetered: QuantumCircuit = _Modifiers().convert(program).circuit
        return unmetered
    meter = budget

    class _Bounded(_Modifiers):
        def __init__(self) -> None:
            super().__init__()
            self.costs: dict[str, int] = {}  # defined gate -> gates it unrolls to
            self.spent = 0
            self.defining = False

        def spend(self, gates: int) -> None:
            if not self.defining:
                self.spent += gates
                meter.check_gates(self.spent)

        def width(self, qargs: list[Any], context: Any) -> int:
            sizes = [1]
            for qarg in qargs:
                value = self._resolve_qarg(qarg, context)
                sizes.append(len(value) if isinstance(value, list | tuple) else 1)
                if hasattr(value, "size"):  # a register
                    sizes.append(int(value.size))
            return max(sizes)

        def visit(self, node: Any, context: Any = None) -> Any:
            meter.tick()
            return super().visit(node, context)

        def visit_QuantumGateDefinition(self, node: Any, context: Any) -> Any:
            cost = sum(
                self.costs.get(s.name.name, 1) if type(s).__name__ == "QuantumGate" else 1
                for s in node.body
            )
            name = node.name.name
            if cost > meter.gates:
                raise LimitExceeded(f"gates (gate '{name}' unrolled)", cost, meter.gates)
            self.costs[name] = cost
            self.defining = True
            try:
                return super().visit_QuantumGateDefinition(node, context)
            finally:
                self.defining = False

        def visit_QuantumGate(self, node: Any, context: Any) -> Any:
            cost = self.costs.get(node.name.name, 1)
            self.spend(cost * self.width(node.qubits, context))
            return super().visit_QuantumGate(node, context)

        def visit_QuantumMeasurementStatement(self, node: Any, context: Any) -> Any:
            self.spend(self.width([node.measure.qubit], context))
            return super().visit_QuantumMeasurementStatement(node, context)

        def visit_QuantumReset(self, node: Any, context: Any) -> Any:
            self.spend(self.width([node.qubits], context))
            return super().visit_QuantumReset(node, context)

        def visit_QubitDeclaration(self, node: Any, context: Any) -> Any:
            size = 1 if node.size is None else self._resolve_constant_int(node.size, context)
            meter.check_registers(context.circuit.num_qubits + size, 0)
            return super().visit_QubitDeclaration(node, context)

        def visit_ClassicalDeclaration(self, node: Any, context: Any) -> Any:
            sized = getattr(node.type, "size", None)
            if type(node.type).__name__ == "BitType" and sized is not None:
                size = self._resolve_constant_int(sized, context)
                meter.check_registers(0, context.circuit.num_clbits + size)
            init = node.init_expression
            if init is not None and type(init).__name__ == "QuantumMeasurement":
                self.spend(self.width([init.qubit], context))
            return super().visit_ClassicalDeclaration(node, context)

    circuit: QuantumCircuit = _Bounded().convert(program).circuit
    return circuit


def _check_modifier(
    visitor: Any, modifier: Any, gate: Any, context: Any, budget: Budget | None
) -> None:
    """Refuse a modifier before qiskit builds what it makes, by what that would cost.

    * ``pow``: a matrix of the gate's width (`MAX_POW_QUBITS`), and a finite exponent.
    * ``ctrl``/``negctrl``: a count of at least one, at most `MAX_CONTROLS` controls on
      the gate in all, no wider than the widest circuit (with a budget), and, on a gate
      given by its matrix, a result no wider than `MAX_DENSE_QUBITS`.
    * ``inv`` of a controlled gate given by its matrix rebuilds it (qiskit inverts the
      base and controls it again), so it is held to `MAX_DENSE_QUBITS` too.

    Every composition goes through here one modifier at a time, innermost first, in
    gate definitions as in statements, so the bounds hold for any chain of them.
    """
    kind = modifier.modifier.name
    argument = modifier.argument
    if kind in ("ctrl", "negctrl"):
        count = 1 if argument is None else visitor._resolve_constant_int(argument, context)
        wanted = gate.num_qubits + count
        if budget is not None and (count < 1 or wanted > budget.qubits):
            raise LimitExceeded(budget.qubits_limit, wanted, budget.qubits)
        controls = int(getattr(gate, "num_ctrl_qubits", 0)) + count
        if controls > MAX_CONTROLS:
            raise LimitExceeded("controls on one gate", controls, MAX_CONTROLS)
        if _dense(gate) and wanted > MAX_DENSE_QUBITS:
            raise LimitExceeded(_DENSE_LIMIT, wanted, MAX_DENSE_QUBITS)
    elif kind == "inv":
        if _dense(gate) and gate.num_qubits > MAX_DENSE_QUBITS:
            raise LimitExceeded(_DENSE_LIMIT, gate.num_qubits, MAX_DENSE_QUBITS)
    elif kind == "pow":
        if gate.num_qubits > MAX_POW_QUBITS:
            raise InvalidCircuit(
                f"pow() of a gate on {gate.num_qubits} qubits is not supported "
                f"(at most {MAX_POW_QUBITS})"
            )
        exponent = 1.0 if argument is None else visitor._resolve_constant_float(argument, context)
        if not finite(exponent):
            raise InvalidCircuit(f"pow({exponent}) is not a finite power")


_DENSE_LIMIT = "qubits of a gate built from its matrix (ctrl or inv of pow)"


def _dense(gate: Any) -> bool:
    """Whether qiskit controls or inverts ``gate`` through its whole matrix: a
    UnitaryGate (``pow`` makes one), or a gate controlling one."""
    from qiskit.circuit.library import UnitaryGate

    return isinstance(gate, UnitaryGate) or isinstance(
        getattr(gate, "base_gate", None), UnitaryGate
    )


def raise_positioned(exc: BaseException) -> NoReturn:
    """Any importer failure as InvalidCircuit, with a 1-based position when it has one."""
    text = _unquote(str(exc).strip())
    match = _POSITION.match(text)
    if match:
        line, column, message = int(match.group(1)), int(match.group(2)) + 1, match.group(3)
        raise InvalidCircuit(message.strip(), line, column) from None
    detail = str(exc) or type(exc).__name__
    raise InvalidCircuit(f"could not be parsed ({type(exc).__name__}: {detail})") from None


def _unquote(text: str) -> str:
    """QiskitError's str() is the repr of its message: drop one pair of outer quotes."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text
