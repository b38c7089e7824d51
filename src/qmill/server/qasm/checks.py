"""The refusals: from the pre-scan before any parser runs, and on the circuit after.

Each rule is written once and used by every caller of `qasm.parse` (the submit
function and the worker), so what was accepted is exactly what runs.
"""

from __future__ import annotations

import math
from functools import cache
from typing import TYPE_CHECKING, Any

from qmill.server.errors import InvalidCircuit, LimitExceeded
from qmill.server.qasm.prescan import Prescan, line_col

if TYPE_CHECKING:
    from qiskit import QuantumCircuit

    from qmill.server.qasm.limits import Limits

# Include files a program may name, by OpenQASM version. Both are built into the
# parsers; nothing is ever read from the server's filesystem.
ALLOWED_INCLUDES = {3: frozenset({"stdgates.inc"}), 2: frozenset({"qelib1.inc"})}


def check_text(scan: Prescan, limits: Limits) -> None:
    """Refuse, from the pre-scan alone, what no parser should ever be handed.

    The size bounds come first (they are cheap to report and quote nothing), then
    characters: every later message may quote the program, so it must be encodable.
    """
    where = scan.stripped
    if limits.statements is not None and scan.statements > limits.statements:
        raise LimitExceeded("statements", scan.statements, limits.statements)
    if scan.nesting > limits.nesting:
        if limits.admission:
            raise LimitExceeded("nesting depth", scan.nesting, limits.nesting)
        line, column = line_col(where, scan.nesting_at)
        raise InvalidCircuit(
            f"nested too deeply: more than {limits.nesting} open brackets", line, column
        )
    if scan.longest_statement > limits.statement_chars:
        if limits.admission:
            raise LimitExceeded(
                "characters in one statement", scan.longest_statement, limits.statement_chars
            )
        line, column = line_col(where, scan.longest_statement_at)
        raise InvalidCircuit(
            f"a statement is longer than {limits.statement_chars} characters", line, column
        )
    _check_characters(scan)
    if scan.empty:
        raise InvalidCircuit("the program is empty", 1, 1)
    if scan.version not in ALLOWED_INCLUDES:
        raise InvalidCircuit(f"unsupported OpenQASM version {scan.version}; use 3 or 2", 1, 1)
    _check_includes(scan)
    if scan.unary_run > limits.nesting:
        line, column = line_col(where, scan.unary_run_at)
        raise InvalidCircuit(
            f"nested too deeply: more than {limits.nesting} unary operators in a row",
            line,
            column,
        )
    if limits.budget is not None:
        if scan.bad_register is not None:
            bad = scan.bad_register
            line, column = line_col(where, bad.offset)
            raise InvalidCircuit(
                f"the size of a {bad.kind} register must be a constant integer, not {bad.size!r}",
                line,
                column,
            )
        limits.budget.check_registers(scan.declared_qubits, scan.declared_clbits)
        # ``x $99999999;`` made the importer allocate 10**8 qubits (on the event loop).
        limits.budget.check_registers(scan.hardware_qubits, 0)


def _check_characters(scan: Prescan) -> None:
    """Control characters (NUL included) and lone surrogates: no parser or store wants
    them (a lone surrogate cannot even be encoded as UTF-8 to store the task: that was
    a 500), and error messages that quote the program must stay encodable."""
    char = scan.bad_character
    if char is None:
        return
    line, column = line_col(scan.stripped, scan.bad_character_at)
    kind = "a lone surrogate" if "\ud800" <= char <= "\udfff" else "a control character"
    raise InvalidCircuit(
        f"character U+{ord(char):04X} ({kind}) is not allowed in a program", line, column
    )


