"""OpenQASM 3 and 2 parsing with errors that name line and column.

Both the submit function (to reject bad programs before anything is queued) and the
worker (to build the circuit it simulates) call `parse`, so what was accepted is
exactly what runs. Parser quirks are normalised here:

* ``openqasm3.parse`` bails on the first syntax error with an empty message; we parse
  with ANTLR's default strategy and an error listener that keeps line and column.
* qiskit's importers report ``"3,0: ..."`` with 0-based columns; we report 1-based.
* Both importers can raise plain ``IndexError``/``AttributeError``/``RecursionError``
  (and Rust code a ``PanicException``, a BaseException) on hostile input; every such
  failure becomes `InvalidCircuit`, never a 500.
* What parsing may cost (registers, gates, time) is bounded by `qasm_guard`.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from qmill.server import qasm_guard
from qmill.server.errors import InvalidCircuit, RequestError

if TYPE_CHECKING:
    from qiskit import QuantumCircuit

# Include files a program may name. Both are built into the parsers; nothing is ever
# read from the server's filesystem.
ALLOWED_INCLUDES = qasm_guard.ALLOWED_INCLUDES

_VERSION = re.compile(r"\s*OPENQASM\s+([0-9]+)(?:\.[0-9]+)?\s*;")
_BRACKETS = re.compile(r"[()\[\]{}]")
# "<input>:3,0: msg" (qasm2) or "3,0: msg" (qasm3 importer)
_POSITION = re.compile(r"^(?:<input>:)?(\d+),(\d+):\s*(.*)$", re.DOTALL)


# Gates Aer's stabilizer method runs; a circuit made only of these (and measurements)
# is simulated in ~n**2 bits instead of a 16 * 2**n byte statevector. Gates a program
# defines itself are not looked into: such circuits count as needing a statevector.
CLIFFORD_OPS = frozenset(
    {
        "id",
        "x",
        "y",
        "z",
        "h",
        "s",
        "sdg",
        "sx",
        "sxdg",
        "cx",
        "cy",
        "cz",
        "swap",
        "measure",
        "barrier",
        "reset",
        "delay",
    }
)
# A stabilizer tableau is tiny; a flat allowance keeps the accounting simple.
STABILIZER_STATE_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ParsedCircuit:
    circuit: QuantumCircuit
    version: int
    qubits: int
    clbits: int
    depth: int
    size: int
    clifford: bool

    @property
    def state_bytes(self) -> int:
        return state_bytes(self.qubits, self.clifford)


def state_bytes(qubits: int, clifford: bool) -> int:
    """Memory the simulator needs for the state of a circuit (see CLIFFORD_OPS)."""
    return STABILIZER_STATE_BYTES if clifford else 16 * 2**qubits


@dataclass(frozen=True, slots=True)
class Shape:
    """What a linear scan sees before any parser runs: parse cost grows with these."""

    statements: int
    longest_statement: int
    nesting: int


def shape(source: str) -> Shape:
    chunks = source.split(";")
    depth = deepest = 0
    for match in _BRACKETS.finditer(source):
        depth += 1 if match.group() in "([{" else -1
        deepest = max(deepest, depth)
    return Shape(len(chunks) - 1, max(map(len, chunks)), deepest)


def parse(source: str, budget: qasm_guard.Budget | None = None) -> ParsedCircuit:
    """Parse an OpenQASM 3 (default) or 2 program; raise InvalidCircuit on any problem.

    With a ``budget`` (the submit function always passes one), the program is also held
    to it while it is parsed: registers, gates and time (see `qasm_guard`), raising
    LimitExceeded. Without one (the worker, on programs already accepted) it is not.
    """
    qasm_guard.check_characters(source)  # first: later messages may quote the program
    stripped, includes = qasm_guard.strip(source)
    if not stripped.strip():
        raise InvalidCircuit("the program is empty", 1, 1)
    match = _VERSION.match(stripped)
    version = int(match.group(1)) if match else 3
    if version not in ALLOWED_INCLUDES:
        raise InvalidCircuit(f"unsupported OpenQASM version {version}; use 3 or 2", 1, 1)
    qasm_guard.check_includes(stripped, includes, version)
    qasm_guard.prescan(source, stripped, budget)
    try:
        circuit = _parse_qasm2(source, budget) if version == 2 else _parse_qasm3(source, budget)
        size = qasm_guard.expanded_size(circuit)
        qasm_guard.check_parameters(circuit)
    except RequestError:
        raise
    except RecursionError:
        raise InvalidCircuit("program is nested too deeply") from None
    except (KeyboardInterrupt, SystemExit, GeneratorExit, asyncio.CancelledError):
        raise
    except BaseException as exc:  # importer bugs (and Rust panics) on hostile input
        _raise_positioned(exc)
    # The fast importer builds instructions without QuantumCircuit.append's checks.
    for inst in circuit.data:
        if len(set(inst.qubits)) != len(inst.qubits):
            raise InvalidCircuit(f"'{inst.operation.name}' is applied to the same qubit twice")
    if circuit.num_clbits == 0 or not any(
        inst.operation.name == "measure" for inst in circuit.data
    ):
        raise InvalidCircuit("the program measures nothing, so there are no counts to return")
    return ParsedCircuit(
        circuit=circuit,
        version=version,
        qubits=circuit.num_qubits,
        clbits=circuit.num_clbits,
        depth=circuit.depth(),
        size=size,
        clifford=set(circuit.count_ops()) <= CLIFFORD_OPS,
    )


def _parse_qasm2(source: str, budget: qasm_guard.Budget | None = None) -> QuantumCircuit:
    return qasm_guard.load_qasm2(source, budget)


def _parse_qasm3(source: str, budget: qasm_guard.Budget | None = None) -> QuantumCircuit:
    """The Rust importer when it can, else the reference (ANTLR) importer.

    ``qasm3.loads_experimental`` is ~25x faster (0.27 vs 7.8 ms for Bell, measured
    under the same load) but handles less: custom gates, ``if``, ``measure q -> c``
    and parameter expressions make it fail, and then the reference importer decides,
    with the error positions users see. Both build the same standard gates.
    """
    fast = _parse_qasm3_fast(source) if _safe_for_fast_parser(source, budget) else None
    if fast is not None:
        return fast
    return qasm_guard.convert_qasm3(_qasm3_ast(source, budget), budget)


_STDERR_LOCK = threading.Lock()
# The Rust parser recurses on nesting and on operator chains, and a deep enough program
# overflows its stack: a segfault that takes the whole process down (seen with 20000
# nested parentheses and with 100000-term sums; 2000 and 5000 were still handled). Far
# below those, these bounds hand anything unusual to the reference importer instead.
_FAST_MAX_NESTING = 64
_FAST_MAX_STATEMENT_CHARS = 2000


def _safe_for_fast_parser(source: str, budget: qasm_guard.Budget | None = None) -> bool:
    """Also, with a budget: the Rust importer builds a whole program in one call, out of
    reach of the budget's meters, so programs that could build far more than the gate
    limit (broadcasts over wide registers) or that use gate modifiers (``ctrl(n) @``,
    ``pow(k) @``: allocations that grow with n and k) go to the metered importer."""
    found = shape(source)
    if budget is not None and (
        "@" in source or budget.declared_qubits * found.statements > 4 * budget.gates
    ):
        return False
    return (
        found.longest_statement <= _FAST_MAX_STATEMENT_CHARS and found.nesting <= _FAST_MAX_NESTING
    )


def _parse_qasm3_fast(source: str) -> QuantumCircuit | None:
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


def _qasm3_ast(source: str, budget: qasm_guard.Budget | None = None) -> Any:
    """``openqasm3.parse`` with an error listener that keeps the first error's position."""
    from antlr4 import InputStream
    from antlr4.error.ErrorListener import ErrorListener
    from openqasm3._antlr.qasm3Lexer import qasm3Lexer
    from openqasm3._antlr.qasm3Parser import qasm3Parser

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
    parser = qasm3Parser(qasm_guard.token_stream(lexer, budget))
    parser.removeErrorListeners()
    parser.addErrorListener(_Raise())
    return qasm_guard.tree_visitor(budget).visitProgram(parser.program())


def _raise_positioned(exc: BaseException) -> NoReturn:
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
