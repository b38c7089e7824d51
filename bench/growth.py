"""How the system's cost grows with the work (issue 15): end-to-end time over raw Aer time.

Where does qmill's per-task overhead stop mattering? Three curves and one batch, all in
the same run:

* **GHZ**, 2 to 26 qubits, statevector, 1024 shots: cheap gates, big states (26 qubits
  is a 1 GiB statevector), so the curve shows the state's size alone;
* **random circuits** (``qiskit.circuit.random.random_circuit``, seeded), 2 to 24 qubits,
  statevector, with fewer layers as they grow (`random_layers`) so the biggest point
  still costs seconds, not minutes;
* **shots**, 1 to 10^5, on a 10-qubit random circuit (up to 1024 distinct outcomes, so
  the answer grows with the shots too);
* **batch**: one ``POST /batches`` of 1000 Bell circuits (automatic method), collected by
  long-polling its last task then one ``GET /batches/{id}``, against raw Aer's batched
  throughput: the same program pre-parsed and lowered, 1000 copies in one
  ``AerSimulator.run`` (`raw_batch`: the fastest of four ways).

**Raw**: one warm interpreter of its own (`bench.growth_raw`), no qmill code,
doing for each point exactly what a task costs Aer: the fastest parse of the same text
(`raw_parse`: the Rust importer, as qmill, else ``qasm3.loads``), the pass manager
(built before timing), ``run`` and ``get_counts``; one thread below 14 qubits, else
Aer's default (every core), as a worker slot running one simulation alone does. It
runs before the system starts, so the two never share the cores.

**End to end**: ``qmill up`` in the shipped configuration, one task at a time through
the lean client (`bench.client`): ``POST /tasks`` then ``GET /tasks/{id}?wait=30``,
timed from before the POST to the parsed answer. Each point is the median of
`repeats` tries (fewer for the big ones). The ratio is end-to-end over raw: 1.0 means
the system added nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from bench import e2e, workloads
from bench.client import Client
from bench.growth_raw import POINT_LIMIT_SECONDS, Point, run_raw
from bench.measure import TreeMeter, cpu_seconds
from bench.system import System, SystemConfig, label_process

SERIES = ("ghz", "random", "shots")


@dataclass(frozen=True)
class GrowthPlan:
    ghz_qubits: tuple[int, ...] = (2, 4, 8, 12, 16, 20, 22, 24, 26)
    # Random circuits stop at 24: at 26 even 2 layers cost about a minute per side on a
    # busy machine; GHZ's 26-qubit point shows the largest state's cost.
    random_qubits: tuple[int, ...] = (2, 4, 8, 12, 16, 20, 22, 24)
    shots: tuple[int, ...] = (1, 10, 100, 1000, 10_000, 100_000)
    shots_qubits: int = 10
    batch_tasks: int = 1000
    seed: int = 15_000

    @classmethod
    def quick(cls) -> GrowthPlan:
        return cls((2, 8, 12), (2, 8, 12), (1, 1000), 6, 50)


def random_layers(qubits: int) -> int:
    """Layers of the random circuits: 10 up to 12 qubits, then fewer, so that every point
    costs Aer seconds, not minutes (each gate on 24 qubits sweeps 256 MiB; on a busy
    2-core machine, 2 layers of 24 qubits took 15 s, 3 layers of 26 qubits 68 s)."""
    if qubits <= 12:
        return 10
    if qubits <= 16:
        return 5
    if qubits <= 22:
        return 3
    return 2


def repeats(qubits: int) -> int:
    """Tries per point, median kept: many for the small ones (milliseconds, noisy), one
    for the seconds-long ones."""
    return 5 if qubits <= 12 else 3 if qubits <= 16 else 1


def ghz(qubits: int) -> str:
    gates = " ".join(f"cx q[{i}], q[{i + 1}];" for i in range(qubits - 1))
    return (
        f'OPENQASM 3.0; include "stdgates.inc"; qubit[{qubits}] q; bit[{qubits}] c; '
        f"h q[0]; {gates} c = measure q;"
    )


def random_program(qubits: int, layers: int, seed: int) -> str:
    from qiskit import qasm3
    from qiskit.circuit.random import random_circuit

    return str(qasm3.dumps(random_circuit(qubits, layers, measure=True, seed=seed)))


def points(plan: GrowthPlan) -> list[Point]:
    out = [Point("ghz", n, n, 1024, "statevector", ghz(n), repeats(n)) for n in plan.ghz_qubits]
    out += [
        Point(
            "random",
            n,
            n,
            1024,
            "statevector",
            random_program(n, random_layers(n), plan.seed + n),
            repeats(n),
        )
        for n in plan.random_qubits
    ]
    program = random_program(plan.shots_qubits, 10, plan.seed)
    out += [
        Point("shots", s, plan.shots_qubits, s, "statevector", program, repeats(plan.shots_qubits))
        for s in plan.shots
    ]
    return out


# --- the system: one task at a time, and one batch ---------------------------------------


async def one_task(client: Client, conn: Any, p: Point) -> float:
    body = {"quantum_circuit": p.qasm, "shots": p.shots, "method": p.method}
    started = time.perf_counter()
    created = await client.post_json(conn, "/tasks", body)
    if created.status != 201:
        raise RuntimeError(f"POST /tasks: {created.status} {created.text[:200]}")
    path = f"/tasks/{created.json()['task_id']}?wait={e2e.LONG_POLL_SECONDS:g}"
    while True:
        answer = (await client.get(conn, path)).json()
        if answer["status"] in e2e.TERMINAL:
            break
    if answer["status"] != "completed":
        raise RuntimeError(f"{p.series} {p.x}: {answer['status']} {answer.get('error')}")
    return time.perf_counter() - started


async def one_batch(client: Client, conn: Any, tasks: int) -> float:
    body = {"tasks": [{"quantum_circuit": workloads.BELL, "shots": workloads.SHOTS}] * tasks}
    started = time.perf_counter()
    created = await client.post_json(conn, "/batches", body)
    if created.status != 201:
        raise RuntimeError(f"POST /batches: {created.status} {created.text[:200]}")
    answer = created.json()
    last = f"/tasks/{answer['task_ids'][-1]}?wait={e2e.LONG_POLL_SECONDS:g}"
    while True:
        # Tasks run in order, give or take a slot: the last one done, the batch nearly is.
        while (await client.get(conn, last)).json()["status"] not in e2e.TERMINAL:
            pass
        views = (await client.get(conn, f"/batches/{answer['batch_id']}")).json()["tasks"]
        states = [v["status"] for v in views]
        if len(states) == tasks and all(s in e2e.TERMINAL for s in states):
            break
    if states.count("completed") != tasks:
        raise RuntimeError(f"batch: {tasks - states.count('completed')} tasks not completed")
    return time.perf_counter() - started


async def run_system(
    pts: list[Point],
    raw_points: list[dict[str, Any] | None],
    plan: GrowthPlan,
    log: Callable[[str], None],
) -> dict[str, Any]:
    system = System(SystemConfig.parse("shipped"))
    client = Client(system.url)
    try:
        await system.start(lambda slots: e2e.warm(system.url, slots))
        conn = client.connection()
        assert system.proc is not None
        meter = TreeMeter(system.proc.pid, interval=1.0, label=label_process)
        me = psutil.Process()
        me_cpu = cpu_seconds(me)
        meter.start()
        seconds: list[float | None] = []
        for p, r in zip(pts, raw_points, strict=True):
            if r is None:
                seconds.append(None)
                continue
            if p.repeats > 1:
                await one_task(client, conn, p)  # this program's first parse, off the clock
            tries = [await one_task(client, conn, p) for _ in range(p.repeats)]
            seconds.append(statistics.median(tries))
        await one_batch(client, conn, min(plan.batch_tasks, 50))  # warm the batch path
        batch = await one_batch(client, conn, plan.batch_tasks)
        usage = meter.stop()
        mine = usage.cpu_seconds + cpu_seconds(me) - me_cpu
        foreign = max(0.0, usage.machine_busy_seconds - mine) / usage.wall_seconds
        return {
            "settings": system.settings,
            "points": seconds,
            "batch_seconds": batch,
            "foreign_cpu_cores": round(foreign, 3),
        }
    finally:
        client.close()
        system.stop()
        if system.leftover:
            log(f"  growth: leftover processes {system.leftover}")


def bench_growth(plan: GrowthPlan, log: Callable[[str], None]) -> dict[str, Any]:
    """Raw Aer, then the system, on the same points; ratios, series and the batch."""
    started = time.perf_counter()
    out: dict[str, Any] = {"plan": asdict(plan), "config": "shipped"}
    try:
        pts = points(plan)
        with tempfile.TemporaryDirectory(prefix="qmill-growth-") as tmp:
            raw = run_raw(pts, plan.batch_tasks, Path(tmp))
        log(f"  growth: raw Aer done in {time.perf_counter() - started:.0f} s")
        sysd = e2e.run_async(run_system(pts, raw["points"], plan, log))
    except Exception as exc:  # report it and go on with the rest of the bench
        out["error"] = f"{type(exc).__name__}: {exc}"
        log(f"  growth FAILED: {out['error']}")
        out["seconds"] = round(time.perf_counter() - started, 1)
        return out
    series: dict[str, list[dict[str, Any]]] = {s: [] for s in SERIES}
    skipped: list[str] = []
    for p, r, e in zip(pts, raw["points"], sysd["points"], strict=True):
        if r is None or e is None:
            skipped.append(f"{p.series} {p.x}")
            continue
        series[p.series].append(
            {
                "x": p.x,
                "qubits": p.qubits,
                "shots": p.shots,
                "repeats": p.repeats,
                "raw_ms": round(r["seconds"] * 1000, 2),
                "raw_cpu_ms": round(r["cpu_seconds"] * 1000, 2),
                "e2e_ms": round(e * 1000, 2),
                "ratio": round(e / r["seconds"], 3),
                "raw_parser": r["parser"],
            }
        )
    rb, tasks = raw["batch"], plan.batch_tasks
    out["settings"] = sysd["settings"]
    out["series"] = series
    out["skipped"] = skipped
    out["foreign_cpu_cores"] = {
        "raw": raw["foreign_cpu_cores"],
        "system": sysd["foreign_cpu_cores"],
    }
    out["layers"] = {str(n): random_layers(n) for n in plan.random_qubits}
    out["batch"] = {
        "tasks": tasks,
        "e2e_seconds": round(sysd["batch_seconds"], 3),
        "e2e_tasks_per_second": round(tasks / sysd["batch_seconds"], 1),
        "raw_seconds": rb["seconds"],
        "raw_cpu_seconds": rb["cpu_seconds"],
        "raw_tasks_per_second": rb["tasks_per_second"],
        "raw_way": rb["way"],
        "ratio": round(rb["seconds"] / sysd["batch_seconds"], 3),
    }
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def growth_markdown(g: dict[str, Any]) -> str:
    """The growth section of the report: one table per curve, then the batch."""
    lines = ["#### Growth: end to end over raw Aer, one task at a time (`qmill up`, shipped)", ""]
    if g.get("error"):
        return "\n".join([*lines, f"ERROR: {g['error']}"])
    titles = {
        "ghz": "GHZ, statevector, 1024 shots",
        "random": "random circuits, statevector, 1024 shots; layers by qubits "
        + ", ".join(f"{n}: {layers}" for n, layers in g["layers"].items()),
        "shots": f"shots, a {g['plan']['shots_qubits']}-qubit random circuit of 10 layers",
    }
    for name, rows in g["series"].items():
        x = "shots" if name == "shots" else "qubits"
        lines += [f"{titles[name]}:", ""]
        lines += [f"| {x} | raw Aer ms | raw CPU ms | raw parser | end to end ms | ratio | tries |"]
        lines += ["|---|---|---|---|---|---|---|"]
        lines += [
            f"| {r['x']} | {r['raw_ms']} | {r['raw_cpu_ms']} | {r.get('raw_parser', '?')} | "
            f"{r['e2e_ms']} | {r['ratio']:.2f} | {r['repeats']} |"
            for r in rows
        ]
        lines.append("")
    b = g["batch"]
    lines += [
        f"One `POST /batches` of {b['tasks']} Bell (automatic method, 1024 shots), end to "
        f"end: {b['e2e_seconds']} s = {b['e2e_tasks_per_second']} tasks/s; raw Aer, the "
        f"same circuits pre-parsed in one call ({b.get('raw_way', '?')}, the fastest of "
        f"four ways): {b['raw_seconds']} s = "
        f"{b['raw_tasks_per_second']} tasks/s ({b['raw_cpu_seconds']} s CPU); ratio "
        f"{b['ratio']:.2f}. Raw runs first in a warm process of its own, then the system; "
        f"medians of the tries. This section took {g['seconds']:.0f} s. Other load "
        f"(cores): {g['foreign_cpu_cores']['raw']:.2f} during raw Aer, "
        f"{g['foreign_cpu_cores']['system']:.2f} during the system's turn; a ratio measured "
        "while the other side's turn was busier is not worth much.",
    ]
    if g.get("skipped"):
        lines += [
            "",
            f"Left out (raw Aer predicted above {POINT_LIMIT_SECONDS:g} s from the "
            f"series' previous point): {', '.join(g['skipped'])}.",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.growth", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, help="write the JSON here too")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    plan = GrowthPlan.quick() if args.quick else GrowthPlan()
    result = bench_growth(plan, lambda m: print(m, flush=True))
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
