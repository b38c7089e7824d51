"""The simulation methods this deployment offers, and what each may take under its limits.

One table (`METHODS`) says what a method supports; `limits` derives, from the settings,
the widest circuit each may run: the configured cap, lowered until the method's state
fits ``[worker] memory_budget_mb``. Admission (`qmill.server.workload.plan`), the
worker's memory reservation (a task message carries `state_bytes`) and ``GET /backend``
all read these, so what is advertised is what is admitted is what is budgeted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from qmill.server.qasm import CLIFFORD_OPS
from qmill.server.workload.spec import FloatPrecision, Method

if TYPE_CHECKING:
    from qmill.server.config import Settings

# A stabilizer tableau of n qubits is ~(2n)**2 bits: a flat allowance covers 1000 qubits.
STABILIZER_STATE_BYTES = 1024 * 1024
# The extended stabilizer keeps a sum of stabilizer states whose count grows with the
# T gates; Aer bounds it by its approximation error, not by memory. A flat allowance
# (the run is bounded by the time limit).
EXTENDED_STABILIZER_STATE_BYTES = 64 * 1024 * 1024
# What Aer's extended stabilizer method runs (Clifford gates plus these).
EXTENDED_STABILIZER_OPS = CLIFFORD_OPS | {"t", "tdg", "ccx", "ccz", "p", "u1"}
_BOTH = (FloatPrecision.SINGLE, FloatPrecision.DOUBLE)
# A noiseless Clifford circuit this narrow runs on the statevector: its 2**n amplitudes
# cost less than the stabilizer's tableau and its sampling. Measured (Aer 0.18, one
# thread, lowered and run as the worker does, CPU ms statevector/stabilizer): Bell 1024
# shots 2.2/2.6, 100k shots 83/140; GHZ-8 3.2/4.1; a random Clifford circuit of 8 qubits
# and depth 8, 5.9/8.3; one shot, within 0.2 ms either way. From 12 qubits the
# stabilizer starts to win (random Clifford 12x12, 1024 shots: 13.2/12.5; GHZ-16
# 11.4/8.0; GHZ-20 206/17), and it alone runs the wide ones.
CLIFFORD_STATEVECTOR_QUBITS = 10
# Qiskit's standard gates that Aer simulates natively, by width: the worker lowers every
# circuit to these (tests/integration/test_simulator_workloads.py checks them against
# Aer's own basis). The functions do not install Aer, so the list is written here.
SIMULATOR_GATES: dict[str, int] = {
    **dict.fromkeys(
        (
            "h",
            "id",
            "p",
            "r",
            "rx",
            "ry",
            "rz",
            "s",
            "sdg",
            "sx",
            "sxdg",
            "t",
            "tdg",
            "u",
            "u1",
            "u2",
            "u3",
            "x",
            "y",
            "z",
        ),
        1,
    ),
    **dict.fromkeys(
        (
            "cp",
            "crx",
            "cry",
            "crz",
            "csx",
            "cu",
            "cu1",
            "cu3",
            "cx",
            "cy",
            "cz",
            "ecr",
            "rxx",
            "ryy",
            "rzx",
            "rzz",
            "swap",
        ),
        2,
    ),
    **dict.fromkeys(("ccx", "ccz", "cswap"), 3),
}
# A circuit with noise is lowered to these, so that every gate gets its error: the one-
# and two-qubit gates that every method with noise runs (the density matrix and matrix
# product state methods lack the controlled rotations and csx).
NOISY_GATES = frozenset(
    name
    for name, width in SIMULATOR_GATES.items()
    if width <= 2 and name not in {"crx", "cry", "crz", "csx", "cu", "cu1", "cu3"}
)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a method can do, whatever the settings."""

    noise: bool
    observables: bool
    # Floating point precisions it honours; stabilizer tableaus are bits, not floats.
    precisions: tuple[FloatPrecision, ...]
    # Only circuits made of these operations (None: any).
    ops: frozenset[str] | None = None


METHODS: dict[Method, Capabilities] = {
    Method.AUTOMATIC: Capabilities(noise=True, observables=True, precisions=_BOTH),
    Method.STATEVECTOR: Capabilities(noise=True, observables=True, precisions=_BOTH),
    Method.DENSITY_MATRIX: Capabilities(noise=True, observables=True, precisions=_BOTH),
    Method.STABILIZER: Capabilities(
        noise=True, observables=True, precisions=(), ops=frozenset(CLIFFORD_OPS)
    ),
    Method.MATRIX_PRODUCT_STATE: Capabilities(noise=True, observables=True, precisions=_BOTH),
    # Aer's extended stabilizer has no expectation-value instruction.
    Method.EXTENDED_STABILIZER: Capabilities(
        noise=True, observables=False, precisions=(), ops=frozenset(EXTENDED_STABILIZER_OPS)
    ),
}


def amplitude_bytes(precision: FloatPrecision | None) -> int:
    """One complex amplitude: two doubles, or two floats in single precision."""
    return 8 if precision is FloatPrecision.SINGLE else 16


def state_bytes(
    method: Method, qubits: int, precision: FloatPrecision | None, bond_dimension: int
) -> int:
    """Memory the simulator needs for the state of a ``qubits``-wide circuit.

    ``method`` is a resolved one: `AUTOMATIC` is never simulated as such.
    """
    amp = amplitude_bytes(precision)
    match method:
        case Method.STATEVECTOR:
            return int(amp * 2**qubits)
        case Method.DENSITY_MATRIX:
            return int(amp * 4**qubits)
        case Method.MATRIX_PRODUCT_STATE:
            # Two bond-dimension-square matrices a site, and as much again while a
            # two-qubit gate is applied and truncated.
            return 4 * qubits * bond_dimension**2 * amp
        case Method.STABILIZER:
            return STABILIZER_STATE_BYTES
        case Method.EXTENDED_STABILIZER:
            return EXTENDED_STABILIZER_STATE_BYTES
        case Method.AUTOMATIC:
            raise ValueError("automatic is resolved before its memory is counted")


def max_qubits(settings: Settings, method: Method, precision: FloatPrecision | None) -> int:
    """The widest circuit ``method`` may run: its configured cap, lowered until its
    state fits the worker's memory budget. For `AUTOMATIC`, the widest it may pick."""
    limits = settings.limits
    budget = settings.memory_budget_bytes
    chi = limits.mps_max_bond_dimension
    if method is Method.AUTOMATIC:
        return max(
            max_qubits(settings, Method.STATEVECTOR, precision),
            max_qubits(settings, Method.STABILIZER, precision),
        )
    cap = {
        Method.STATEVECTOR: limits.max_qubits,
        Method.DENSITY_MATRIX: limits.max_density_matrix_qubits,
        Method.STABILIZER: limits.max_clifford_qubits,
        Method.MATRIX_PRODUCT_STATE: limits.max_mps_qubits,
        Method.EXTENDED_STABILIZER: limits.max_extended_stabilizer_qubits,
    }[method]
    while cap > 0 and state_bytes(method, cap, precision, chi) > budget:
        cap -= 1
    return cap


def clifford_method(qubits: int) -> Method:
    """What `automatic` runs a noiseless Clifford circuit on: the cheaper of the two
    methods that simulate it exactly (`CLIFFORD_STATEVECTOR_QUBITS`)."""
    return Method.STATEVECTOR if qubits <= CLIFFORD_STATEVECTOR_QUBITS else Method.STABILIZER
