"""A ``QuantumCircuit`` as the OpenQASM 3 program the server reads, or a clear refusal.

`to_program` is the one way a circuit goes on the wire. What it does, and why:

* **Parameters get our names.** ``qasm3.dumps`` renames what OpenQASM cannot spell
  (``ParameterVector("θ")[0]`` becomes ``_θ_0_``, ``Parameter("a b")`` ``_a_b``) and
  what would clash (``x`` becomes ``x_0`` next to an ``x_``), by rules that are its own
  and may change. Values are sent by name, so every parameter is first replaced by a
  fresh one named ``qmill_p<i>`` (``i`` its position in ``circuit.parameters``): a
  deterministic, valid identifier that names no gate of ``stdgates.inc`` (the exporter
  turns a parameter ``t`` into ``t_1``, as ``t`` is the T gate), and the exported text is
  checked to declare exactly those inputs.
* **Non-unitary composite instructions are inlined.** The exporter refuses an
  ``Instruction`` that is not a gate ("non-unitary subroutine calls are not yet
  supported"): ``Initialize``, or a sub-circuit with measurements turned into an
  instruction. Their definitions are plain resets, measurements and gates, so they are
  replaced by them (repeatedly, for nested ones) and the circuit means the same.
* **Refused here** (`UnsupportedCircuitError`), because no program could say it:
  a gate or instruction with no definition (``Gate("foo", 1, [])``: the exporter cannot
  write its body and the simulator could not run it); a classical bit in no register or
  in two (loose or aliased bits: counts keys are split by register, and the exporter
  refuses aliasing); and whatever else ``qasm3.dumps`` raises on, with its message.
* **Left to the server** (400 ``InvalidCircuitError`` with line and column): what the
  exporter writes but the server's importer does not read. Tried with qiskit 2.6.1:
  ``switch`` (it needs an ``int`` declaration), classical variables and ``store``
  (``bool`` declarations), conditions beyond comparing a bit or register with a value
  (``c[0] && !c[1]``), and function calls in parameter expressions (``sin(a)``);
  ``if``/``else``, ``while``, ``for``, ``box``, ``reset``, ``delay``, barriers, gate
  definitions (``UnitaryGate``, ``QFTGate``, ``StatePreparation``, ...) and arithmetic
  on parameters (``a + 2*b``) go through. The server is the authority on what it
  reads; a second copy of its rules here would drift from it.
* A parameter that appears only in the global phase is declared but used nowhere (the
  exporter does not write a global phase): it changes neither counts nor expectation
  values, and the server still gets a value for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from qiskit import QuantumCircuit, qasm3
from qiskit.circuit import ControlFlowOp, Gate, Parameter

from qmill.qiskit.errors import UnsupportedCircuitError

# Wire names of parameters: valid OpenQASM 3 identifiers, clashing with no standard gate,
# keyword or register Qiskit names by default.
PARAMETER_PREFIX = "qmill_p"
# Instructions the exporter writes as statements of their own, not as subroutine calls.
_STATEMENTS = frozenset({"measure", "reset", "barrier", "delay", "store"})
# Nesting of composite instructions inlined before giving up (Initialize needs one).
_MAX_INLINE_ROUNDS = 16
_INPUT = re.compile(r"^input float\[64\] (\S+);$", re.MULTILINE)


@dataclass(frozen=True)
class Program:
    """A circuit ready to send: its OpenQASM 3 text and how its parameters are named.

    ``parameters[i]`` (a parameter of the caller's circuit) is sent as ``names[i]``.
    ``registers`` are the circuit's classical registers as (name, size), in the order
    the program declares them, which is the order the server's counts keys list them in
    (right to left). ``clbits[p]`` is the circuit's index of the program's bit ``p``
    (the registers' bits one after the other): the same unless registers interleave.
    """

    qasm: str
    parameters: tuple[Parameter, ...]
    names: tuple[str, ...]
    registers: tuple[tuple[str, int], ...]
    clbits: tuple[int, ...]


def to_program(circuit: QuantumCircuit) -> Program:
    """The program for ``circuit``, or `UnsupportedCircuitError` saying why there is none."""
    if not isinstance(circuit, QuantumCircuit):
        raise TypeError(f"expected a qiskit.QuantumCircuit, not {type(circuit).__name__}")
    check_registers(circuit)
    prepared = lower(circuit)
    # The caller's parameters (the same objects), less any a definition dropped.
    parameters = tuple(prepared.parameters)
    names = tuple(f"{PARAMETER_PREFIX}{i}" for i in range(len(parameters)))
    if parameters:
        fresh = {old: Parameter(name) for old, name in zip(parameters, names, strict=True)}
        prepared = prepared.assign_parameters(fresh, inplace=False)
    try:
        text = qasm3.dumps(prepared)
    except qasm3.QASM3ExporterError as exc:
        raise UnsupportedCircuitError(
            f"circuit {circuit.name!r} cannot be written as OpenQASM 3: {exc.message}"
        ) from exc
    declared = _INPUT.findall(text)
    if sorted(declared) != sorted(names):
        # Our names are chosen so the exporter keeps them; if a future exporter renames
        # them anyway, the values would go to the wrong inputs: stop here instead.
        raise UnsupportedCircuitError(
            f"qasm3.dumps declared the inputs {declared}, expected {list(names)}"
        )
    registers = tuple((creg.name, creg.size) for creg in circuit.cregs)
    clbits = tuple(circuit.find_bit(bit).index for creg in circuit.cregs for bit in creg)
    return Program(text, parameters, names, registers, clbits)


def check_registers(circuit: QuantumCircuit) -> None:
    """Every classical bit must be in exactly one register.

    The server's counts keys are the registers' bits, one group per register; a bit in
    no register or in two has no single place there to read it back from.
    """
    for index, bit in enumerate(circuit.clbits):
        owners = circuit.find_bit(bit).registers
        if len(owners) == 1:
            continue
        if not owners:
            raise UnsupportedCircuitError(
                f"classical bit {index} of circuit {circuit.name!r} is in no "
                "ClassicalRegister; put every classical bit in one register"
            )
        shared = ", ".join(register.name for register, _ in owners)
        raise UnsupportedCircuitError(
            f"classical bit {index} of circuit {circuit.name!r} is in several registers "
            f"({shared}); overlapping registers cannot be sent"
        )


def lower(circuit: QuantumCircuit) -> QuantumCircuit:
    """``circuit`` with its composite non-gate instructions (``Initialize``, sub-circuit
    instructions with measurements or resets) replaced by their definitions."""
    for _ in range(_MAX_INLINE_ROUNDS):
        names = sorted(
            {
                instruction.operation.name
                for instruction in circuit.data
                if _needs_lowering(instruction.operation)
            }
        )
        if not names:
            return circuit
        circuit = circuit.decompose(gates_to_decompose=names)
    return circuit  # what is still left, the exporter names in its refusal


def _needs_lowering(operation: Any) -> bool:
    return (
        not isinstance(operation, Gate | ControlFlowOp)
        and operation.name not in _STATEMENTS
        and not getattr(operation, "_directive", False)
        and operation.definition is not None
    )
