"""``GET /backend``: this deployment's methods, limits, gates and noise schema.

Everything is derived from the settings and the tables admission uses
(`qmill.server.workload.methods`), so the description cannot promise what submit
refuses, or refuse what it promises.
"""

from __future__ import annotations

from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version

from qmill.server.config import Settings
from qmill.server.models import BackendView, MethodView, SubmitRequest
from qmill.server.workload.methods import METHODS, SIMULATOR_GATES, max_qubits
from qmill.server.workload.spec import FloatPrecision, Method, Noise


@lru_cache(maxsize=1)
def importer_gates() -> tuple[str, ...]:
    """The gates of OpenQASM 3's ``stdgates.inc`` (and the builtin ``U``), as Qiskit
    names them: what a circuit may use for its program to import."""
    from qiskit.qasm3 import STDGATES_INC_GATES

    names = {gate.constructor(*([0.0] * gate.num_params)).name for gate in STDGATES_INC_GATES}
    return tuple(sorted(names | {"u"}))


def _qmill_version() -> str:
    try:
        return version("qmill")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "0+unknown"


def describe(settings: Settings) -> BackendView:
    limits = settings.limits
    methods = {}
    for method, caps in METHODS.items():
        single = FloatPrecision.SINGLE in caps.precisions
        methods[method.value] = MethodView(
            max_qubits=max_qubits(settings, method, None),
            max_qubits_single=max_qubits(settings, method, FloatPrecision.SINGLE)
            if single
            else None,
            noise=caps.noise,
            observables=caps.observables,
            precisions=list(caps.precisions),
            gates=sorted(caps.ops - {"barrier", "delay", "measure", "reset"}) if caps.ops else None,
            max_bond_dimension=(
                limits.mps_max_bond_dimension if method is Method.MATRIX_PRODUCT_STATE else None
            ),
        )
    return BackendView(
        name="qmill",
        version=_qmill_version(),
        max_qubits=max(m.max_qubits for m in methods.values()),
        methods=methods,
        gates=list(importer_gates()),
        simulator_gates=sorted(SIMULATOR_GATES),
        min_shots=limits.min_shots,
        max_shots=limits.max_shots,
        max_total_shots=limits.max_total_shots,
        max_result_bytes=limits.max_result_bytes,
        max_batch_tasks=limits.max_batch_tasks,
        max_sweep_size=limits.max_sweep_size,
        max_parameters=limits.max_parameters,
        max_observables=limits.max_observables,
        max_observable_terms=limits.max_observable_terms,
        max_clbits=limits.max_clbits,
        max_gates=limits.max_gates,
        max_depth=limits.max_depth,
        max_execution_seconds=limits.max_execution_seconds,
        noise=Noise.model_json_schema(),
        task_fields=SubmitRequest.fields(),
    )
