"""`parse`: the one way a program becomes a circuit, for the submit function and the worker.

Pre-scan, refuse from the text, choose an importer, build (metered at admission),
refuse from the circuit. Both callers go through here, so what was accepted is exactly
what runs.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from qmill.server.errors import InvalidCircuit, RequestError
from qmill.server.qasm import checks, parsers, prescan
from qmill.server.qasm.limits import Limits

if TYPE_CHECKING:
    from qiskit import QuantumCircuit

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
# With a budget, the fast importer is used only when broadcasts could not build more than
# this many times the gate limit: it builds everything before anything can be counted.
_FAST_GATES_FACTOR = 4


def state_bytes(qubits: int, clifford: bool) -> int:
    """Memory the simulator needs for the state of a circuit (see CLIFFORD_OPS)."""
    return STABILIZER_STATE_BYTES if clifford else 16 * 2**qubits


@dataclass(frozen=True, slots=True)
class ProgramShape:
    """What admission keeps of a parsed program: its measurements, not its circuit (a
    program parsed in a parse process comes back as these numbers alone)."""

    version: int
    qubits: int
    clbits: int
    depth: int
    # Gates the simulator will run (see `checks.expanded_size`).
    size: int
    clifford: bool

    @property
    def state_bytes(self) -> int:
        return state_bytes(self.qubits, self.clifford)

    def shape(self) -> ProgramShape:
        """These numbers alone (without a subclass's circuit)."""
        return ProgramShape(
            self.version, self.qubits, self.clbits, self.depth, self.size, self.clifford
        )


@dataclass(frozen=True, slots=True)
class ParsedProgram(ProgramShape):
    circuit: QuantumCircuit


class NotInline(Exception):
    """`parse` with ``inline=True`` was given a program that could cost more than a few
    milliseconds: parse it in a parse process (`qmill.server.qasm.pool`) instead."""


# What `parse` takes inline (on the caller's thread; the submit function's event loop):
# only programs that the fast (Rust) qasm3 importer or the qasm2 parser builds, with at
# most this many statements and registers x statements (a bound on the gates broadcasts
# build). Everything the reference importer would take (gate definitions, modifiers,
# ``if``, ``for``, what the fast importer turns down) can cost seconds in a few hundred
# characters (a chain of 14 gate definitions, 31 statements, took 2 s), so it goes to a
# parse process. The worst inline programs measured: 58 broadcasts over 16 qubits, 6.8
# ms CPU (qasm3) and 7.0 ms (qasm2); a 28-level qasm2 gate chain 1.3 ms; Bell 0.4 ms.
INLINE_STATEMENTS = 64
INLINE_GATES = 1024


class Importer(StrEnum):
    QASM2 = "qasm2"
    # qiskit's Rust OpenQASM 3 importer: one unmetered call.
    FAST = "qasm3-fast"
    # openqasm3's ANTLR parser and qiskit_qasm3_import's converter, metered.
    REFERENCE = "qasm3-reference"


def choose_importer(scan: prescan.Prescan, limits: Limits) -> Importer:
    """Which importer builds the program, from the pre-scan alone.

    The fast importer is ~25x faster (0.27 vs 7.8 ms for Bell, measured under the same
    load) and builds the same standard gates, but it recurses on nesting and on operator
    chains: 20000 nested parentheses and a 16384-term sum overflow its stack, a segfault
    that takes the process down (a 4096-term, 8 KiB statement and 64 brackets were
    handled). So it gets only programs within the text bounds, which `check_text` has
    normally refused already; the test is repeated here so this decision stands alone.
    With a budget (admission) it also gets no program it could build far past the gate
    limit (broadcasts over wide registers) nor gate modifiers (``ctrl(n) @``,
    ``pow(k) @``: allocations that grow with n and k), since nothing meters it.
    """
    if scan.version == 2:
        return Importer.QASM2
    if (
        scan.longest_statement > limits.statement_chars
        or scan.nesting > limits.nesting
        or scan.unary_run > limits.nesting
    ):
        return Importer.REFERENCE
    if scan.modifiers:
        return Importer.REFERENCE
    budget = limits.budget
    if budget is not None:
        named = max(scan.declared_qubits, scan.hardware_qubits)
        if named * scan.statements > _FAST_GATES_FACTOR * budget.gates:
            return Importer.REFERENCE
    return Importer.FAST


def _inline_fits(scan: prescan.Prescan, importer: Importer) -> bool:
    """Whether a program is cheap enough to parse inline (see `INLINE_STATEMENTS`)."""
    named = max(scan.declared_qubits, scan.hardware_qubits, 1)
    return (
        importer is not Importer.REFERENCE
        and scan.statements <= INLINE_STATEMENTS
        and named * scan.statements <= INLINE_GATES
    )


def fast_importer_fits(source: str, limits: Limits | None = None) -> bool:
    """Whether `parse` would first try the fast importer on ``source``."""
    chosen = choose_importer(prescan.scan(source), limits or Limits.ceilings())
    return chosen is Importer.FAST


def parse(program: str, limits: Limits | None = None, inline: bool = False) -> ParsedProgram:
    """Parse an OpenQASM 3 (default) or 2 program; raise a RequestError on any problem.

    With ``limits`` from `Limits.for_request` (the submit function), the program is held
    to the configured limits and parsed against their budget: registers, gates and time,
    raising LimitExceeded. Without (the worker, on programs already accepted), it is held
    only to the hard ceilings, and nothing is metered.

    With ``inline``, a program that could be expensive raises `NotInline` before
    anything is built (or when the fast importer turns it down).
    """
    limits = limits or Limits.ceilings()
    scan = prescan.scan(program)
    checks.check_text(scan, limits)
    importer = choose_importer(scan, limits)
    if inline and not _inline_fits(scan, importer):
        raise NotInline()
    try:
        circuit = _build(program, importer, limits, inline)
        size = checks.expanded_size(circuit)
        checks.check_circuit(circuit)
    except (RequestError, NotInline):
        raise
    except RecursionError:
        raise InvalidCircuit("program is nested too deeply") from None
    except (KeyboardInterrupt, SystemExit, GeneratorExit, asyncio.CancelledError):
        raise
    except BaseException as exc:  # importer bugs (and Rust panics) on hostile input
        parsers.raise_positioned(exc)
    return ParsedProgram(
        circuit=circuit,
        version=scan.version,
        qubits=circuit.num_qubits,
        clbits=circuit.num_clbits,
        depth=circuit.depth(),
        size=size,
        clifford=set(circuit.count_ops()) <= CLIFFORD_OPS,
    )


def _build(program: str, importer: Importer, limits: Limits, inline: bool) -> QuantumCircuit:
    if importer is Importer.QASM2:
        return parsers.load_qasm2(program, limits.budget)
    if importer is Importer.FAST:
        fast = parsers.load_qasm3_fast(program)
        if fast is not None:
            return fast
        if inline:  # the reference importer decides, out of line
            raise NotInline()
    return parsers.load_qasm3_reference(program, limits.budget)
