"""The raw side of the growth curves (`bench.growth`): Aer alone, in a warm process.

``python -m bench.growth_raw SPEC OUT`` reads the points (`Point`) from SPEC and writes
each one's median wall and CPU to OUT, then raw Aer's batched throughput. No qmill code
runs here but one constant (`PARALLEL_QUBITS`, the worker's own threads rule), so what
the curves divide by is Aer's own cost.
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import workloads
from bench.measure import machine_busy_seconds
from bench.system import REPO

RAW_TIMEOUT_SECONDS = 900.0
# Predicted raw Aer seconds above which a series stops growing (`predicted`).
POINT_LIMIT_SECONDS = 20.0


@dataclass(frozen=True)
class Point:
    series: str
    x: int  # qubits, or shots for the shots series
    qubits: int
    shots: int
    method: str
    qasm: str
    repeats: int


@functools.cache
def raw_backend(method: str) -> tuple[Any, Any]:
    from qiskit.transpiler import generate_preset_pass_manager
    from qiskit_aer import AerSimulator

    backend = AerSimulator(method=method)
    return backend, generate_preset_pass_manager(optimization_level=0, backend=backend)


def raw_parse(text: str) -> tuple[Any, str]:
    """The fastest parse qiskit has for ``text``: the Rust importer
    (``qasm3.loads_experimental``, which qmill also uses where it can), else the ANTLR
    one (``qasm3.loads``); and which one it was. ANTLR costs ~10 ms for a Bell program,
    several times the simulation, so a raw side that always used it would flatter qmill."""
    import warnings

    from qiskit import qasm3

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return qasm3.loads_experimental(text), "rust"
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:  # QASM3ImporterError, or a Rust PanicException: the slow way
            return qasm3.loads(text), "antlr"


def raw_point(p: Point) -> dict[str, Any]:
    """Median wall and CPU of parse + lower + run + counts, after one untimed try (the
    system's side gets one too: the first parse of a program, Aer's first run)."""
    from qmill_worker.simulator import PARALLEL_QUBITS

    backend, pm = raw_backend(p.method)
    # As a worker slot does (`useful_threads`): one thread for a state too narrow for
    # Aer to parallelise (idle OpenMP threads still burn CPU), else Aer's default.
    options = {"max_parallel_threads": 1} if p.qubits < PARALLEL_QUBITS else {}
    parser = "?"
    walls, cpus = [], []
    # One untimed try first where there are several (a first run's costs are not the
    # curve's); a single seconds-long try is timed as it is.
    first = 1 if p.repeats > 1 else 0
    for i in range(first, p.repeats + 1):
        cpu, started = time.process_time(), time.perf_counter()
        circuit, parser = raw_parse(p.qasm)
        result = backend.run(pm.run(circuit), shots=p.shots, **options).result()
        counts = result.get_counts(0)
        if i > 0:
            walls.append(time.perf_counter() - started)
            cpus.append(time.process_time() - cpu)
        if sum(counts.values()) != p.shots:
            raise RuntimeError(f"{p.series} {p.x}: wrong counts")
    print(f"raw {p.series} {p.x}: {[round(w, 3) for w in walls]}", file=sys.stderr, flush=True)
    return {
        "seconds": statistics.median(walls),
        "cpu_seconds": statistics.median(cpus),
        "parser": parser,
    }


def raw_batch(tasks: int) -> dict[str, Any]:
    """Raw Aer's batched throughput: the program pre-parsed and lowered, one call for
    ``tasks`` copies; the fastest of Aer's automatic method (the stabilizer, for Bell) or
    the statevector (what qmill runs narrow Clifford circuits on), each on 1 thread or
    one experiment per core (Aer's default parallelises each tiny circuit's shots and
    spent 3-4x the CPU of either)."""
    from bench import strategies

    lowered = [strategies.raw_lower(workloads.BELL)] * tasks
    cores = strategies.usable_cores()
    spread = {
        "1 thread": {"max_parallel_threads": 1},
        f"{cores} experiments at once": {
            "max_parallel_threads": cores,
            "max_parallel_experiments": cores,
        },
    }
    best: dict[str, Any] = {}
    for method in ("automatic", "statevector"):
        backend, _ = raw_backend(method)
        for name, options in spread.items():
            backend.run(lowered[:8], shots=workloads.SHOTS, **options).result()  # warm
            cpu, started = time.process_time(), time.perf_counter()
            result = backend.run(lowered, shots=workloads.SHOTS, **options).result()
            wall = time.perf_counter() - started
            if len(result.results) != tasks:
                raise RuntimeError("raw batch: wrong number of results")
            if not best or wall < best["seconds"]:
                best = {
                    "seconds": round(wall, 4),
                    "cpu_seconds": round(time.process_time() - cpu, 4),
                    "tasks_per_second": round(tasks / wall, 1),
                    "way": f"{method}, {name}",
                }
    return best


def predicted(p: Point, last: tuple[int, float] | None) -> float:
    """What raw Aer will take for ``p``, from its series' previous point: a statevector
    doubles with each qubit, so GHZ and random points grow as 2^qubits (the layers of
    random circuits shrink as they grow: an upper bound); shots are cheap. A series whose
    next point would take longer than `POINT_LIMIT_SECONDS` stops there (the system's side
    skips it too): it bounds the section on a busy machine, where Aer's OpenMP threads
    wait for each other at every gate (GHZ-26 took 46 s there, and random-26 68 s)."""
    if last is None or p.series == "shots":
        return 0.0
    x, seconds = last
    return seconds * 2.0 ** (p.x - x)


def raw_main(spec_file: Path, out: Path) -> None:
    spec = json.loads(spec_file.read_text())
    from bench import strategies

    strategies.raw_warm_up()
    pts = [Point(**p) for p in spec["points"]]
    results: list[dict[str, Any] | None] = []
    last: dict[str, tuple[int, float]] = {}  # series -> (x, raw seconds) of its last point
    wall, busy, own = time.perf_counter(), machine_busy_seconds(), time.process_time()
    for p in pts:
        if predicted(p, last.get(p.series)) > POINT_LIMIT_SECONDS:
            results.append(None)
            last[p.series] = (p.x, float("inf"))
            continue
        results.append(raw_point(p))
        last[p.series] = (p.x, float(results[-1]["seconds"]))  # type: ignore[index]
    wall = time.perf_counter() - wall
    own = time.process_time() - own
    foreign = max(0.0, machine_busy_seconds() - busy - own) / wall
    batch = raw_batch(int(spec["batch_tasks"]))
    out.write_text(
        json.dumps({"points": results, "batch": batch, "foreign_cpu_cores": round(foreign, 3)})
    )


def run_raw(pts: list[Point], batch_tasks: int, tmp: Path) -> dict[str, Any]:
    """Run the raw side in a fresh interpreter; its results, or RuntimeError."""
    spec, out = tmp / "growth-spec.json", tmp / "growth-raw.json"
    spec.write_text(json.dumps({"points": [asdict(p) for p in pts], "batch_tasks": batch_tasks}))
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    argv = [sys.executable, "-m", "bench.growth_raw", str(spec), str(out)]
    proc = subprocess.run(
        argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=RAW_TIMEOUT_SECONDS
    )
    if proc.returncode != 0 or not out.is_file():
        raise RuntimeError(f"raw Aer: exit code {proc.returncode}: {proc.stderr[-800:]}")
    result: dict[str, Any] = json.loads(out.read_text())
    return result


if __name__ == "__main__":
    raw_main(Path(sys.argv[1]), Path(sys.argv[2]))
