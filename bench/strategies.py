"""The strategy table: where can a worker run Aer, and what does each choice cost?

Each row runs one workload (every circuit of it, from QASM text to counts) with one
strategy, in a fresh Python process of its own (``python -m bench.strategies ...``), so
imports, caches and the kernel's peak-RSS mark of one row never leak into another. That
process is the "driving process": it runs an asyncio event loop with a 5 ms ticker
(`bench.measure.StallMonitor`) while the strategy works, the way qmill's worker drives
its executor, and measures CPU and peak RSS of itself plus every child it started.

Rows (``c`` = usable cores; concurrency x Aer OpenMP threads <= c unless a row says so):

* seed strategies, calling qmill's ``simulate(SimJob, threads=N)``:
  ``thread-pool`` ThreadPoolExecutor(c) x 1 thread; ``process-pool`` ProcessPoolExecutor(c)
  x 1 thread; ``asyncio-blocking`` the call made in the loop itself, one at a time x c
  threads; ``hybrid`` ThreadPoolExecutor(c) threads each submitting into a
  ProcessPoolExecutor(c) x 1 thread.
* what qmill ships (``worker/qmill_worker/executors.py``), sized the way the worker sizes
  them (slots = c, threads = ``aer_threads(0, c)``): ``qmill-thread``, ``qmill-process``.
* the raw Aer floor: ``qiskit.qasm3.loads`` + a pass manager built once +
  ``AerSimulator.run``, no qmill code, no event loop. ``raw-seq``: one process, one
  circuit at a time x c threads (and ``raw-seq-1t``, x 1 thread, small workload only:
  OpenMP only costs on a 2-qubit circuit). ``raw-par``: c processes x 1 thread, circuits handed out
  one by one (heavy) or in large chunks (small). The faster of the two is "the floor"
  that every other row is divided by. Small workload only, and not the same work (they
  skip parsing): ``raw-preparsed`` (one Aer call per pre-lowered circuit) and
  ``raw-batched`` (one Aer call for all of them), the ceiling for batching.
* optional, not in the default set: ``process-pool-oversub`` (c processes x c threads),
  to show what oversubscription costs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from bench import workloads
from bench.measure import Settler, StallMonitor, TreeMeter

REPO = Path(__file__).resolve().parents[1]
Counts = dict[str, int]


@dataclass(frozen=True)
class Strategy:
    name: str
    label: str
    family: str  # "seed", "qmill" or "raw"
    concurrency: int  # simulations it may run at once, as configured
    aer_threads: int  # Aer max_parallel_threads per simulation
    note: str = ""
    floor_candidate: bool = False  # raw schedule doing the same work as the others
    same_work: bool = True  # parses every program like the others do
    small_only: bool = False
    event_loop: bool = True  # the driving process runs an event loop we can watch

    @property
    def oversubscribed(self) -> bool:
        """True when the configuration asks for more OpenMP threads than there are cores.

        Thread strategies are judged by their configuration even though the GIL makes
        them run one simulation at a time.
        """
        return self.concurrency * self.aer_threads > usable_cores()


def usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def strategies(cores: int | None = None) -> dict[str, Strategy]:
    """Every known strategy for a machine with ``cores`` cores, in table order."""
    from qmill_worker.executors import aer_threads

    c = cores or usable_cores()
    qt = aer_threads(0, c)  # what the worker picks for c slots when [worker] aer_threads = 0
    gil = "the GIL serialises simulations: one at a time, on 1 OpenMP thread"
    rows = [
        Strategy("thread-pool", f"ThreadPoolExecutor({c}) x 1 thr", "seed", c, 1, gil),
        Strategy("process-pool", f"ProcessPoolExecutor({c}) x 1 thr", "seed", c, 1),
        Strategy(
            "asyncio-blocking",
            f"blocking call in the event loop x {c} thr",
            "seed",
            1,
            c,
            "one at a time, yielding between tasks; the loop is frozen during each one",
        ),
        Strategy(
            "hybrid",
            f"ThreadPool({c}) -> ProcessPool({c}) x 1 thr",
            "seed",
            c,
            1,
            "threads block on a process pool's futures",
        ),
        Strategy("qmill-thread", f"qmill ThreadExecutor({c}, {qt})", "qmill", c, qt, gil),
        Strategy(
            "qmill-process",
            f"qmill ProcessExecutor({c}, {qt})",
            "qmill",
            c,
            qt,
            "warm child processes, JSON lines over pipes (the shipped default)",
        ),
        Strategy(
            "raw-seq",
            f"raw Aer: 1 process, sequential x {c} thr",
            "raw",
            1,
            c,
            floor_candidate=True,
            event_loop=False,
        ),
        Strategy(
            "raw-seq-1t",
            "raw Aer: 1 process, sequential x 1 thr",
            "raw",
            1,
            1,
            "small circuits: OpenMP threads only cost (fork/join per call)",
            floor_candidate=True,
            small_only=True,
            event_loop=False,
        ),
        Strategy(
            "raw-par",
            f"raw Aer: {c} processes x 1 thr",
            "raw",
            c,
            1,
            floor_candidate=True,
            event_loop=False,
        ),
        Strategy(
            "raw-preparsed",
            "raw Aer: pre-parsed, 1 call per circuit x 1 thr",
            "raw",
            1,
            1,
            "skips parsing and lowering (not the same work)",
            same_work=False,
            small_only=True,
            event_loop=False,
        ),
        Strategy(
            "raw-batched",
            "raw Aer: pre-parsed, one call for all circuits",
            "raw",
            c,
            1,
            "skips parsing; Aer runs the experiments in parallel (not the same work)",
            same_work=False,
            small_only=True,
            event_loop=False,
        ),
        Strategy(
            "process-pool-oversub",
            f"ProcessPoolExecutor({c}) x {c} thr (OVERSUBSCRIBED)",
            "seed",
            c,
            c,
            "deliberately oversubscribed: c simulations x c OpenMP threads",
        ),
    ]
    return {s.name: s for s in rows}


DEFAULT_STRATEGIES = (
    "thread-pool",
    "process-pool",
    "asyncio-blocking",
    "hybrid",
    "qmill-thread",
    "qmill-process",
    "raw-seq",
    "raw-seq-1t",
    "raw-par",
    "raw-preparsed",
    "raw-batched",
)


# --- simulation entry points (module level so process pools can pickle them) ----------


def _job(circuit: workloads.Circuit) -> Any:
    from qmill_worker.simulator import SimJob

    return SimJob(circuit.name, circuit.qasm, circuit.shots, seed=circuit.seed)


def qmill_counts(circuit: workloads.Circuit, threads: int) -> Counts:
    """qmill's own simulation path: ``simulate(SimJob(...), threads=N)``."""
    from qmill_worker.simulator import simulate

    return simulate(_job(circuit), threads=threads).counts


