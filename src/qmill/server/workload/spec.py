"""What a task asks the simulator for, beyond its program: the typed, normalized options.

A request's ``parameters`` and ``observables`` arrive as JSON in the shapes users
write (a map of arrays, a list of maps; a Pauli sum or a nested array of them) and
are turned here, once, into one normal form each (`Sweep`, `Observables`): names,
a shape and flat values in C order. The submit function checks them against the
program (`qmill.server.workload.plan`); the worker binds and evaluates them; both
read the same normal form, which is also what Redis holds.

Everything here is pure data handling: no qiskit, no settings. A malformed value is
a ``ValueError`` whose message says what is wrong and where; pydantic turns it into
the 422 the request gets.
"""

from __future__ import annotations

import math
import re
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

# A nested JSON array deeper than this is not a sweep anyone means (and recursing on
# it is how a 100000-deep ``[[[[...]]]]`` would exhaust the stack).
MAX_RANK = 8
PAULI_LABEL = re.compile(r"^[IXYZ]+$")


class Method(StrEnum):
    """Aer's simulation methods. `AUTOMATIC` is resolved at submit
    (`qmill.server.workload.plan.resolve_method`), so the worker always runs a named one."""

    AUTOMATIC = "automatic"
    STATEVECTOR = "statevector"
    DENSITY_MATRIX = "density_matrix"
    STABILIZER = "stabilizer"
    MATRIX_PRODUCT_STATE = "matrix_product_state"
    EXTENDED_STABILIZER = "extended_stabilizer"


class FloatPrecision(StrEnum):
    """The simulator's floating point precision: single halves the state's memory."""

    SINGLE = "single"
    DOUBLE = "double"


class EvsMethod(StrEnum):
    """How expectation values were made, as the task's ``evs_method`` reports it."""

    # From the simulator's state (statevector, density matrix, stabilizer or MPS).
    EXACT = "exact"
    # The exact value plus normal noise with standard deviation ``precision``, as
    # qiskit-aer's EstimatorV2 does for a requested precision.
    NORMAL_APPROXIMATION = "normal_approximation"


def _json_number(value: object) -> object:
    """A JSON number, strictly: ``"0.5"`` and ``true`` are not numbers."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a number")
    return value


Probability = Annotated[
    float, Field(ge=0.0, le=1.0, allow_inf_nan=False), BeforeValidator(_json_number)
]
# Gate names as OpenQASM writes them.
GateName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
MAX_NOISE_GATES = 64


class Noise(BaseModel):
    """A noise model given as data, built into a qiskit-aer ``NoiseModel`` by the worker.

    Depolarizing errors after every one- and two-qubit gate (a circuit with noise is
    lowered to one- and two-qubit gates first, so every gate gets its error), a
    symmetric readout error on every measured qubit, and per-gate depolarizing
    probabilities in ``gates`` that replace the default for that gate.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    depolarizing_1q: Probability | None = Field(
        default=None, description="Depolarizing probability after every one-qubit gate."
    )
    depolarizing_2q: Probability | None = Field(
        default=None, description="Depolarizing probability after every two-qubit gate."
    )
    readout: Probability | None = Field(
        default=None, description="Probability that a measured bit is read flipped."
    )
    gates: dict[GateName, Probability] = Field(
        default_factory=dict,
        max_length=MAX_NOISE_GATES,
        description='Per-gate depolarizing probabilities (`{"cx": 0.02}`), replacing the '
        "default for that gate's width.",
    )

    @property
    def empty(self) -> bool:
        return (
            self.depolarizing_1q is None
            and self.depolarizing_2q is None
            and self.readout is None
            and not self.gates
        )


class Sweep(BaseModel):
    """Parameter values in normal form: ``values[k]`` are the values of ``names[k]`` for
    every binding, flattened in C order; ``shape`` is the bindings' shape (``[]``: one)."""

    model_config = ConfigDict(frozen=True)

    names: list[str]
    shape: list[int]
    values: list[list[float]]

    @property
    def size(self) -> int:
        return math.prod(self.shape)


