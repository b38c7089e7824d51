"""The circuits every benchmark runs, as OpenQASM text.

Every strategy and the end-to-end system get the very same program text (generated once
per run with fixed seeds and written to a file the strategy runners read), so they all
pay the same parsing cost and simulate the same gates.

* ``small``: the Bell program of the README and the tests (OpenQASM 3, 2 qubits), many
  times. It measures everything but the simulation: parsing, queueing, HTTP, IPC.
* ``heavy``: 12 random circuits of 21, 22 and 23 qubits, 20 layers, measured, from
  ``qiskit.circuit.random.random_circuit`` with seeds 7000..7011, dumped with
  ``qiskit.qasm3.dumps``. A 23-qubit statevector is 128 MiB; Aer's OpenMP threads
  parallelise each gate above 14 qubits, so here the question is how the cores are
  shared between simulations, not overheads.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

BELL = (
    'OPENQASM 3.0; include "stdgates.inc"; qubit[2] q; bit[2] c; h q[0]; cx q[0],q[1]; '
    "c[0] = measure q[0]; c[1] = measure q[1];"
)
SHOTS = 1024
HEAVY_SEED_BASE = 7000


@dataclass(frozen=True)
class Circuit:
    name: str
    qasm: str
    shots: int
    qubits: int
    seed: int  # seed_simulator, so every strategy samples the same counts


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    circuits: list[Circuit]

    def digest(self) -> str:
        """sha256 of every program and shot count, to tell runs of the same workload apart."""
        h = hashlib.sha256()
        for c in self.circuits:
            h.update(c.qasm.encode())
            h.update(str(c.shots).encode())
        return h.hexdigest()[:16]

    def summary(self) -> dict[str, Any]:
        qubits = sorted({c.qubits for c in self.circuits})
        return {
            "name": self.name,
            "description": self.description,
            "tasks": len(self.circuits),
            "qubits": qubits,
            "shots": self.circuits[0].shots if self.circuits else None,
            "digest": self.digest(),
        }


def small(count: int) -> Workload:
    circuits = [Circuit(f"bell-{i}", BELL, SHOTS, 2, seed=i) for i in range(count)]
    return Workload("small", f"{count} x Bell (OpenQASM 3, 2 qubits), {SHOTS} shots", circuits)


def heavy(count: int = 12, qubits: tuple[int, ...] = (21, 22, 23), depth: int = 20) -> Workload:
    """Random circuits cycling through ``qubits``; the same seeds give the same programs."""
    from qiskit import qasm3
    from qiskit.circuit.random import random_circuit

    circuits = []
    for i in range(count):
        n = qubits[i % len(qubits)]
        seed = HEAVY_SEED_BASE + i
        qc = random_circuit(n, depth, measure=True, seed=seed)
        circuits.append(Circuit(f"random-{n}q-{i}", qasm3.dumps(qc), SHOTS, n, seed=seed))
    desc = (
        f"{count} random circuits of {'-'.join(str(q) for q in (min(qubits), max(qubits)))} "
        f"qubits, {depth} layers, {SHOTS} shots, seeds {HEAVY_SEED_BASE}.."
        f"{HEAVY_SEED_BASE + count - 1}"
    )
    return Workload("heavy", desc, circuits)


def save(workloads: dict[str, Workload], path: Path) -> None:
    data = {
        name: {
            "name": w.name,
            "description": w.description,
            "circuits": [asdict(c) for c in w.circuits],
        }
        for name, w in workloads.items()
    }
    path.write_text(json.dumps(data))


def load(path: Path) -> dict[str, Workload]:
    data = json.loads(path.read_text())
    return {
        name: Workload(w["name"], w["description"], [Circuit(**c) for c in w["circuits"]])
        for name, w in data.items()
    }
