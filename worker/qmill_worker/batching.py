"""Which tasks may share one ``AerSimulator.run``, and the seeds that keeps exact.

A Bell task costs Aer ~0.3 ms to simulate and the rest of its ~3 ms in the child goes
to parsing, lowering and the per-call overhead of ``run`` (assembling, configuring,
formatting the result), and the worker pays a socket round trip, two Redis scripts
and a confirmed ack around it. Tasks pulled together that are *small* and
*compatible* therefore run as the experiments of one call, and are started and
finished in Redis with one pipeline each (``qmill_worker.grouped``).

Small: a plain sampling task (no sweep, no observables), a state narrower than Aer's
`PARALLEL_QUBITS` (it would run on one thread anyway) or a stabilizer tableau, and an
estimated work (`work`) a batch bound keeps in the milliseconds. Compatible: the same
run options, everything Aer takes once for all experiments of a call (`run_key`).

Seeds: with ``seed_simulator=b``, Aer's controller gives experiment ``i`` of a call the
seed ``b + 2113 * i`` (``controller_execute`` in qiskit-aer's
``src/controllers/controller_execute.hpp``; checked by the worker's tests), whatever
seed a circuit carries. A task with seed ``s`` run alone gets ``s``; in a call it must
sit at a position ``i`` with ``b + 2113 * i == s`` to give the same counts. `seed_runs`
places seeded tasks that way and fills the other positions with unseeded tasks; a
seeded task that fits no call's stride runs in a call of its own (consecutive seeds,
as ``POST /batches`` with a batch seed gives, never share one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from qmill.server.workload import Method, Plan
from qmill.server.workload.methods import STABILIZER_STATE_BYTES
from qmill_worker.simulator import PARALLEL_QUBITS

# qiskit-aer's step between the seeds of consecutive experiments of one call.
AER_SEED_STRIDE = 2113
# The largest seed a task may have (`qmill.server.batches.MAX_SEED`): Aer keeps seeds as
# signed 64-bit integers, so no filled position may go past it.
MAX_SEED = 2**63 - 1
# A state a batched task may need at most: a double-precision statevector one qubit
# narrower than `PARALLEL_QUBITS` (128 KiB). A stabilizer tableau is counted as its flat
# allowance (`STABILIZER_STATE_BYTES`), so the stabilizer method is admitted by name and
# its size bounded by the work estimate instead.
SMALL_STATE_BYTES = 16 * 2 ** (PARALLEL_QUBITS - 1)
# A delivery whose state (``TaskMessage.state_bytes``) is at most this joins a batch; its
# plan, read once it is started, decides whether it runs with others (`run_key`). The
# larger of the two: a stabilizer tableau's flat allowance.
SMALL_MESSAGE_BYTES = max(SMALL_STATE_BYTES, STABILIZER_STATE_BYTES)
# Methods whose experiments Aer runs one after another at no extra cost per experiment.
# The extended stabilizer's run time grows with T gates, not with anything estimated here.
BATCHED_METHODS = frozenset(
    {Method.STATEVECTOR, Method.STABILIZER, Method.DENSITY_MATRIX, Method.MATRIX_PRODUCT_STATE}
)


def work(circuit: str, shots: int) -> int:
    """A task's estimated work: shots times statements (the program's ``;``).

    An upper bound on what sampling costs (Aer samples a measure-at-end circuit from one
    state, so most programs cost far less), cheap enough to take on the event loop.
    """
    return max(1, shots) * max(1, circuit.count(";"))


def run_key(plan: Plan, shots: int, memory: bool) -> str | None:
    """What a task's run options are, as one string; None if it is not batchable.

    Tasks with equal keys may run as the experiments of one call. Not batchable: a
    sweep or observables (one call of their own already, possibly long), an unnamed
    or extended stabilizer method, a state wider than `SMALL_STATE_BYTES`.
    """
    if plan.parameters is not None or plan.observables is not None:
        return None
    if plan.method not in BATCHED_METHODS:
        return None
    if plan.method is not Method.STABILIZER and plan.state_bytes > SMALL_STATE_BYTES:
        return None
    noise = plan.noise.model_dump_json() if plan.noise is not None else ""
    precision = plan.precision.value if plan.precision is not None else ""
    return "|".join(
        (
            plan.method.value,
            precision,
            str(plan.mps_bond_dimension or ""),
            noise,
            str(shots),
            "m" if memory else "",
        )
    )


@dataclass(frozen=True, slots=True)
class Run:
    """One ``AerSimulator.run`` of several circuits: ``members[i]`` is the index (in the
    list given to `seed_runs`) of the task at experiment ``i``; ``seed`` the call's
    ``seed_simulator`` (None: Aer picks one, no task has a seed of its own)."""

    members: tuple[int, ...]
    seed: int | None


def seed_runs(seeds: Sequence[int | None], max_size: int) -> list[Run]:
    """Split tasks with these seeds (None: unseeded) into calls of at most ``max_size``
    experiments, each seeded task at the position where Aer gives it its own seed.

    Greedy, in order of seed: a seeded task joins the open call of its residue modulo
    `AER_SEED_STRIDE` if its position there is free and within ``max_size``, else opens
    one at position 0. Unseeded tasks fill the free positions (any seed serves them),
    then calls of their own.
    """
    max_size = max(1, max_size)
    slots: list[dict[int, int]] = []  # per call: position -> task index
    bases: list[int] = []
    by_residue: dict[int, int] = {}  # residue -> the open call for it
    seeded = sorted((s, i) for i, s in enumerate(seeds) if s is not None)
    for seed, index in seeded:
        call = by_residue.get(seed % AER_SEED_STRIDE)
        if call is not None:
            position = (seed - bases[call]) // AER_SEED_STRIDE
            if position < max_size and position not in slots[call]:
                slots[call][position] = index
                continue
        by_residue[seed % AER_SEED_STRIDE] = len(slots)
        slots.append({0: index})
        bases.append(seed)
    unseeded = [i for i, s in enumerate(seeds) if s is None]
    for call, taken in enumerate(slots):
        # Positions up to the last seeded one first, then after it, never past MAX_SEED.
        limit = min(max_size, (MAX_SEED - bases[call]) // AER_SEED_STRIDE + 1)
        position = 0
        while unseeded and position < limit:
            if position not in taken:
                taken[position] = unseeded.pop(0)
            position += 1
    runs = [run for taken, base in zip(slots, bases, strict=True) for run in _blocks(taken, base)]
    runs += [
        Run(tuple(unseeded[k : k + max_size]), None) for k in range(0, len(unseeded), max_size)
    ]
    return runs


def _blocks(taken: dict[int, int], base: int) -> list[Run]:
    """A call's filled positions as calls without gaps (too few unseeded tasks to fill
    them): a block that starts at position ``p`` is a call of its own seeded
    ``base + 2113 * p``, which gives each of its tasks the same seed."""
    runs: list[Run] = []
    block: list[int] = []
    start = 0
    for position in sorted(taken):
        if block and position != start + len(block):
            runs.append(Run(tuple(block), base + AER_SEED_STRIDE * start))
            block = []
        if not block:
            start = position
        block.append(taken[position])
    if block:
        runs.append(Run(tuple(block), base + AER_SEED_STRIDE * start))
    return runs


def chunks(works: Sequence[int], max_tasks: int, max_work: int) -> list[list[int]]:
    """Indexes of compatible tasks, in order, cut into batches of at most ``max_tasks``
    tasks and ``max_work`` estimated work (a task over the bound alone runs alone)."""
    out: list[list[int]] = []
    current: list[int] = []
    total = 0
    for index, cost in enumerate(works):
        if current and (len(current) >= max_tasks or total + cost > max_work):
            out.append(current)
            current, total = [], 0
        current.append(index)
        total += cost
    if current:
        out.append(current)
    return out