def qmill_warm_up() -> None:
    from qmill_worker.simulator import warm_up

    warm_up()


@lru_cache(maxsize=1)
def raw_backend() -> Any:
    from qiskit.transpiler import generate_preset_pass_manager
    from qiskit_aer import AerSimulator

    backend = AerSimulator(method="automatic")
    return backend, generate_preset_pass_manager(optimization_level=0, backend=backend)


def raw_warm_up() -> None:
    from qiskit import qasm3

    raw_backend()
    qasm3.loads(workloads.BELL)


def raw_lower(qasm: str) -> Any:
    from qiskit import qasm2, qasm3

    _, pm = raw_backend()
    text = qasm.lstrip()
    qc = qasm2.loads(qasm) if text.startswith("OPENQASM 2") else qasm3.loads(qasm)
    return pm.run(qc)


def raw_counts(circuit: workloads.Circuit, threads: int) -> Counts:
    """The floor: parse, lower with a prebuilt pass manager, run. Nothing else."""
    backend, _ = raw_backend()
    job = backend.run(
        raw_lower(circuit.qasm),
        shots=circuit.shots,
        seed_simulator=circuit.seed,
        max_parallel_threads=threads,
    )
    return {str(k): int(v) for k, v in job.result().get_counts().items()}


def raw_chunk(chunk: list[workloads.Circuit], threads: int) -> list[Counts]:
    return [raw_counts(c, threads) for c in chunk]


# --- strategies as runners --------------------------------------------------------------


class Runner(Protocol):
    async def start(self) -> None: ...

    async def run_all(self, circuits: list[workloads.Circuit]) -> list[Counts]: ...

    async def close(self) -> None: ...


def _spawn_pool(workers: int, init: Callable[[], None]) -> ProcessPoolExecutor:
    # spawn, not fork: the driving process has threads (the meter) and imported qiskit.
    ctx = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=init)


async def _warm_pool(pool: ProcessPoolExecutor, workers: int, fn: Callable[..., Any]) -> None:
    loop = asyncio.get_running_loop()
    warm = workloads.small(workers * 2).circuits
    await asyncio.gather(*(loop.run_in_executor(pool, fn, c, 1) for c in warm))