class Observables(BaseModel):
    """Pauli sums in normal form: ``sums`` flattened in C order over ``shape``, each a
    list of (label, coefficient) terms."""

    model_config = ConfigDict(frozen=True)

    shape: list[int]
    sums: list[list[tuple[str, float]]]

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def terms(self) -> int:
        return sum(len(s) for s in self.sums)

    @property
    def labels(self) -> list[str]:
        """Every distinct Pauli label, in first-seen order: one expectation value each."""
        return list(dict.fromkeys(label for terms in self.sums for label, _ in terms))


# --- From the wire ------------------------------------------------------------------------


def _number(value: object, where: str) -> float:
    """A finite JSON number (``true`` is not one; NaN and 1e999 are refused)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where} must be a number, not {_kind(value)}")
    try:
        number = float(value)
    except OverflowError:
        raise ValueError(f"{where} is not a finite number") from None
    if not math.isfinite(number):
        raise ValueError(f"{where} is not a finite number")
    return number


def _kind(value: object) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


def _flatten(value: object, where: str) -> tuple[list[int], list[float]]:
    """A number or a rectangular nested array of numbers: its shape and flat values."""
    if not isinstance(value, list):
        return [], [_number(value, where)]
    shape: list[int] = []
    level: list[Any] = value
    while True:
        shape.append(len(level))
        if len(shape) > MAX_RANK:
            raise ValueError(f"{where} is nested deeper than {MAX_RANK} levels")
        if not level or not isinstance(level[0], list):
            break
        level = level[0]
    if 0 in shape:
        raise ValueError(f"{where} is an empty array")
    flat: list[float] = []
    _collect(value, shape, 0, flat, where)
    return shape, flat


def _collect(value: list[Any], shape: list[int], depth: int, out: list[float], where: str) -> None:
    if len(value) != shape[depth]:
        raise ValueError(
            f"{where} is not rectangular: an array of {len(value)} where "
            f"{shape[depth]} were expected"
        )
    if depth == len(shape) - 1:
        for item in value:
            if isinstance(item, list):
                raise ValueError(f"{where} is not rectangular: arrays nested unevenly")
            out.append(_number(item, where))
        return
    for item in value:
        if not isinstance(item, list):
            raise ValueError(f"{where} is not rectangular: arrays nested unevenly")
        _collect(item, shape, depth + 1, out, where)


def sweep_from_wire(value: object) -> Sweep:
    """``{"a": 0.5}`` (one binding), ``{"a": [...], "b": [...]}`` (a sweep of any rank,
    equal shapes) or ``[{"a": 0.1}, {"a": 0.2}]`` (a sweep of shape [n])."""
    if isinstance(value, list):
        return _sweep_from_maps(value)
    if not isinstance(value, dict):
        raise ValueError(
            f"must be an object (name to values) or an array of such objects, not {_kind(value)}"
        )
    if not value:
        raise ValueError("is empty: leave it out when the program has no parameters")
    names = sorted(value)
    shape: list[int] | None = None
    values = []
    for name in names:
        this, flat = _flatten(value[name], f"'{name}'")
        if shape is not None and this != shape:
            first = names[0]
            raise ValueError(
                f"'{name}' has shape {this} but '{first}' has shape {shape}: every "
                "parameter needs a value for every binding"
            )
        shape = this
        values.append(flat)
    assert shape is not None
    return Sweep(names=names, shape=shape, values=values)


def _sweep_from_maps(value: list[Any]) -> Sweep:
    if not value:
        raise ValueError("is an empty array of bindings")
    first = value[0]
    if not isinstance(first, dict) or not first:
        raise ValueError("[0] must be an object with a value for every parameter")
    names = sorted(first)
    values: list[list[float]] = [[] for _ in names]
    for index, binding in enumerate(value):
        if not isinstance(binding, dict):
            raise ValueError(f"[{index}] must be an object, not {_kind(binding)}")
        if sorted(binding) != names:
            missing = sorted(set(names) - set(binding))
            extra = sorted(set(binding) - set(names))
            said = "; ".join(
                part
                for part in (
                    f"missing {', '.join(missing)}" if missing else "",
                    f"extra {', '.join(extra)}" if extra else "",
                )
                if part
            )
            raise ValueError(f"[{index}] names other parameters than [0]: {said}")
        for k, name in enumerate(names):
            values[k].append(_number(binding[name], f"[{index}].{name}"))
    return Sweep(names=names, shape=[len(value)], values=values)


def _is_term(value: object) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)


def _pauli_sum(value: list[Any], where: str) -> list[tuple[str, float]]:
    terms = []
    for k, term in enumerate(value):
        if not _is_term(term):
            raise ValueError(f"{where}[{k}] must be a [label, coefficient] pair")
        label, coeff = term
        if not PAULI_LABEL.match(label):
            raise ValueError(
                f"{where}[{k}]: {label[:40]!r} is not a Pauli label (letters I, X, Y, Z)"
            )
        terms.append((label, _number(coeff, f"{where}[{k}] coefficient")))
    return terms


def observables_from_wire(value: object) -> Observables:
    """One Pauli sum ``[["XX", 0.18], ["ZI", -0.39]]`` (shape ``[]``), or a rectangular
    nested array of them (its shape). A term's coefficient is a real number."""
    if not isinstance(value, list) or not value:
        raise ValueError("must be a Pauli sum ([[label, coefficient], ...]) or an array of them")
    if _is_term(value[0]):
        return Observables(shape=[], sums=[_pauli_sum(value, "")])
    shape: list[int] = []
    level: list[Any] = value
    while not _is_term(level[0]):
        shape.append(len(level))
        if len(shape) > MAX_RANK:
            raise ValueError(f"is nested deeper than {MAX_RANK} levels")
        if not isinstance(level[0], list) or not level[0]:
            raise ValueError(
                "must be a Pauli sum ([[label, coefficient], ...]) or an array of them"
            )
        level = level[0]
    sums: list[list[tuple[str, float]]] = []
    _collect_sums(value, shape, 0, [], sums)
    return Observables(shape=shape, sums=sums)


