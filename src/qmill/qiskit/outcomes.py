"""Server answers (``GET /tasks/{id}`` bodies) into Qiskit's result containers.

Plain data in, plain objects out, so every conversion is unit-tested without a server.

Counts keys are Qiskit's ``get_counts`` format: one group of bits per classical
register, separated by spaces, the first declared register rightmost, each register's
bit 0 rightmost in its group. Spaces are not relied on: a key is read as its bits with
the spaces removed and cut by the registers' sizes, which also holds for registers of
size 0 (an empty group).

Sampler PUB results are built from the per-binding counts, not from per-shot memory
(a sweep of 10 000 bindings would otherwise ship 10 000 x shots strings). Each joint
outcome is split into its registers *together*, so shot ``k`` of register ``a`` and
shot ``k`` of register ``b`` come from the same shot, as in a real sampler; the shots
are then put in a random order (the same permutation for every register), so that a
slice of a `BitArray` is a fair subsample rather than the first outcomes in key order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from qiskit import QuantumCircuit
from qiskit.primitives.containers import BitArray, DataBin, PubResult, SamplerPubResult
from qiskit.result import Result
from qiskit.result.models import ExperimentResult, ExperimentResultData

from qmill.qiskit.programs import Program

Shape = tuple[int, ...]


def split_outcome(key: str, sizes: Sequence[int]) -> list[str]:
    """The bits of each register in an outcome key, first declared register first."""
    bits = key.replace(" ", "")
    if len(bits) != sum(sizes):
        raise ValueError(f"outcome {key!r} has {len(bits)} bits; the registers have {sum(sizes)}")
    groups = []
    end = len(bits)
    for size in sizes:
        groups.append(bits[end - size : end])
        end -= size
    return groups


def register_samples(
    counts: Mapping[str, int],
    registers: Sequence[tuple[str, int]],
    shots: int,
    rng: np.random.Generator | None = None,
) -> dict[str, NDArray[np.uint8]]:
    """Per register, ``shots`` packed samples (``(shots, ceil(size / 8))`` bytes, big
    endian, as `BitArray` stores them) drawn from ``counts``, shot-aligned across
    registers; shuffled by ``rng`` if given (one permutation for all registers)."""
    keys = list(counts)
    repeats = np.array([int(counts[key]) for key in keys], dtype=np.int64)
    if int(repeats.sum()) != shots:
        raise ValueError(f"the counts add up to {int(repeats.sum())} shots, not {shots}")
    groups = [split_outcome(key, [size for _, size in registers]) for key in keys]
    order = rng.permutation(shots) if rng is not None else None
    samples = {}
    for r, (name, size) in enumerate(registers):
        width = (size + 7) // 8
        packed = b"".join(int(g[r] or "0", 2).to_bytes(width, "big") for g in groups)
        rows = np.frombuffer(packed, dtype=np.uint8).reshape(len(keys), width)
        column = np.repeat(rows, repeats, axis=0)
        samples[name] = column if order is None else column[order]
    return samples


def _checked_shape(view: Mapping[str, Any], shape: Shape) -> None:
    got = tuple(view.get("shape") or ())
    if got != shape:
        raise ValueError(
            f"task {view.get('task_id')}: the server answered shape {got}, not {shape}"
        )


def binding_counts(view: Mapping[str, Any], shape: Shape) -> list[Mapping[str, int]]:
    """The counts of every binding of a sampling task, in ``np.ndindex(shape)`` order."""
    _checked_shape(view, shape)
    if shape == ():
        return [view["result"]]
    found = []
    for index in np.ndindex(*shape):
        leaf = view["results"]
        for i in index:
            leaf = leaf[i]
        found.append(leaf["counts"])
    return found


def sampler_pub_result(
    view: Mapping[str, Any],
    program: Program,
    shape: Shape,
    shots: int,
    circuit_metadata: Any = None,
    rng: np.random.Generator | None = None,
) -> SamplerPubResult:
    """A SamplerV2 PUB result: one `BitArray` of ``shape`` per classical register."""
    arrays = {
        name: np.zeros((*shape, shots, (size + 7) // 8), dtype=np.uint8)
        for name, size in program.registers
    }
    for index, counts in zip(np.ndindex(*shape), binding_counts(view, shape), strict=True):
        for name, samples in register_samples(counts, program.registers, shots, rng).items():
            arrays[name][index] = samples
    data = DataBin(
        **{name: BitArray(arrays[name], size) for name, size in program.registers}, shape=shape
    )
    return SamplerPubResult(data, metadata=_metadata(view, circuit_metadata, shots=shots))


def estimator_pub_result(
    view: Mapping[str, Any],
    shape: Shape,
    precision: float | None,
    circuit_metadata: Any = None,
) -> PubResult:
    """An EstimatorV2 PUB result: ``evs`` and ``stds`` of the PUB's broadcast shape."""
    _checked_shape(view, shape)
    evs = np.asarray(view["evs"], dtype=float)
    stds = np.asarray(view["stds"] if view.get("stds") is not None else 0.0, dtype=float)
    stds = np.broadcast_to(stds, evs.shape).copy()
    if evs.shape != shape:
        raise ValueError(f"task {view.get('task_id')}: evs of shape {evs.shape}, not {shape}")
    return PubResult(
        DataBin(evs=evs, stds=stds, shape=shape),
        metadata=_metadata(
            view,
            circuit_metadata,
            target_precision=float(precision or 0.0),
            evs_method=view.get("evs_method"),
        ),
    )


