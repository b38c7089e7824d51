"""What parsing one hostile program may cost: bounds enforced before and inside the parsers.

The submit function parses every program it is sent, so a program is an attacker's
input until proven otherwise. Without these bounds, measured here:

* ``qubit[99999999] q;`` made qiskit allocate ~800 MB for the register (Rust aborted
  the process when that failed); ``qreg q[99999999];`` the same through qasm2.
* ``qubit[1000] q; h q; h q; ...`` (broadcasts) grows the circuit by 1000 gates per
  statement, far past ``max_gates``, before the gate count can be checked.
* A 1 MiB program costs the ANTLR parser 40-70 s of CPU and 650-830 MB of memory, and
  a long run of ``(`` makes its prediction quadratic before it hits ``RecursionError``.
* ``for int i in [0:100000000] { x q[0]; }`` is one instruction to ``size()`` but
  10**8 gates to the simulator; so is a chain of gates defined by earlier gates.
* ``rz(1e99999)`` is an infinite angle.

So `prescan` refuses, from the text alone and before any parser runs, control
characters and lone surrogates, nesting deeper than `MAX_NESTING`, includes other than
the standard libraries, and registers wider than the limits; and a `Budget` travels into
both parsers, which stop (422) as soon as the program is over the gate limit or parsing
has taken ``[limits] max_parse_seconds``. After parsing, `expanded_size` counts loop
bodies once per iteration and defined gates by their definitions, and
`check_parameters` refuses non-finite angles.
"""

from __future__ import annotations

import ast
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qmill.server.errors import InvalidCircuit, LimitExceeded

if TYPE_CHECKING:
    from qiskit import QuantumCircuit

# Brackets ((, [, {) open at once. Real programs stay under ten; ANTLR's prediction turns
# quadratic on deep nesting long before Python's recursion limit stops it.
MAX_NESTING = 64
# Characters between two semicolons (comments excluded). The longest real statement is a
# barrier or measurement across a wide register (~8 KiB for 1000 qubits); one 1 MiB
# statement (``barrier q,q,q,...`` or ``rz(1+1+1+...)``) costs the parser a minute.
MAX_STATEMENT_CHARS = 32 * 1024
# ``pow(k) @ g`` makes qiskit build g's 2**n x 2**n matrix (32 GiB at 16 qubits: an
# allocation that overcommit may grant and the OOM killer then collects), and then
# synthesise it back into gates, which takes seconds from 6 qubits on.
MAX_POW_QUBITS = 3
# How often (in tokens, nodes or bytecodes) the parse deadline is looked at.
_CHECK_EVERY = 512

ALLOWED_INCLUDES = {3: frozenset({"stdgates.inc"}), 2: frozenset({"qelib1.inc"})}

# Comments and string literals, left to right, so that "//" inside a string is not a
# comment and "include" inside a comment or string is not an include.
_LEXEMES = re.compile(
    r"//[^\n]*|/\*.*?(?:\*/|\Z)|\"[^\"\r\n]*\"?|'[^'\r\n]*'?|\binclude\b", re.DOTALL
)
_FILE_NAME = re.compile(r"\s*(?:\"([^\"\r\n]*)\"|'([^'\r\n]*)')")
_BAD_CHARACTER = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
_BRACKET = re.compile(r"[(\[{)\]}]")
_UNARY_RUN = re.compile(r"(?:[-+~!]\s*){" + str(MAX_NESTING + 1) + "}")
_SIZED = re.compile(r"\b(qubit|bit)\s*\[([^\]\n]*)\]|\b(qreg|creg)\s+[^\s\[;]+\s*\[([^\]\n]*)\]")
_HARDWARE_QUBIT = re.compile(r"\$([0-9]{1,4000})")
_UNSIZED = re.compile(r"\b(qubit|bit)\b(?!\s*\[)")