def _collect_sums(
    value: Any, shape: list[int], depth: int, index: list[int], out: list[list[tuple[str, float]]]
) -> None:
    where = "".join(f"[{i}]" for i in index)
    if depth == len(shape):
        if not isinstance(value, list) or not value or not _is_term(value[0]):
            raise ValueError(f"{where} must be a Pauli sum: arrays nested unevenly")
        out.append(_pauli_sum(value, where))
        return
    if not isinstance(value, list) or len(value) != shape[depth] or (value and _is_term(value[0])):
        raise ValueError(f"{where or 'the array'} is not rectangular")
    for k, item in enumerate(value):
        _collect_sums(item, shape, depth + 1, [*index, k], out)


# --- Schemas (openapi.json) -----------------------------------------------------------------

# A number, or a rectangular nested array of numbers (JSON Schema cannot say
# "rectangular"; the server checks it).
_NUMBERS: dict[str, Any] = {"oneOf": [{"type": "number"}, {"type": "array", "minItems": 1}]}
PARAMETERS_SCHEMA: dict[str, Any] = {
    "description": "Values for the program's free parameters (`input float[64] theta;`): "
    'one binding `{"theta": 0.5}`, a sweep `{"theta": [0.1, 0.2], "phi": [0.3, 0.4]}` '
    "(every parameter's array has the same shape, of any rank: the sweep's shape), or a list "
    'of bindings `[{"theta": 0.1}, {"theta": 0.2}]`. Every parameter of the program needs '
    "a value and every name must be one of them.",
    "oneOf": [
        {"type": "object", "minProperties": 1, "additionalProperties": _NUMBERS},
        {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "minProperties": 1,
                "additionalProperties": {"type": "number"},
            },
        },
        {"type": "null"},
    ],
}
_TERM: dict[str, Any] = {
    "type": "array",
    "prefixItems": [{"type": "string", "pattern": "^[IXYZ]+$"}, {"type": "number"}],
    "minItems": 2,
    "maxItems": 2,
}
OBSERVABLES_SCHEMA: dict[str, Any] = {
    "description": "Expectation values instead of counts: a Pauli sum in the form "
    '`SparsePauliOp.from_list` takes (`[["XX", 0.18], ["ZI", -0.39]]`; qubit 0 is the '
    "rightmost letter; real coefficients), or a nested array of them that broadcasts against "
    "the parameters' shape as an `EstimatorV2` PUB does.",
    "type": ["array", "null"],
    "minItems": 1,
    "items": {"oneOf": [_TERM, {"type": "array", "minItems": 1}]},
}
