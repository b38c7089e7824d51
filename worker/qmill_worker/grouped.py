"""Several small compatible tasks as the experiments of one ``AerSimulator.run``.

The worker sends a simulation child a group of tasks that `batching.run_key` found
compatible; here each program is parsed and lowered on its own (`simulator.lower`, so
a program that does not parse fails only its task), the rest run in as few calls as
their seeds allow (`batching.seed_runs`), and each task gets its own result from its
own experiment, or its own failure from Aer's per-experiment ``success``. A call that
fails as a whole (Aer raised, or answered for fewer experiments) is run again one task
at a time, so whatever broke it fails only the task that did.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from qmill_worker import batching, simulator, workloads
from qmill_worker.circuits import Lowered
from qmill_worker.errors import FailureReason, SimulationError
from qmill_worker.simulator import SimJob, SimResult

# What one task of a group became.
Answer = SimResult | SimulationError


def simulate_group(jobs: Sequence[SimJob], *, threads: int = 0, max_size: int = 0) -> list[Answer]:
    """Each job's result or failure, in order; ``max_size`` experiments a call at most
    (0: all of them). A job that is not batchable, or not like the first, runs alone."""
    answers: list[Answer | None] = [None] * len(jobs)
    ready: list[tuple[int, Lowered, float]] = []  # (job index, circuit, its own seconds)
    key: str | None = None
    first: Any = None
    for index, job in enumerate(jobs):
        started = time.perf_counter()
        try:
            plan = simulator.read_plan(job)
            own = batching.run_key(plan, job.shots, job.memory) if plan is not None else None
            if own is None or (key is not None and own != key):
                answers[index] = _alone(job, threads)
                continue
            assert plan is not None
            key, first = own, plan
            lowered = simulator.lower(job.circuit, plan.method.value, plan.noise is not None, False)
        except SimulationError as exc:
            answers[index] = exc
            continue
        ready.append((index, lowered, time.perf_counter() - started))
    if ready:
        head = jobs[ready[0][0]]
        options = workloads.run_options(first, head.shots, None, head.memory)
        if threads:
            widest = max(lowered.qubits for _, lowered, _ in ready)
            options["max_parallel_threads"] = simulator.useful_threads(threads, widest, first)
        seeds = [jobs[index].seed for index, _, _ in ready]
        for run in batching.seed_runs(seeds, max_size or len(ready)):
            members = [ready[k] for k in run.members]
            for index, answer in _run(jobs, members, options, run.seed, threads):
                answers[index] = answer
    assert all(answer is not None for answer in answers)
    return [answer for answer in answers if answer is not None]


def _alone(job: SimJob, threads: int) -> Answer:
    try:
        return simulator.simulate(job, threads=threads)
    except SimulationError as exc:
        return exc


def _run(
    jobs: Sequence[SimJob],
    members: list[tuple[int, Lowered, float]],
    options: dict[str, Any],
    seed: int | None,
    threads: int,
) -> list[tuple[int, Answer]]:
    """One call for ``members``; if it fails as a whole, each again on its own."""
    call = dict(options)
    if seed is not None:
        call["seed_simulator"] = seed
    started = time.perf_counter()
    try:
        result = simulator.backend().run([lowered.circuit for _, lowered, _ in members], **call)
        result = result.result()
        experiments = list(result.results)
    except Exception:  # Aer raises AerError / QiskitError / RuntimeError for the call
        experiments = []
    if len(experiments) != len(members):
        return [(index, _alone(jobs[index], threads)) for index, _, _ in members]
    share = (time.perf_counter() - started) / len(members)
    memory = bool(call.get("memory"))
    out: list[tuple[int, Answer]] = []
    for k, (index, lowered, own) in enumerate(members):
        experiment = experiments[k]
        if not experiment.success:
            message = f"simulator error: {experiment.status}"
            out.append((index, SimulationError(message, FailureReason.SIMULATOR_ERROR)))
            continue
        try:
            answer: Answer = SimResult(
                counts={str(b): int(n) for b, n in result.get_counts(k).items()},
                memory=[str(m) for m in result.get_memory(k)] if memory else None,
                qubits=lowered.qubits,
                depth=lowered.depth,
                method=str(experiment.metadata.get("method", "unknown")),
                execution_seconds=round(own + share, 6),
            )
        except Exception as exc:  # its experiment has no counts (qiskit's QiskitError)
            answer = SimulationError(
                f"simulator error: {type(exc).__name__}: {exc}", FailureReason.SIMULATOR_ERROR
            )
        out.append((index, answer))
    return out