@dataclass(slots=True)
class Budget:
    """What parsing one request may use; a batch shares one budget across its programs.

    ``qubits``/``clbits`` bound the registers a program may declare (the widest circuit
    any program may have), ``gates`` the instructions the parsers may build, and
    ``seconds`` the wall time from the budget's creation.
    """

    qubits: int
    clbits: int
    gates: int
    seconds: float
    # The limit ``qubits`` is, as LimitExceeded names it (the Clifford one when wider).
    qubits_limit: str = "qubits"
    deadline: float = field(init=False)
    # Qubits the program text declares (set by `prescan`): bounds what broadcasts build.
    declared_qubits: int = field(default=0, init=False)
    _ticks: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.deadline = time.monotonic() + self.seconds

    def tick(self, count: int = 1) -> None:
        """Count parser work; look at the clock every `_CHECK_EVERY` units."""
        self._ticks += count
        if self._ticks >= _CHECK_EVERY:
            self._ticks = 0
            self.check_time()

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise LimitExceeded("parse seconds", f"over {self.seconds:g}", self.seconds)

    def check_registers(self, qubits: int, clbits: int) -> None:
        if qubits > self.qubits:
            raise LimitExceeded(self.qubits_limit, qubits, self.qubits)
        if clbits > self.clbits:
            raise LimitExceeded("classical bits", clbits, self.clbits)

    def check_gates(self, built: int) -> None:
        if built > self.gates:
            raise LimitExceeded("gates", f"over {self.gates}", self.gates)


# --- before any parser ------------------------------------------------------------------


def strip(source: str) -> tuple[str, list[int]]:
    """The program with comments blanked (newlines kept, so positions stay right), and
    the offsets of its ``include`` keywords (none inside a comment or a string)."""
    out: list[str] = []
    last = 0
    includes: list[int] = []
    for match in _LEXEMES.finditer(source):
        text = match.group(0)
        if text.startswith("/"):
            out.append(source[last : match.start()])
            out.append(re.sub(r"[^\n]", " ", text))
            last = match.end()
        elif text == "include":
            includes.append(match.start())
    out.append(source[last:])
    return "".join(out), includes


def check_includes(stripped: str, includes: list[int], version: int) -> None:
    """Every ``include`` must name a standard library, in quotes.

    The parsers are configured never to read a file (qasm2 gets no include path, the
    qasm3 importer knows only stdgates.inc); this makes the refusal explicit and early.
    """
    allowed = ALLOWED_INCLUDES[version]
    for offset in includes:
        name = _FILE_NAME.match(stripped, offset + len("include"))
        filename = None if name is None else (name.group(1) or name.group(2) or "")
        if filename not in allowed:
            line, column = line_col(stripped, offset)
            shown = "" if filename is None else f' "{filename}"'
            raise InvalidCircuit(
                f"include{shown} is not allowed; OpenQASM {version} programs may include "
                f"only {', '.join(sorted(allowed))}",
                line,
                column,
            )


def check_characters(source: str) -> None:
    """Control characters (NUL included) and lone surrogates: no parser or store wants
    them (a lone surrogate cannot even be encoded as UTF-8 to store the task: that was
    a 500), and error messages that quote the program must stay encodable."""
    bad = _BAD_CHARACTER.search(source)
    if bad is not None:
        line, column = line_col(source, bad.start())
        kind = "a lone surrogate" if "\ud800" <= bad.group(0) <= "\udfff" else "a control character"
        raise InvalidCircuit(
            f"character U+{ord(bad.group(0)):04X} ({kind}) is not allowed in a program",
            line,
            column,
        )


def prescan(source: str, stripped: str, budget: Budget | None) -> None:
    """Refuse, from the text alone, what no parser should ever be handed."""
    check_characters(source)
    _check_nesting(stripped)
    _check_statement_length(stripped)
    if budget is not None:
        _check_declarations(stripped, budget)


def _check_nesting(stripped: str) -> None:
    unary = _UNARY_RUN.search(stripped)
    if unary is not None:  # "- - - ... 1" nests like brackets, without any
        line, column = line_col(stripped, unary.start())
        raise InvalidCircuit(
            f"nested too deeply: more than {MAX_NESTING} unary operators in a row", line, column
        )
    if sum(stripped.count(c) for c in "([{") <= MAX_NESTING:
        return
    depth = 0
    for match in _BRACKET.finditer(stripped):
        if match.group(0) in "([{":
            depth += 1
            if depth > MAX_NESTING:
                line, column = line_col(stripped, match.start())
                raise InvalidCircuit(
                    f"nested too deeply: more than {MAX_NESTING} open brackets", line, column
                )
        else:
            depth = max(0, depth - 1)