def _check_includes(scan: Prescan) -> None:
    """Every ``include`` must name a standard library, in quotes.

    The parsers are configured never to read a file (qasm2 gets no include path, the
    qasm3 importer knows only stdgates.inc); this makes the refusal explicit and early.
    """
    allowed = ALLOWED_INCLUDES[scan.version]
    for include in scan.includes:
        if include.filename not in allowed:
            line, column = line_col(scan.stripped, include.offset)
            shown = "" if include.filename is None else f' "{include.filename}"'
            raise InvalidCircuit(
                f"include{shown} is not allowed; OpenQASM {scan.version} programs may include "
                f"only {', '.join(sorted(allowed))}",
                line,
                column,
            )


# --- after parsing ----------------------------------------------------------------------


def expanded_size(circuit: QuantumCircuit) -> int:
    """Gates the simulator will run: loop bodies once per iteration, defined gates by
    their definitions (as the worker's pass manager unrolls them), barriers not at all.

    ``for int i in [0:100000000] { x q[0]; }`` is one instruction to ``size()`` but 10**8
    gates to the simulator; so is a chain of gates defined by earlier gates.
    """
    from qiskit.circuit import ControlFlowOp, ForLoopOp

    native = _native_names()
    # By name and width: gates of one name differ in size with their width (``ctrl(3) @
    # x`` and ``ctrl(30) @ x`` are both 'mcx', 14 and 3424 gates; a name-only memo counted
    # the second as the first), and not otherwise (a definition's parameters are angles).
    memo: dict[tuple[str, int], int] = {}

    def gate_cost(op: Any) -> int:
        if op.name in native:
            return 1
        key = (op.name, op.num_qubits)
        if key not in memo:
            definition = getattr(op, "definition", None)
            if definition is None:  # an opaque gate: the simulator would fail the task later
                raise InvalidCircuit(
                    f"gate '{op.name}' has no definition, so it cannot be simulated"
                )
            memo[key] = size(definition)
        return memo[key]

    def size(circuit: QuantumCircuit) -> int:
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


@cache
def _native_names() -> frozenset[str]:
    """What the simulator runs as one gate. Once per process: qiskit builds an object of
    every standard gate for the mapping, 0.15 ms a call, 40% of parsing a Bell program."""
    from qiskit.circuit.library.standard_gates import get_standard_gate_name_mapping

    return frozenset(get_standard_gate_name_mapping()) | {"measure", "reset", "delay"}


def _iterations(indexset: Any) -> int:
    if isinstance(indexset, range):
        # len() overflows past sys.maxsize; the arithmetic does not.
        return max(0, -((indexset.start - indexset.stop) // indexset.step))
    return len(indexset)


def check_circuit(circuit: QuantumCircuit) -> None:
    """Refuse what the simulator would only fail on later: instructions given the same
    qubit twice, and angles and durations that are not finite numbers (``rz(1e99999)``
    is +inf). Free parameters and whether the program measures are the task's concern
    (`qmill.server.workload.plan`): a sweep binds them, observables need no measurement."""
    _check_instructions(circuit)


def _check_instructions(circuit: QuantumCircuit) -> None:
    from qiskit.circuit import ControlFlowOp

    for instruction in circuit.data:
        op = instruction.operation
        qubits = instruction.qubits
        # Every instruction, directives included, whichever importer built it: the fast
        # importer builds ``cx q, q`` (the reference one refuses it), and the simulator
        # then fails the task.
        if len(set(qubits)) != len(qubits):
            raise InvalidCircuit(f"'{op.name}' is applied to the same qubit more than once")
        duration = getattr(op, "duration", None)
        if isinstance(duration, int | float) and not finite(duration):
            raise InvalidCircuit(f"'{op.name}' has a duration that is not a finite number")
        if isinstance(op, ControlFlowOp):
            for block in op.blocks:
                _check_instructions(block)
            continue
        for param in op.params:
            if isinstance(param, int | float) and not finite(param):
                raise InvalidCircuit(
                    f"gate '{op.name}' has a parameter that is not a finite number ({param})"
                )


def finite(value: float) -> bool:
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an integer beyond any float
        return False
