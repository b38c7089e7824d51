"""Use a qmill server from Qiskit: ``pip install 'qmill[qiskit]'``.

    from qmill.qiskit import EstimatorV2, QmillBackend, SamplerV2

    sampler = SamplerV2("http://127.0.0.1:8000")
    result = sampler.run([(circuit, parameter_values)]).result()
    result[0].data.meas.get_counts()

* `SamplerV2` / `EstimatorV2` implement Qiskit's ``BaseSamplerV2`` / ``BaseEstimatorV2``
  and send one task per PUB: parameter sweeps and observables are evaluated on the
  server (`qmill.qiskit.primitives`).
* `QmillBackend` is a ``BackendV2`` built from ``GET /backend``, for ``transpile`` and
  for Qiskit's ``BackendSamplerV2`` / ``BackendEstimatorV2`` (`qmill.qiskit.backend`).
* Circuits travel as OpenQASM 3 (`qmill.qiskit.programs` says what cannot, and why).

This package imports the plain client (`qmill.client`, httpx) and qiskit, never the
server: the ``qiskit`` extra is all it needs.
"""

from __future__ import annotations

from qmill.qiskit.backend import QmillBackend, build_target
from qmill.qiskit.errors import UnknownOptionError, UnsupportedCircuitError
from qmill.qiskit.jobs import QmillJob, QmillPrimitiveJob
from qmill.qiskit.primitives import EstimatorOptions, EstimatorV2, SamplerOptions, SamplerV2
from qmill.qiskit.programs import Program, to_program

__all__ = [
    "EstimatorOptions",
    "EstimatorV2",
    "Program",
    "QmillBackend",
    "QmillJob",
    "QmillPrimitiveJob",
    "SamplerOptions",
    "SamplerV2",
    "UnknownOptionError",
    "UnsupportedCircuitError",
    "build_target",
    "to_program",
]