def _check_statement_length(stripped: str) -> None:
    if len(stripped) <= MAX_STATEMENT_CHARS:
        return
    start = 0
    for statement in stripped.split(";"):
        if len(statement) > MAX_STATEMENT_CHARS:
            line, column = line_col(stripped, start)
            raise InvalidCircuit(
                f"a statement is longer than {MAX_STATEMENT_CHARS} characters", line, column
            )
        start += len(statement) + 1


def _check_declarations(stripped: str, budget: Budget) -> None:
    """Add up every register a program declares, before a parser allocates any.

    Over-counts rather than under-counts (a cast such as ``bit[8](x)`` looks like a
    declaration). A size that is not a constant integer expression is refused: the
    reference importer cannot resolve one either.
    """
    qubits = clbits = 0
    for match in _SIZED.finditer(stripped):
        kind = match.group(1) or match.group(3)
        text = match.group(2) if match.group(1) else match.group(4)
        size = _constant(text)
        if size is None:
            line, column = line_col(stripped, match.start())
            raise InvalidCircuit(
                f"the size of a {kind} register must be a constant integer, not {text.strip()!r}",
                line,
                column,
            )
        if kind in ("qubit", "qreg"):
            qubits += size
        else:
            clbits += size
    for match in _UNSIZED.finditer(stripped):
        if match.group(1) == "qubit":
            qubits += 1
        else:
            clbits += 1
    budget.check_registers(qubits, clbits)
    # Hardware qubits: the importer makes every qubit up to the highest index named, so
    # ``x $99999999;`` allocated 10**8 qubits (and held the event loop while it did).
    highest = max((int(m.group(1)) for m in _HARDWARE_QUBIT.finditer(stripped)), default=-1)
    budget.check_registers(highest + 1, 0)
    budget.declared_qubits = max(qubits, highest + 1)


_CAP = 2**63


def _constant(text: str) -> int | None:
    """A register size: an integer literal, or literals with + - * and parentheses.

    Evaluated by hand on Python's AST (the literal syntax is the same, underscores and
    0x/0o/0b included) with every intermediate clamped, so no expression is expensive.
    """
    text = text.strip()
    if not text or len(text) > 64:
        return None
    try:
        tree = ast.parse(text, mode="eval").body
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None

    def value(node: ast.expr) -> int | None:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return min(node.value, _CAP)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd | ast.USub):
            inner = value(node.operand)
            return None if inner is None else (inner if isinstance(node.op, ast.UAdd) else -inner)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub | ast.Mult):
            left, right = value(node.left), value(node.right)
            if left is None or right is None:
                return None
            if isinstance(node.op, ast.Add):
                result = left + right
            elif isinstance(node.op, ast.Sub):
                result = left - right
            else:
                result = left * right
            return max(-_CAP, min(result, _CAP))
        return None

    return value(tree)


