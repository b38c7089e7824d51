"""A program's circuit as text, drawn by Qiskit's text drawer: what
``GET /tasks/{id}/diagram.txt`` answers. Runs in a parse process (`zygote`), never in a
function's own process: it parses the program (under the same limits and deadline as
at submit) and draws it there.

The drawer's work grows with the wires it draws times the layers (every operation can
be a layer of its own), and it has no deadline of its own. Measured here (qiskit 2.6,
one core): 64 qubits + 64 one-bit registers x 500 operations, 1.1 s and 0.9 MB of
text; 1000 qubits x 100 operations (a Clifford circuit admission accepts), 292 s and
14 MB. Each operation is as wide as its label (its name and parameters), which a
program chooses: 128 wires x 20 gates of a 400-character name drew 2.2 MB. So a circuit
over ``[limits] max_diagram_wires``, ``max_diagram_operations``, or
`LABEL_CHARS_PER_OPERATION` label characters per allowed operation, is refused
(`TooLargeToDraw`, 422) before anything is drawn, and the parse process's deadline
(``[limits] max_parse_seconds``, a SIGKILL) bounds whatever is left.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qmill.server.errors import TooLargeToDraw
from qmill.server.qasm.limits import Limits
from qmill.server.qasm.program import parse

if TYPE_CHECKING:
    from qiskit import QuantumCircuit

    from qmill.server.config import LimitsSettings, Settings

# Columns before the drawer folds a long circuit onto the next rows: a terminal's
# width (curl) with room to spare, and what the page shows without scrolling sideways.
FOLD_COLUMNS = 100
# Label characters (names and parameters) allowed per operation of
# ``max_diagram_operations``, on average: ``rz(θ)`` is 10, ``measure`` 7, ``u(a,b,c)``
# 25. At the default 500 operations, 8000 characters: 500 two-qubit gates with
# 16-character names across 128 wires, each in a layer of its own, drew 3.6 MB in 1.7 s.
LABEL_CHARS_PER_OPERATION = 16
# What a number is drawn as at most (the drawer rounds to 3 digits: ``1.57``, ``π/2``).
_NUMBER_CHARS = 8


def operations(circuit: QuantumCircuit) -> tuple[int, int]:
    """(instructions, label characters) the drawer draws: a control-flow block's body
    once (it draws the body, not every iteration), plus the block itself."""
    from qiskit.circuit import ControlFlowOp

    count = chars = 0
    for instruction in circuit.data:
        operation = instruction.operation
        count += 1
        chars += len(operation.name)
        if isinstance(operation, ControlFlowOp):  # its parameters are its blocks
            for block in operation.blocks:
                inner, inner_chars = operations(block)
                count += inner
                chars += inner_chars
            continue
        for param in operation.params:
            chars += _param_chars(param)
    return count, chars


def _param_chars(param: object) -> int:
    """What the drawer writes for a parameter: a number rounded, an expression as its
    text, a matrix (a unitary gate's) not at all."""
    if isinstance(param, int | float | complex):
        return _NUMBER_CHARS
    if isinstance(param, str):
        return len(param)
    from qiskit.circuit import ParameterExpression

    return len(str(param)) if isinstance(param, ParameterExpression) else 0


def check_drawable(circuit: QuantumCircuit, limits: LimitsSettings) -> None:
    """Refuse what would take the drawer more than a second or two (see the module)."""
    wires = circuit.num_qubits + circuit.num_clbits
    if wires > limits.max_diagram_wires:
        raise TooLargeToDraw("wires (qubits and classical bits)", wires, limits.max_diagram_wires)
    count, chars = operations(circuit)
    if count > limits.max_diagram_operations:
        raise TooLargeToDraw("operations", count, limits.max_diagram_operations)
    allowed = LABEL_CHARS_PER_OPERATION * limits.max_diagram_operations
    if chars > allowed:
        raise TooLargeToDraw("characters of gate names and parameters", chars, allowed)


def draw(program: str, settings: Settings) -> str:
    """The circuit of ``program`` as text; a RequestError (4xx) if it cannot be drawn."""
    parsed = parse(program, Limits.for_request(settings))
    check_drawable(parsed.circuit, settings.limits)
    return str(parsed.circuit.draw("text", fold=FOLD_COLUMNS)) + "\n"
