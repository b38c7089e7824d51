"""`QmillBackend`: a qmill server as a Qiskit ``BackendV2``.

Everything it says about itself comes from ``GET /backend`` when it is built, so a
client never claims a gate, method or limit the server does not have:

* ``target``: an ideal, all-to-all `Target` (no error rates, every gate on any
  qubits), with the gates the server lists, measure, reset, delay, and the control
  flow its importer reads (``if_else``, ``while_loop``, ``for_loop``). Being
  all-to-all, ``transpile(qc, backend)`` lowers gates but never routes nor widens
  the circuit to ``num_qubits``.
* ``target.num_qubits`` is the widest circuit *some* method takes: the largest
  per-method ``max_qubits`` (the stabilizer and MPS methods go far past the
  statevector's), capped by the server's ``max_qubits``. A simulator has no fixed
  width; the target's is only an upper bound for the transpiler. The statevector's
  smaller bound would refuse, before anything is sent, a wide Clifford circuit the
  server runs in milliseconds; a circuit too wide for the method it ends up on is
  refused by the server with a `LimitExceededError` that names the limit.
* ``max_circuits`` is the server's ``max_batch_tasks``: ``run`` sends all its
  circuits as one batch, and Qiskit's ``BackendSamplerV2`` / ``BackendEstimatorV2``
  split their work by it.

Options: ``shots``, ``seed_simulator``, ``memory`` (what Qiskit's primitives pass),
and ``method``, ``precision`` (``"single"`` / ``"double"``) and ``noise`` (the
server's noise object), so that ``BackendSamplerV2(backend=b, options={"run_options":
{"method": "density_matrix", "noise": {...}}})`` runs noisy. Any other option
raises `UnknownOptionError`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from qiskit import QuantumCircuit
from qiskit.circuit import Delay, ForLoopOp, IfElseOp, Measure, Parameter, Reset, WhileLoopOp
from qiskit.circuit.library.standard_gates import get_standard_gate_name_mapping
from qiskit.providers import BackendV2, Options
from qiskit.transpiler import Target

from qmill.client import Client
from qmill.qiskit.bodies import circuit_body
from qmill.qiskit.connections import Connected
from qmill.qiskit.errors import UnknownOptionError
from qmill.qiskit.jobs import QmillJob, TaskBatch
from qmill.qiskit.outcomes import backend_result
from qmill.qiskit.programs import to_program

# OpenQASM 3 spellings the server may list -> Qiskit's gate names.
_OPENQASM_NAMES = {"U": "u", "CX": "cx", "phase": "p", "cphase": "cp", "gphase": "global_phase"}
# Control flow the server's importer reads (``switch`` it does not: it needs an ``int``).
_CONTROL_FLOW = {"if_else": IfElseOp, "while_loop": WhileLoopOp, "for_loop": ForLoopOp}
_PRECISIONS = (None, "single", "double")


def target_width(description: Mapping[str, Any]) -> int:
    """The widest circuit some method runs (see the module docstring)."""
    ceiling = int(description["max_qubits"])
    widths = [
        int(limits["max_qubits"])
        for limits in (description.get("methods") or {}).values()
        if isinstance(limits, Mapping) and isinstance(limits.get("max_qubits"), int)
    ]
    return min(max(widths), ceiling) if widths else ceiling


def build_target(description: Mapping[str, Any]) -> Target:
    """An ideal all-to-all `Target` from a ``GET /backend`` answer.

    A listed name Qiskit has no standard gate for is left out: the transpiler could
    not produce it anyway, and circuits may still use it by its definition.
    """
    target = Target(
        description=f"qmill {description.get('version', '')}".strip(),
        num_qubits=target_width(description),
    )
    standard = get_standard_gate_name_mapping()
    for listed in description.get("gates") or ():
        gate = standard.get(_OPENQASM_NAMES.get(listed, listed))
        if gate is None or gate.name in target or gate.num_qubits == 0:
            continue  # global phase is the circuit's, not an instruction on qubits
        target.add_instruction(gate, name=gate.name)
    for operation in (Measure(), Reset(), Delay(Parameter("t"))):
        target.add_instruction(operation, name=operation.name)
    for name, kind in _CONTROL_FLOW.items():
        target.add_instruction(kind, name=name)
    return target


class QmillBackend(Connected, BackendV2):  # type: ignore[misc]
    """A qmill server as a ``BackendV2``.

    ``url`` defaults to $QMILL_URL (then http://127.0.0.1:8000), ``api_key`` to
    $QMILL_API_KEY, as `qmill.client.Client` reads them. Building one makes one request,
    ``GET /backend``.
    """

    def __init__(
        self, url: str | None = None, *, api_key: str | None = None, client: Client | None = None
    ) -> None:
        self._connect(url, api_key, client)
        try:
            self._description = self._client.backend()
        except BaseException:
            self.close()
            raise
        super().__init__(
            name=str(self._description.get("name", "qmill")),
            description=f"qmill at {self._client.url}",
            backend_version=str(self._description.get("version", "")),
        )
        self._target = build_target(self._description)
        self.options.set_validator(
            "shots",
            (int(self._description.get("min_shots", 1)), int(self._description["max_shots"])),
        )
        self.options.set_validator(
            "method", [None, *sorted(self._description.get("methods") or {})]
        )
        self.options.set_validator("precision", list(_PRECISIONS))

    @classmethod
    def _default_options(cls) -> Options:
        return Options(
            shots=1024, seed_simulator=None, memory=False, method=None, precision=None, noise=None
        )

    @property
    def target(self) -> Target:
        return self._target

    @property
    def max_circuits(self) -> int:
        return int(self._description["max_batch_tasks"])

    @property
    def description_json(self) -> dict[str, Any]:
        """The server's ``GET /backend`` answer this backend was built from."""
        return copy.deepcopy(self._description)

    def run(self, run_input: QuantumCircuit | Sequence[QuantumCircuit], **options: Any) -> QmillJob:
        """Queue the circuits as one batch (one task each); returns the job at once.

        ``options`` override the backend's options for this run; an unknown one raises
        `UnknownOptionError`. Circuits must be bound (use `qmill.qiskit.SamplerV2` to
        sweep parameters on the server), and are refused with `UnsupportedCircuitError`
        if OpenQASM 3 cannot carry them (see `qmill.qiskit.programs`).
        """
        circuits = [run_input] if isinstance(run_input, QuantumCircuit) else list(run_input)
        chosen = self._run_options(options)
        programs = [to_program(circuit) for circuit in circuits]
        memory = bool(chosen["memory"])
        bodies = [
            circuit_body(
                program,
                shots=int(chosen["shots"]),
                seed=chosen["seed_simulator"],
                memory=memory,
                method=chosen["method"],
                precision=chosen["precision"],
                noise=chosen["noise"],
            )
            for program in programs
        ]
        batch = TaskBatch.submit(self._client, bodies)

        def finish(views: list[dict[str, Any]]) -> Any:
            return backend_result(
                views,
                circuits,
                programs,
                memory=memory,
                backend_name=self.name,
                backend_version=self.backend_version,
                job_id=batch.batch_id,
            )

        return QmillJob(self, batch, finish)

    def _run_options(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        known = set(self.options)
        unknown = set(overrides) - known
        if unknown:
            raise UnknownOptionError("QmillBackend.run", unknown, known)
        merged = copy.copy(self.options)
        merged.update_options(**overrides)  # the validators run here
        return dict(merged.items())