class ThreadPoolRunner:
    def __init__(self, workers: int, threads: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bench-sim")
        self._workers = workers
        self._threads = threads

    async def start(self) -> None:
        qmill_warm_up()
        await self.run_all(workloads.small(self._workers * 2).circuits)

    async def run_all(self, circuits: list[workloads.Circuit]) -> list[Counts]:
        loop = asyncio.get_running_loop()
        return list(
            await asyncio.gather(
                *(
                    loop.run_in_executor(self._pool, qmill_counts, c, self._threads)
                    for c in circuits
                )
            )
        )

    async def close(self) -> None:
        self._pool.shutdown(wait=True)


class ProcessPoolRunner:
    def __init__(self, workers: int, threads: int) -> None:
        self._workers = workers
        self._threads = threads
        self._pool = _spawn_pool(workers, qmill_warm_up)

    async def start(self) -> None:
        await _warm_pool(self._pool, self._workers, qmill_counts)

    async def run_all(self, circuits: list[workloads.Circuit]) -> list[Counts]:
        loop = asyncio.get_running_loop()
        return list(
            await asyncio.gather(
                *(
                    loop.run_in_executor(self._pool, qmill_counts, c, self._threads)
                    for c in circuits
                )
            )
        )

    async def close(self) -> None:
        self._pool.shutdown(wait=True)


class AsyncioBlockingRunner:
    def __init__(self, threads: int) -> None:
        self._threads = threads

    async def start(self) -> None:
        qmill_warm_up()
        await self.run_all(workloads.small(2).circuits)

    async def run_all(self, circuits: list[workloads.Circuit]) -> list[Counts]:
        # Like a worker that awaits its next message between tasks: the loop gets a turn
        # between simulations and is frozen during each one (gathering them all instead
        # would freeze it for the whole workload in a single iteration).
        out = []
        for c in circuits:
            out.append(qmill_counts(c, self._threads))  # blocks the loop: that is the point
            await asyncio.sleep(0)
        return out

    async def close(self) -> None:
        return None


class HybridRunner:
    def __init__(self, workers: int, threads: int) -> None:
        self._workers = workers
        self._threads = threads
        self._threads_pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bench-hy")
        self._procs = _spawn_pool(workers, qmill_warm_up)

    def _call(self, circuit: workloads.Circuit) -> Counts:
        return self._procs.submit(qmill_counts, circuit, self._threads).result()

    async def start(self) -> None:
        await _warm_pool(self._procs, self._workers, qmill_counts)

    async def run_all(self, circuits: list[workloads.Circuit]) -> list[Counts]:
        loop = asyncio.get_running_loop()
        return list(
            await asyncio.gather(
                *(loop.run_in_executor(self._threads_pool, self._call, c) for c in circuits)
            )
        )

    async def close(self) -> None:
        self._threads_pool.shutdown(wait=True)
        self._procs.shutdown(wait=True)


class QmillRunner:
    """qmill's executors, driven the way the worker drives them (one `run` per task)."""

    def __init__(self, kind: str, slots: int, threads: int) -> None:
        from qmill_worker.executors import ProcessExecutor, ThreadExecutor

        self._executor: ProcessExecutor | ThreadExecutor = (
            ProcessExecutor(slots, threads) if kind == "process" else ThreadExecutor(slots, threads)
        )
        self._slots = slots

    async def start(self) -> None:
        await self._executor.start()
        await self.run_all(workloads.small(self._slots * 2).circuits)

    async def run_all(self, circuits: list[workloads.Circuit]) -> list[Counts]:
        # The worker never has more tasks in flight than slots; neither do we.
        gate = asyncio.Semaphore(self._slots)

        async def one(c: workloads.Circuit) -> Counts:
            async with gate:
                result = await self._executor.run(_job(c), timeout=3600.0)
            return result.counts

        return list(await asyncio.gather(*(one(c) for c in circuits)))

    async def close(self) -> None:
        await self._executor.close()


class RawSeqRunner:
    def __init__(self, threads: int) -> None:
        self._threads = threads

    async def start(self) -> None:
        raw_warm_up()
        raw_counts(workloads.small(1).circuits[0], self._threads)

    async def run_all(self, circuits: list[workloads.Circuit]) -> list[Counts]:
        return [raw_counts(c, self._threads) for c in circuits]

    async def close(self) -> None:
        return None


class RawParRunner:
    def __init__(self, workers: int, threads: int) -> None:
        self._workers = workers
        self._threads = threads
        self._pool = _spawn_pool(workers, raw_warm_up)

    async def start(self) -> None:
        await _warm_pool(self._pool, self._workers, raw_counts)

    async def run_all(self, circuits: list[workloads.Circuit]) -> list[Counts]:
        # Heavy circuits one by one (they differ in cost); small ones in a few big chunks
        # so that the pool's per-item IPC does not count against the floor.
        size = 1 if len(circuits) < 100 else max(1, len(circuits) // (self._workers * 4))
        chunks = [circuits[i : i + size] for i in range(0, len(circuits), size)]
        futures = [self._pool.submit(raw_chunk, chunk, self._threads) for chunk in chunks]
        return [counts for f in futures for counts in f.result()]

    async def close(self) -> None:
        self._pool.shutdown(wait=True)


class RawPreparsedRunner:
    """Run already-lowered circuits: what Aer costs once parsing is free."""

    def __init__(self, threads: int, batched: bool, parallel_experiments: int) -> None:
        self._threads = threads
        self._batched = batched
        self._parallel = parallel_experiments
        self._lowered: dict[str, Any] = {}

    async def start(self) -> None:
        raw_warm_up()

    def prepare(self, circuits: list[workloads.Circuit]) -> None:
        cache: dict[str, Any] = {}
        for c in circuits:
            if c.qasm not in cache:
                cache[c.qasm] = raw_lower(c.qasm)
            self._lowered[c.name] = cache[c.qasm]

    async def run_all(self, circuits: list[workloads.Circuit]) -> list[Counts]:
        backend, _ = raw_backend()
        if self._batched:
            result = backend.run(
                [self._lowered[c.name] for c in circuits],
                shots=circuits[0].shots,
                seed_simulator=circuits[0].seed,
                max_parallel_threads=usable_cores(),
                max_parallel_experiments=self._parallel,
            ).result()
            return [
                {str(k): int(v) for k, v in result.get_counts(i).items()}
                for i in range(len(circuits))
            ]
        out = []
        for c in circuits:
            job = backend.run(
                self._lowered[c.name],
                shots=c.shots,
                seed_simulator=c.seed,
                max_parallel_threads=self._threads,
            )
            out.append({str(k): int(v) for k, v in job.result().get_counts().items()})
        return out

    async def close(self) -> None:
        return None


def make_runner(s: Strategy) -> Runner:
    if s.name == "thread-pool":
        return ThreadPoolRunner(s.concurrency, s.aer_threads)
    if s.name in ("process-pool", "process-pool-oversub"):
        return ProcessPoolRunner(s.concurrency, s.aer_threads)
    if s.name == "asyncio-blocking":
        return AsyncioBlockingRunner(s.aer_threads)
    if s.name == "hybrid":
        return HybridRunner(s.concurrency, s.aer_threads)
    if s.name == "qmill-thread":
        return QmillRunner("thread", s.concurrency, s.aer_threads)
    if s.name == "qmill-process":
        return QmillRunner("process", s.concurrency, s.aer_threads)
    if s.name in ("raw-seq", "raw-seq-1t"):
        return RawSeqRunner(s.aer_threads)
    if s.name == "raw-par":
        return RawParRunner(s.concurrency, s.aer_threads)
    if s.name == "raw-preparsed":
        return RawPreparsedRunner(s.aer_threads, batched=False, parallel_experiments=1)
    if s.name == "raw-batched":
        return RawPreparsedRunner(1, batched=True, parallel_experiments=s.concurrency)
    raise ValueError(f"unknown strategy {s.name!r}")


def counts_digest(results: Iterable[Counts]) -> str:
    h = hashlib.sha256()
    for counts in results:
        h.update(json.dumps(counts, sort_keys=True).encode())
    return h.hexdigest()[:16]


async def measure(s: Strategy, workload: workloads.Workload) -> dict[str, Any]:
    """Run one strategy on one workload in this process; the numbers of one table row."""
    t0 = time.perf_counter()
    runner = make_runner(s)
    await runner.start()
    if isinstance(runner, RawPreparsedRunner):
        runner.prepare(workload.circuits)
    setup = time.perf_counter() - t0
    circuits = workload.circuits
    meter = TreeMeter(os.getpid(), interval=0.2)
    stall = StallMonitor()
    meter.start()
    if s.event_loop:
        stall.start()
    started = time.perf_counter()
    try:
        results = await runner.run_all(circuits)
        wall = time.perf_counter() - started
    finally:
        if s.event_loop:
            await stall.stop()
        usage = meter.stop()
        await runner.close()
    bad = sum(1 for c, r in zip(circuits, results, strict=True) if sum(r.values()) != c.shots)
    row: dict[str, Any] = {
        "strategy": s.name,
        "label": s.label,
        "family": s.family,
        "workload": workload.name,
        "tasks": len(circuits),
        "concurrency": s.concurrency,
        "aer_threads": s.aer_threads,
        "oversubscribed": s.oversubscribed,
        "floor_candidate": s.floor_candidate,
        "same_work": s.same_work,
        "note": s.note,
        "wall_seconds": round(wall, 4),
        "tasks_per_second": round(len(circuits) / wall, 2),
        "setup_seconds": round(setup, 3),
        "wrong_results": bad,
        "counts_digest": counts_digest(results),
    }
    usage_dict = usage.to_dict()
    row.update(
        cpu_seconds=usage_dict["cpu_seconds"],
        cpu_utilisation_cores=usage_dict["cpu_utilisation_cores"],
        peak_rss_mib=usage_dict["peak_rss_mib"],
        peak_rss_sampled_mib=usage_dict["peak_rss_sampled_mib"],
        processes=usage_dict["processes"],
        foreign_cpu_cores=usage_dict["foreign_cpu_cores"],
    )
    if s.event_loop:
        row.update(stall.to_dict())
    else:
        row.update(worst_stall_ms=None, stalls_over_50ms=None, ticks=None)
    return row


# --- the table: one subprocess per row --------------------------------------------------


def run_row(
    name: str,
    workload: str,
    workload_file: Path,
    cores: int,
    timeout: float,
    settler: Settler | None = None,
) -> dict[str, Any]:
    """Run one row in a fresh interpreter; a crash or time-out becomes an error row."""
    s = strategies(cores)[name]
    settled = settler.wait() if settler is not None else None
    out = workload_file.parent / f"row-{workload}-{name}.json"
    out.unlink(missing_ok=True)
    argv = [
        sys.executable,
        "-m",
        "bench.strategies",
        "--strategy",
        name,
        "--workload",
        workload,
        "--workload-file",
        str(workload_file),
        "--cores",
        str(cores),
        "--out",
        str(out),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    started = time.perf_counter()
    error = None
    # A session of its own, so that the row's pool children can be killed with it.
    proc = subprocess.Popen(
        argv,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, stderr = proc.communicate(timeout=timeout)
        if proc.returncode != 0:
            error = f"exit code {proc.returncode}: {stderr.strip()[-800:]}"
    except subprocess.TimeoutExpired:
        error = f"timed out after {timeout:.0f} s"
    finally:
        _kill_group(proc)
    if error is None and out.is_file():
        row: dict[str, Any] = json.loads(out.read_text())
    else:
        row = {
            "strategy": name,
            "label": s.label,
            "family": s.family,
            "workload": workload,
            "error": error or "no result written",
        }
    row["process_seconds"] = round(time.perf_counter() - started, 2)
    row["settle"] = settled
    return row


def best_of(tries: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest successful try (noise only ever adds time), with every try's wall time
    and how busy the rest of the machine was during each, so the spread stays visible."""
    good = [t for t in tries if "error" not in t]
    if not good:
        return tries[-1]
    best = dict(min(good, key=lambda t: float(t["wall_seconds"])))
    best["tries_wall_seconds"] = [t.get("wall_seconds") for t in tries]
    best["tries_foreign_cpu_cores"] = [t.get("foreign_cpu_cores") for t in tries]
    return best


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """Kill the row's process group (its pools' children too); nothing may outlive a row."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def add_ratios(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Mark the raw floor (fastest raw schedule doing the same work) and divide by it."""
    floor_rows = [r for r in rows if r.get("floor_candidate") and "error" not in r]
    if not floor_rows:
        for r in rows:
            r["vs_floor"] = None
        return None
    best = min(floor_rows, key=lambda r: float(r["wall_seconds"]))
    for r in rows:
        if "error" in r:
            r["vs_floor"] = None
            continue
        r["vs_floor"] = round(float(r["wall_seconds"]) / float(best["wall_seconds"]), 3)
        r["is_floor"] = r is best
    return {
        "strategy": best["strategy"],
        "label": best["label"],
        "wall_seconds": best["wall_seconds"],
        "tasks_per_second": best["tasks_per_second"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="run one row of the strategy table")
    parser.add_argument("--strategy", required=True)
    parser.add_argument("--workload", required=True)
    parser.add_argument("--workload-file", type=Path, required=True)
    parser.add_argument("--cores", type=int, default=usable_cores())
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    s = strategies(args.cores)[args.strategy]
    workload = workloads.load(args.workload_file)[args.workload]
    row = asyncio.run(measure(s, workload))
    args.out.write_text(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
