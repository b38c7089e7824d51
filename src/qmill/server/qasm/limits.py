"""The bounds one program is parsed under, all derived from ``[limits]`` in the settings.

Two situations, one set of numbers:

* Admission (the submit function): the configured limits, and a `Budget` the metered
  parsers spend. Over a limit is a 422 that names it (`LimitExceeded`).
* A program already admitted (the worker, or anyone parsing without settings): the hard
  ceilings, which are the ``le=`` bounds of the same ``[limits]`` fields. A configured
  limit can never exceed its ceiling, so every admitted program passes them; a program
  that does not was never admitted and is refused as one the parsers cannot take
  (`InvalidCircuit`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import annotated_types

from qmill.server.config import LimitsSettings
from qmill.server.errors import LimitExceeded

if TYPE_CHECKING:
    from qmill.server.config import Settings

# How often (in tokens, nodes or bytecodes) the parse deadline is looked at.
_CHECK_EVERY = 512


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


def parse_budget(settings: Settings) -> Budget:
    """What parsing one request may cost: registers no wider than the widest circuit any
    method may run, the gate limit, and ``[limits] max_parse_seconds`` from now."""
    # Imported here: the methods know qasm's gate sets.
    from qmill.server.workload import FloatPrecision, Method, max_qubits

    limits = settings.limits
    widest = max(max_qubits(settings, method, FloatPrecision.SINGLE) for method in Method)
    clifford_wider = limits.max_clifford_qubits >= widest
    return Budget(
        qubits=widest,
        clbits=limits.max_clbits,
        gates=limits.max_gates,
        seconds=limits.max_parse_seconds,
        qubits_limit="qubits (Clifford circuit)" if clifford_wider else "qubits",
    )


def ceiling(key: str) -> int:
    """The hard bound (``le=``) on a ``[limits]`` field."""
    for bound in LimitsSettings.model_fields[key].metadata:
        if isinstance(bound, annotated_types.Le) and isinstance(bound.le, int):
            return bound.le
    raise KeyError(f"[limits] {key} has no upper bound")


@dataclass(frozen=True, slots=True)
class Limits:
    """The text bounds checked before any parser runs, and the budget spent while parsing.

    ``admission`` says which situation this is (see the module docstring): it decides
    whether a program over a bound is a `LimitExceeded` or an `InvalidCircuit`.
    """

    # Semicolons in the program; None: not counted.
    statements: int | None
    # Characters between two semicolons, comments included.
    statement_chars: int
    # Brackets open at once, and unary operators in a row.
    nesting: int
    budget: Budget | None
    admission: bool

    @classmethod
    def for_request(cls, settings: Settings) -> Limits:
        """The configured limits, and a budget from now (a batch shares one `Limits`)."""
        limits = settings.limits
        return cls(
            statements=limits.max_statements,
            statement_chars=limits.max_statement_chars,
            nesting=limits.max_nesting,
            budget=parse_budget(settings),
            admission=True,
        )

    @classmethod
    def ceilings(cls) -> Limits:
        """The hard ceilings, for a program already admitted: nothing is metered."""
        return cls(
            statements=None,
            statement_chars=ceiling("max_statement_chars"),
            nesting=ceiling("max_nesting"),
            budget=None,
            admission=False,
        )