def line_col(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, column


# --- inside the parsers -----------------------------------------------------------------


def token_stream(lexer: Any, budget: Budget | None) -> Any:
    """ANTLR's token stream, counting tokens lexed and consumed against the deadline."""
    from antlr4 import CommonTokenStream

    if budget is None:
        return CommonTokenStream(lexer)
    meter = budget

    class _Bounded(CommonTokenStream):  # type: ignore[misc]
        def fetch(self, n: int) -> int:
            meter.tick(n)
            return int(super().fetch(n))

        def consume(self) -> None:
            meter.tick()
            super().consume()

    return _Bounded(lexer)


def tree_visitor(budget: Budget | None) -> Any:
    """openqasm3's parse-tree-to-AST visitor, looking at the deadline as it goes."""
    from openqasm3.parser import QASMNodeVisitor

    if budget is None:
        return QASMNodeVisitor()  # type: ignore[no-untyped-call]
    meter = budget

    class _Bounded(QASMNodeVisitor):
        def visit(self, tree: Any) -> Any:
            meter.tick()
            return super().visit(tree)

    return _Bounded()  # type: ignore[no-untyped-call]


def convert_qasm3(program: Any, budget: Budget | None) -> QuantumCircuit:
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
    from qiskit_qasm3_import import convert
    from qiskit_qasm3_import.converter import ConvertVisitor

    if budget is None:
        return convert(program)
    meter = budget

    class _Bounded(ConvertVisitor):
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

        def _apply_gate_modifier(self, modifier: Any, gate: Any, context: Any) -> Any:
            kind = modifier.modifier.name
            if kind in ("ctrl", "negctrl"):
                argument = modifier.argument
                count = 1 if argument is None else self._resolve_constant_int(argument, context)
                if count < 1 or gate.num_qubits + count > meter.qubits:
                    wanted = gate.num_qubits + count
                    raise LimitExceeded(meter.qubits_limit, wanted, meter.qubits)
            elif kind == "pow":
                if gate.num_qubits > MAX_POW_QUBITS:
                    raise InvalidCircuit(
                        f"pow() of a gate on {gate.num_qubits} qubits is not supported "
                        f"(at most {MAX_POW_QUBITS})"
                    )
                argument = modifier.argument
                exponent = (
                    1.0 if argument is None else self._resolve_constant_float(argument, context)
                )
                if not _finite(exponent):
                    raise InvalidCircuit(f"pow({exponent}) is not a finite power")
            return super()._apply_gate_modifier(modifier, gate, context)

    circuit: QuantumCircuit = _Bounded().convert(program).circuit
    return circuit


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


# --- after parsing ----------------------------------------------------------------------


def expanded_size(circuit: QuantumCircuit) -> int:
    """Gates the simulator will run: loop bodies once per iteration, defined gates by
    their definitions (as the worker's pass manager unrolls them), barriers not at all."""
    from qiskit.circuit.library.standard_gates import get_standard_gate_name_mapping

    native = set(get_standard_gate_name_mapping()) | {"measure", "reset", "delay"}
    memo: dict[str, int] = {}

    def gate_cost(op: Any) -> int:
        if op.name in native or op.name in memo:
            return memo.get(op.name, 1)
        definition = getattr(op, "definition", None)
        if definition is None:  # an opaque gate: the simulator would fail the task later
            raise InvalidCircuit(f"gate '{op.name}' has no definition, so it cannot be simulated")
        memo[op.name] = size(definition)
        return memo[op.name]

    def size(circuit: QuantumCircuit) -> int:
        from qiskit.circuit import ControlFlowOp, ForLoopOp

        total = 0
        for instruction in circuit.data:
            op = instruction.operation
            if isinstance(op, ControlFlowOp):
                reps = _iterations(op.params[0]) if isinstance(op, ForLoopOp) else 1
                total += reps * max((size(block) for block in op.blocks), default=0)
            elif getattr(op, "_directive", False):
                continue
            else:
                total += gate_cost(op)
        return total

    return size(circuit)


def _iterations(indexset: Any) -> int:
    if isinstance(indexset, range):
        # len() overflows past sys.maxsize; the arithmetic does not.
        return max(0, -((indexset.start - indexset.stop) // indexset.step))
    return len(indexset)


def check_parameters(circuit: QuantumCircuit, top: bool = True) -> None:
    """Refuse what the simulator would only fail on later: angles and durations that
    are not finite numbers (``rz(1e99999)`` is +inf), gates given the same qubit twice,
    and parameters nothing binds (``input angle a;``)."""
    from qiskit.circuit import ControlFlowOp

    if top and circuit.num_parameters:
        names = ", ".join(sorted(p.name for p in circuit.parameters)[:5])
        raise InvalidCircuit(f"the program has parameters with no value: {names}")

    for instruction in circuit.data:
        op = instruction.operation
        qubits = instruction.qubits
        if len(set(qubits)) != len(qubits) and not getattr(op, "_directive", False):
            # The reference importer refuses this; the fast one builds it, and the
            # simulator then fails the task.
            raise InvalidCircuit(f"'{op.name}' is applied to the same qubit more than once")
        duration = getattr(op, "duration", None)
        if isinstance(duration, int | float) and not _finite(duration):
            raise InvalidCircuit(f"'{op.name}' has a duration that is not a finite number")
        if isinstance(op, ControlFlowOp):
            for block in op.blocks:
                check_parameters(block, top=False)
            continue
        for param in op.params:
            if isinstance(param, int | float) and not _finite(param):
                raise InvalidCircuit(
                    f"gate '{op.name}' has a parameter that is not a finite number ({param})"
                )


def _finite(value: float) -> bool:
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an integer beyond any float
        return False
