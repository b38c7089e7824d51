"""PUBs and circuits into task bodies (``POST /tasks`` items of ``POST /batches``).

Plain data in, plain JSON out: nothing here talks to a server, so every conversion is
unit-tested on its own. Field names and meanings are the server's ``SubmitRequest``
(openapi.json). A field is sent only when it says something:
the server's defaults are the server's to choose, and an old server that refuses an
unknown field then refuses only what the caller really asked for.

* Sweeps travel whole: a `BindingsArray` of shape ``(3, 4)`` becomes one task whose
  ``parameters`` map each wire name to a ``3 x 4`` nested list, and the server runs
  the twelve bindings. One task per PUB, never one per binding.
* Observables travel whole too: the `ObservablesArray` becomes a nested list of Pauli
  sums with the array's shape, which the server broadcasts against the parameters'
  shape exactly as ``EstimatorPub`` does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qiskit.primitives.containers.bindings_array import BindingsArray
from qiskit.primitives.containers.estimator_pub import EstimatorPub
from qiskit.primitives.containers.observables_array import ObservablesArray
from qiskit.primitives.containers.sampler_pub import SamplerPub
from qiskit.quantum_info import SparseObservable, SparsePauliOp

from qmill.qiskit.programs import Program

PAULI_LETTERS = frozenset("IXYZ")
# Imaginary parts left by turning projectors into Pauli sums are rounding, below this.
_IMAGINARY_TOLERANCE = 1e-10


def parameters_field(program: Program, bindings: BindingsArray) -> dict[str, Any] | None:
    """The ``parameters`` field: wire name -> value, or nested list of the sweep's shape.

    None for a circuit without parameters. A sweep over a parameter-free circuit has
    nothing to carry its shape and is refused, rather than run once and silently
    broadcast (for a sampler that would repeat one set of samples).
    """
    if not program.parameters:
        if bindings.shape != ():
            raise ValueError(
                f"parameter values of shape {bindings.shape} for a circuit without parameters"
            )
        return None
    values = bindings.as_array(program.parameters)  # shape (*bindings.shape, n)
    return {name: values[..., i].tolist() for i, name in enumerate(program.names)}


def pauli_sum(observable: Mapping[str, float]) -> list[list[Any]]:
    """One observable (``{label: coeff}``, as `ObservablesArray` holds them) as a Pauli sum.

    Labels over ``IXYZ`` go as they are (qubit 0 is the rightmost letter on both sides).
    `SparseObservable` labels with projectors (``0 1 + - r l``) are expanded into Pauli
    terms here, since the server takes Pauli sums only.
    """
    if all(set(label) <= PAULI_LETTERS for label in observable) and observable:
        return [[label, float(coeff)] for label, coeff in observable.items()]
    if not observable:
        raise ValueError("an observable with no terms")
    expanded = SparsePauliOp.from_sparse_observable(
        SparseObservable.from_list(list(observable.items()))
    ).simplify()
    terms = []
    for label, coeff in expanded.to_list():
        if abs(coeff.imag) > _IMAGINARY_TOLERANCE:
            raise ValueError(f"observable term {label} has a complex coefficient {coeff}")
        terms.append([label, float(coeff.real)])
    return terms


def observables_field(observables: ObservablesArray) -> Any:
    """The ``observables`` field: a Pauli sum, or nested lists of them with the array's
    shape (``tolist`` layout)."""

    def convert(node: Any) -> Any:
        if isinstance(node, Mapping):
            return pauli_sum(node)
        return [convert(item) for item in node]

    return convert(observables.tolist())


def _common(
    seed: int | None, method: str | None, noise: Mapping[str, Any] | None
) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if seed is not None:
        body["seed"] = int(seed)
    if method is not None:
        body["method"] = method
    if noise is not None:
        body["noise"] = dict(noise)
    return body


def sampler_body(
    pub: SamplerPub,
    program: Program,
    *,
    seed: int | None = None,
    method: str | None = None,
    precision: str | None = None,
    noise: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One sampling task for a whole PUB: ``pub.shots`` shots for every binding."""
    body: dict[str, Any] = {"quantum_circuit": program.qasm, "shots": int(pub.shots)}
    parameters = parameters_field(program, pub.parameter_values)
    if parameters is not None:
        body["parameters"] = parameters
    if precision is not None:
        body["precision"] = precision
    return body | _common(seed, method, noise)


def estimator_body(
    pub: EstimatorPub,
    program: Program,
    *,
    seed: int | None = None,
    method: str | None = None,
    noise: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One expectation-value task for a whole PUB.

    ``pub.precision`` None or 0 asks for exact values (no ``precision`` field); a
    positive one is the target standard error, which the server meets by adding normal
    noise of that width to the exact values (qiskit-aer's EstimatorV2 semantics).
    """
    body: dict[str, Any] = {
        "quantum_circuit": program.qasm,
        "observables": observables_field(pub.observables),
    }
    parameters = parameters_field(program, pub.parameter_values)
    if parameters is not None:
        body["parameters"] = parameters
    if pub.precision:
        body["precision"] = float(pub.precision)
    return body | _common(seed, method, noise)


def circuit_body(
    program: Program,
    *,
    shots: int,
    seed: int | None = None,
    memory: bool = False,
    method: str | None = None,
    precision: str | None = None,
    noise: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One task for a bound circuit, as `QmillBackend.run` sends each of its circuits."""
    if program.parameters:
        unbound = ", ".join(sorted(p.name for p in program.parameters)[:5])
        raise ValueError(
            f"the circuit has unbound parameters ({unbound}): bind them first, or sweep them "
            "on the server with qmill.qiskit.SamplerV2"
        )
    body: dict[str, Any] = {"quantum_circuit": program.qasm, "shots": int(shots)}
    if memory:
        body["memory"] = True
    if precision is not None:
        body["precision"] = precision
    return body | _common(seed, method, noise)
