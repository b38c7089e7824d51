"""`SamplerV2` and `EstimatorV2`: Qiskit's primitives, evaluated on a qmill server.

Unlike ``BackendSamplerV2(backend=QmillBackend(...))``, which binds every parameter
value and adds basis-change circuits on the client and sends one circuit per binding
and measurement basis, these send **one task per PUB** and let the server do the work:
the whole `BindingsArray` as ``parameters`` and the whole `ObservablesArray` as
``observables``. A PUB with 500 bindings and 20 observables is one task, and the
estimator's values are exact (statevector) unless a ``precision`` is asked for.

All the PUBs of one ``run`` go as one batch when ``run`` returns, so a refused circuit
or option raises there (`UnsupportedCircuitError`, `InvalidCircuitError`,
`InvalidRequestError`, ...), not later inside ``result()``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
from qiskit.primitives import BaseEstimatorV2, BaseSamplerV2
from qiskit.primitives.containers import PrimitiveResult
from qiskit.primitives.containers.estimator_pub import EstimatorPub, EstimatorPubLike
from qiskit.primitives.containers.sampler_pub import SamplerPub, SamplerPubLike

from qmill.client import Client
from qmill.qiskit.bodies import estimator_body, sampler_body
from qmill.qiskit.connections import Connected
from qmill.qiskit.errors import UnknownOptionError
from qmill.qiskit.jobs import QmillPrimitiveJob, TaskBatch
from qmill.qiskit.outcomes import estimator_pub_result, sampler_pub_result
from qmill.qiskit.programs import to_program

OptionsT = TypeVar("OptionsT")


@dataclass
class SamplerOptions:
    """`SamplerV2` options (``options={...}`` when it is made, or ``sampler.options``).

    ``seed_simulator`` also fixes the order in which samples are laid out in each
    `BitArray` (see `qmill.qiskit.outcomes`), so a seeded run is repeatable shot for
    shot. ``method``, ``precision`` (``"single"``/``"double"``) and ``noise`` are the
    task fields of the same names; None leaves the choice to the server.
    """

    default_shots: int = 1024
    seed_simulator: int | None = None
    method: str | None = None
    precision: str | None = None
    noise: dict[str, Any] | None = None


@dataclass
class EstimatorOptions:
    """`EstimatorV2` options.

    ``default_precision`` 0 means exact expectation values; a positive value is the
    standard error the server meets by adding normal noise (qiskit-aer's EstimatorV2
    semantics), per PUB unless the PUB or ``run(precision=...)`` says otherwise.
    ``seed_simulator`` seeds that noise.
    """

    default_precision: float = 0.0
    seed_simulator: int | None = None
    method: str | None = None
    noise: dict[str, Any] | None = None


class _Primitive(Connected, Generic[OptionsT]):
    """What both primitives share: the connection, and options checked by name when made."""

    _options_class: type[OptionsT]

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        options: Mapping[str, Any] | None = None,
        client: Client | None = None,
    ) -> None:
        kind: type[Any] = self._options_class
        fields = {field.name for field in dataclasses.fields(kind)}
        unknown = set(options or {}) - fields
        if unknown:
            raise UnknownOptionError(type(self).__name__, unknown, fields)
        self._options: OptionsT = kind(**dict(options or {}))
        self._connect(url, api_key, client)

    @property
    def options(self) -> OptionsT:
        return self._options


class SamplerV2(_Primitive[SamplerOptions], BaseSamplerV2):  # type: ignore[misc]
    """Qiskit's ``BaseSamplerV2`` on a qmill server: one task per PUB.

    Each PUB's result has one `BitArray` per classical register, of the PUB's shape,
    built from the server's per-binding counts with the registers of every shot kept
    together. A PUB whose circuit measures nothing is refused by the server (400), where
    Qiskit's reference sampler would return all-zero bits.
    """

    _options_class = SamplerOptions

    def run(
        self, pubs: Iterable[SamplerPubLike], *, shots: int | None = None
    ) -> QmillPrimitiveJob[PrimitiveResult]:
        """Queue the PUBs (one batch); the job's ``result()`` is a `PrimitiveResult`."""
        opts = self._options
        coerced = [
            SamplerPub.coerce(pub, shots if shots is not None else opts.default_shots)
            for pub in pubs
        ]
        programs = [to_program(pub.circuit) for pub in coerced]
        bodies = [
            sampler_body(
                pub,
                program,
                seed=opts.seed_simulator,
                method=opts.method,
                precision=opts.precision,
                noise=opts.noise,
            )
            for pub, program in zip(coerced, programs, strict=True)
        ]
        batch = TaskBatch.submit(self._client, bodies)
        seed = opts.seed_simulator

        def finish(views: list[dict[str, Any]]) -> PrimitiveResult:
            rng = np.random.default_rng(seed)
            results = [
                sampler_pub_result(
                    view, program, tuple(pub.shape), int(pub.shots), pub.circuit.metadata, rng
                )
                for view, pub, program in zip(views, coerced, programs, strict=True)
            ]
            return PrimitiveResult(results, metadata={"version": 2, "batch_id": batch.batch_id})

        return QmillPrimitiveJob(batch, finish)


class EstimatorV2(_Primitive[EstimatorOptions], BaseEstimatorV2):  # type: ignore[misc]
    """Qiskit's ``BaseEstimatorV2`` on a qmill server: one task per PUB.

    Each PUB's ``evs`` and ``stds`` have its broadcast shape (observables against
    parameter values, numpy rules). ``precision`` None or 0 gives exact values with
    ``stds`` 0.
    """

    _options_class = EstimatorOptions

    def run(
        self, pubs: Iterable[EstimatorPubLike], *, precision: float | None = None
    ) -> QmillPrimitiveJob[PrimitiveResult]:
        """Queue the PUBs (one batch); the job's ``result()`` is a `PrimitiveResult`."""
        opts = self._options
        chosen = precision if precision is not None else opts.default_precision
        coerced = [EstimatorPub.coerce(pub, chosen) for pub in pubs]
        programs = [to_program(pub.circuit) for pub in coerced]
        bodies = [
            estimator_body(
                pub, program, seed=opts.seed_simulator, method=opts.method, noise=opts.noise
            )
            for pub, program in zip(coerced, programs, strict=True)
        ]
        batch = TaskBatch.submit(self._client, bodies)

        def finish(views: list[dict[str, Any]]) -> PrimitiveResult:
            results = [
                estimator_pub_result(view, tuple(pub.shape), pub.precision, pub.circuit.metadata)
                for view, pub in zip(views, coerced, strict=True)
            ]
            return PrimitiveResult(results, metadata={"version": 2, "batch_id": batch.batch_id})

        return QmillPrimitiveJob(batch, finish)
