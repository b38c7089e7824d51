"""A task's workload beyond its program: parameter sweeps, observables, simulation method,
precision and noise.

* `spec`: the options as typed values, and their normal form (`Sweep`, `Observables`);
* `methods`: what each simulation method supports and how wide it may go here;
* `plan`: admission of the options against the parsed program: the `Plan` the worker runs.
"""

from qmill.server.workload.methods import (
    METHODS,
    NOISY_GATES,
    SIMULATOR_GATES,
    Capabilities,
    max_qubits,
    state_bytes,
)
from qmill.server.workload.plan import Plan, broadcast, plan, resolve_method
from qmill.server.workload.spec import (
    EvsMethod,
    FloatPrecision,
    Method,
    Noise,
    Observables,
    Sweep,
    observables_from_wire,
    sweep_from_wire,
)

__all__ = [
    "METHODS",
    "NOISY_GATES",
    "SIMULATOR_GATES",
    "Capabilities",
    "EvsMethod",
    "FloatPrecision",
    "Method",
    "Noise",
    "Observables",
    "Plan",
    "Sweep",
    "broadcast",
    "max_qubits",
    "observables_from_wire",
    "plan",
    "resolve_method",
    "state_bytes",
    "sweep_from_wire",
]
