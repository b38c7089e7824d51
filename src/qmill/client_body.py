"""What a task request carries: the program (a QASM string or a Qiskit circuit) and its
options, as the JSON body of ``POST /tasks``. Shared by both clients and the batch call.

Importing this module does not import qiskit: a circuit object is converted with
``qiskit.qasm3`` only when one is given, and numpy values are recognised by their
``tolist`` method, so plain-QASM users need neither installed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeAlias, TypedDict

if TYPE_CHECKING:
    from qiskit import QuantumCircuit

    Circuit: TypeAlias = str | QuantumCircuit
else:
    Circuit: TypeAlias = Any


def to_qasm(circuit: Circuit) -> str:
    """The program to send: a string as is, a ``qiskit.QuantumCircuit`` as OpenQASM 3.

    qiskit is imported only here, and only for a circuit object (which means the caller
    has already imported it), so plain-QASM users never pay for it.
    """
    if isinstance(circuit, str):
        return circuit
    if any(
        cls.__name__ == "QuantumCircuit" and cls.__module__.startswith("qiskit")
        for cls in type(circuit).__mro__
    ):
        from qiskit import qasm3

        return str(qasm3.dumps(circuit))
    raise TypeError(
        f"a circuit is an OpenQASM string or a qiskit.QuantumCircuit, not {type(circuit).__name__}"
    )


class TaskOptions(TypedDict, total=False):
    """How to run a task, beyond its program and shots: the fields of ``POST /tasks``.

    ``parameters``: values for the program's free parameters, one binding
    (``{"theta": 0.5}``) or a sweep (``{"theta": [0.1, 0.2]}``, numpy arrays welcome, or
    a list of binding maps). ``observables``: a Pauli sum (``[("XX", 0.18), ("ZI",
    -0.39)]`` or a ``SparsePauliOp``) or a nested list of them: expectation values
    instead of counts. ``method``: Aer's simulation method. ``precision``: ``"single"``
    or ``"double"``, or with observables a target standard error. ``noise``:
    ``{"depolarizing_1q": p, "depolarizing_2q": p, "readout": p, "gates": {...}}``.
    ``tags``: labels to find the task by later (``list_tasks(tags=...)``).
    """

    seed: int | None
    memory: bool
    parameters: Any
    observables: Any
    method: str | None
    precision: str | float | None
    noise: Mapping[str, Any] | None
    tags: Mapping[str, str] | None


def task_body(circuit: Circuit, shots: int, options: TaskOptions) -> dict[str, Any]:
    """The JSON body of one task. Options left at None are not sent (the server's
    defaults apply); an option the server does not know is refused there, not here."""
    body: dict[str, Any] = {"quantum_circuit": to_qasm(circuit), "shots": shots}
    for name, value in options.items():
        if value is None or (name == "memory" and value is False):
            continue
        if name in ("parameters", "tags"):
            value = _plain(value)
        elif name == "observables":
            value = _observables(value)
        body[name] = value
    return body


def _plain(value: Any) -> Any:
    """numpy arrays and scalars as JSON lists and numbers, inside maps and lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _observables(value: Any) -> Any:
    """A ``SparsePauliOp`` (or a nested list of them, or of ``(label, coeff)`` pairs) as
    the wire's ``[[label, coeff], ...]``; coefficients must be real (Hermitian)."""
    if hasattr(value, "to_list") and hasattr(value, "paulis"):
        terms = []
        for label, coeff in value.to_list():
            c = complex(coeff)
            if abs(c.imag) > 1e-12:
                raise ValueError(f"observable term {label} has a complex coefficient {c}")
            terms.append([label, c.real])
        return terms
    if isinstance(value, list | tuple):
        if len(value) == 2 and isinstance(value[0], str):
            return [value[0], float(value[1])]
        return [_observables(v) for v in value]
    if hasattr(value, "tolist"):
        return _observables(value.tolist())
    return value