def _metadata(view: Mapping[str, Any], circuit_metadata: Any, **extra: Any) -> dict[str, Any]:
    return {
        **extra,
        "circuit_metadata": circuit_metadata if circuit_metadata is not None else {},
        "task_id": view.get("task_id"),
        "method": view.get("method"),
    }


# --- BackendV2 results -------------------------------------------------------------------------


class _Memory:
    """Outcome keys to the hex memory words of ``qiskit.result`` (bit ``i`` = clbit ``i``)."""

    def __init__(self, program: Program) -> None:
        self._positions = program.clbits
        self._identity = list(program.clbits) == list(range(len(program.clbits)))
        self._cache: dict[str, str] = {}

    def __call__(self, key: str) -> str:
        word = self._cache.get(key)
        if word is None:
            bits = key.replace(" ", "")
            if len(bits) != len(self._positions):
                raise ValueError(
                    f"outcome {key!r} has {len(bits)} bits, not {len(self._positions)}"
                )
            if self._identity:
                value = int(bits or "0", 2)
            else:
                value = sum(int(bit) << self._positions[p] for p, bit in enumerate(reversed(bits)))
            word = self._cache[key] = hex(value)
        return word


def experiment_result(
    view: Mapping[str, Any], circuit: QuantumCircuit, program: Program, memory: bool
) -> ExperimentResult:
    """One circuit's part of a `Result`, laid out as qiskit-aer lays out its own: hex
    counts and memory, and a header whose ``creg_sizes`` and ``memory_slots`` let
    ``get_counts`` and ``get_memory`` write the familiar bitstrings back."""
    _checked_shape(view, ())
    word = _Memory(program)
    counts: dict[str, int] = {}
    for key, count in view["result"].items():
        counts[word(key)] = counts.get(word(key), 0) + int(count)
    data: dict[str, Any] = {"counts": counts}
    if memory:
        if view.get("memory") is None:
            raise ValueError(f"task {view.get('task_id')}: memory was asked for, none came back")
        data["memory"] = [word(key) for key in view["memory"]]
    header = {
        "name": circuit.name,
        "creg_sizes": [[name, size] for name, size in program.registers],
        "memory_slots": circuit.num_clbits,
        "n_qubits": circuit.num_qubits,
        "qreg_sizes": [[qreg.name, qreg.size] for qreg in circuit.qregs],
        "global_phase": float(circuit.global_phase)
        if not hasattr(circuit.global_phase, "parameters")
        else 0.0,
        "metadata": circuit.metadata,
    }
    return ExperimentResult(
        shots=int(view["shots"]),
        success=True,
        data=ExperimentResultData(**data),
        meas_level=2,
        status="DONE",
        header=header,
        seed_simulator=view.get("seed"),
        metadata={"method": view.get("method"), "task_id": view.get("task_id")},
    )


def backend_result(
    views: Sequence[Mapping[str, Any]],
    circuits: Sequence[QuantumCircuit],
    programs: Sequence[Program],
    *,
    memory: bool,
    backend_name: str,
    backend_version: str,
    job_id: str,
) -> Result:
    """The `Result` of a `QmillBackend` job: one experiment per circuit, in order."""
    experiments = [
        experiment_result(view, circuit, program, memory)
        for view, circuit, program in zip(views, circuits, programs, strict=True)
    ]
    return Result(
        backend_name=backend_name,
        backend_version=backend_version,
        job_id=job_id,
        success=True,
        status="COMPLETED",
        results=experiments,
    )
