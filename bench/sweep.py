"""The sweep benchmark (issue 11): one task that sweeps 1000 parameter points, against
raw Aer running the same sweep, and against the same 1000 points sent as plain tasks.

The workload is a hardware-efficient ansatz: ``qubits`` qubits, ``layers`` layers of
one RY per qubit then a CX chain, measured (4 x 3 = 12 parameters ``t0``..``t11``),
and ``points`` random angle vectors (seeded), ``shots`` shots each. Three ways to get
the counts of every point, measured in the same run, round robin, ``repeat`` times each
(the median is reported, every try is in the JSON):

* **raw**: qiskit-aer in one fresh process of its own, no qmill code: ``qasm3.loads`` of
  the program, the pass manager of the strategy table's raw rows (built before timing),
  one ``AerSimulator.run`` with ``parameter_binds`` and ``get_counts`` of every point.
  Four variants: ``runtime_parameter_bind_enable=True`` (what the worker does) or Aer's
  default binding, each with ``max_parallel_threads=1`` (what one worker slot gets) or
  Aer's default (every core). The fastest is the reference.
* **sweep**: ``qmill up`` (the shipped configuration), one task with ``"parameters"``,
  sent and awaited with ``qmill.AsyncClient`` (``submit`` then ``result``, which
  long-polls): timed from before the POST until the parsed answer is in hand.
* **plain**: the same points as plain tasks, each program with its angles bound into
  the text (``assign_parameters`` then ``qasm3.dumps``, done before timing and not
  counted), sent as ``POST /batches`` of 250 tasks; as each batch's ids come back, a
  collector long-polls its last task, then reads the whole batch with one
  ``GET /batches/{id}``. That was the fastest way we found (a pilot on this machine:
  5.2-8.9 s, against 6.9-17 s when every task is long-polled, which also costs ~40% more
  CPU; docs/performance.md). Each task carries the seed Aer gave that point in the raw
  run, so all three ways must give the very same counts (``counts_agree``).

``python -m bench.sweep --raw SPEC --out FILE`` is the raw process (one per round).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench import e2e, strategies
from bench.measure import Settler, TreeMeter, cpu_seconds
from bench.system import System, SystemConfig, label_process

REPO = Path(__file__).resolve().parents[1]
Counts = dict[str, int]

# What a 201 of POST /batches must fit in (the server's default [limits] max_body_bytes
# is 1 MiB); a chunk is also never longer than the server's max_batch_tasks.
BATCH_BODY_BYTES = 900_000
PLAIN_COLLECTORS = 16
RAW_TIMEOUT_SECONDS = 600.0


@dataclass(frozen=True)
class SweepPlan:
    points: int = 1000
    shots: int = 1024
    qubits: int = 4
    layers: int = 3
    repeat: int = 3
    seed: int = 11
    plain_batch: int = 250  # tasks per POST /batches
    plain_collect: str = "batch"  # or "task": see `plain_tasks`
    config: str = "shipped"  # the system configuration (`bench.system.SystemConfig`)


@dataclass(frozen=True)
class RawVariant:
    name: str
    label: str
    runtime_bind: bool
    threads: int  # Aer's max_parallel_threads; 0 = Aer's default, every core

    def options(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.runtime_bind:
            out["runtime_parameter_bind_enable"] = True
        if self.threads:
            out["max_parallel_threads"] = self.threads
        return out


RAW_VARIANTS = (
    RawVariant(
        "raw-runtime-1t",
        "runtime_parameter_bind_enable=True, max_parallel_threads=1 (what a worker slot runs)",
        True,
        1,
    ),
    RawVariant("raw-default-1t", "Aer's default binding, max_parallel_threads=1", False, 1),
    RawVariant("raw-runtime", "runtime_parameter_bind_enable=True, Aer's default threads", True, 0),
    RawVariant("raw-default", "Aer's defaults (binding and threads)", False, 0),
)


# --- the workload ----------------------------------------------------------------------


@dataclass(frozen=True)
class SweepWorkload:
    program: str  # OpenQASM 3 with `input float[64] t0;` ...
    parameters: dict[str, list[float]]
    plain: list[str]  # one program per point, its angles bound into the text
    prepare_plain_seconds: float

    def binding(self, point: int) -> dict[str, float]:
        return {name: values[point] for name, values in self.parameters.items()}


def ansatz(qubits: int, layers: int) -> Any:
    """RY on every qubit then a CX chain, ``layers`` times, then measure every qubit.

    Parameters are ``t0``, ``t1``, ... (plain identifiers, which ``qasm3.dumps`` keeps).
    """
    from qiskit import QuantumCircuit
    from qiskit.circuit import Parameter

    qc = QuantumCircuit(qubits)
    k = 0
    for _ in range(layers):
        for q in range(qubits):
            qc.ry(Parameter(f"t{k}"), q)
            k += 1
        for q in range(qubits - 1):
            qc.cx(q, q + 1)
    qc.measure_all()
    return qc


def build(plan: SweepPlan) -> SweepWorkload:
    import numpy as np
    from qiskit import qasm3

    qc = ansatz(plan.qubits, plan.layers)
    names = sorted((p.name for p in qc.parameters), key=lambda n: int(n[1:]))
    rng = np.random.default_rng(plan.seed)
    values = rng.uniform(0.0, 2 * np.pi, size=(len(names), plan.points))
    parameters = {name: values[i].tolist() for i, name in enumerate(names)}
    by_name = {p.name: p for p in qc.parameters}
    started = time.perf_counter()
    plain = [
        qasm3.dumps(qc.assign_parameters({by_name[n]: parameters[n][j] for n in names}))
        for j in range(plan.points)
    ]
    return SweepWorkload(qasm3.dumps(qc), parameters, plain, time.perf_counter() - started)


def digest(counts: list[Counts]) -> str:
    return strategies.counts_digest(counts)


# --- raw Aer: one fresh process per round ----------------------------------------------


def raw_run(
    program: str, parameters: dict[str, list[float]], shots: int, seed: int, v: RawVariant
) -> tuple[list[Counts], list[int]]:
    """Parse, lower, one Aer call for the whole sweep, the counts of every point; and the
    seed Aer gave each point."""
    from qiskit import qasm3

    backend, pm = strategies.raw_backend()
    lowered = pm.run(qasm3.loads(program))
    by_name = {p.name: p for p in lowered.parameters}
    binds = [{by_name[name]: values for name, values in parameters.items()}]
    result = backend.run(
        lowered, shots=shots, seed_simulator=seed, parameter_binds=binds, **v.options()
    ).result()
    counts = [
        {str(k): int(c) for k, c in result.get_counts(j).items()}
        for j in range(len(result.results))
    ]
    return counts, [int(r.seed_simulator) for r in result.results]


def raw_main(spec_file: Path, out: Path) -> None:
    spec = json.loads(spec_file.read_text())
    program, parameters = spec["program"], spec["parameters"]
    shots, seed = int(spec["shots"]), int(spec["seed"])
    variants = {v.name: v for v in RAW_VARIANTS}
    warm = {name: values[:4] for name, values in parameters.items()}
    strategies.raw_warm_up()
    for name in spec["order"]:
        raw_run(program, warm, shots, seed, variants[name])  # OpenMP's pool, Aer's caches
    rows: dict[str, Any] = {}
    seeds: list[int] = []
    for name in spec["order"]:
        meter = TreeMeter(os.getpid(), interval=0.2)
        meter.start()
        started = time.perf_counter()
        counts, seeds = raw_run(program, parameters, shots, seed, variants[name])
        wall = time.perf_counter() - started
        usage = meter.stop().to_dict()
        rows[name] = {
            "wall_seconds": round(wall, 4),
            "cpu_seconds": usage["cpu_seconds"],
            "foreign_cpu_cores": usage["foreign_cpu_cores"],
            "wrong_results": sum(1 for c in counts if sum(c.values()) != shots),
            "counts_digest": digest(counts),
        }
    out.write_text(json.dumps({"variants": rows, "seeds": seeds}))


def raw_round(
    work: SweepWorkload, plan: SweepPlan, order: list[str], tmp: Path, settler: Settler | None
) -> dict[str, Any]:
    """One round of every raw variant, in a fresh interpreter; errors become a field."""
    settled = settler.wait() if settler is not None else None
    spec = tmp / "raw-spec.json"
    out = tmp / "raw-out.json"
    out.unlink(missing_ok=True)
    spec.write_text(
        json.dumps(
            {
                "program": work.program,
                "parameters": work.parameters,
                "shots": plan.shots,
                "seed": plan.seed,
                "order": order,
            }
        )
    )
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    argv = [sys.executable, "-m", "bench.sweep", "--raw", str(spec), "--out", str(out)]
    try:
        proc = subprocess.run(
            argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=RAW_TIMEOUT_SECONDS
        )
    except subprocess.TimeoutExpired:
        return {"error": f"raw Aer timed out after {RAW_TIMEOUT_SECONDS:.0f} s", "settle": settled}
    if proc.returncode != 0 or not out.is_file():
        return {"error": f"exit code {proc.returncode}: {proc.stderr[-800:]}", "settle": settled}
    result: dict[str, Any] = json.loads(out.read_text())
    result["settle"] = settled
    return result


# --- the system: one sweep task, or one task per point ---------------------------------


async def measured(
    system: System, run: Callable[[], Awaitable[dict[str, Any]]], settler: Settler | None
) -> dict[str, Any]:
    assert system.proc is not None
    settled = await asyncio.to_thread(settler.wait) if settler is not None else None
    me = psutil.Process()
    meter = TreeMeter(system.proc.pid, interval=0.25, label=label_process)
    meter.start()
    me_cpu = cpu_seconds(me)
    started = time.perf_counter()
    row = await run()
    wall = time.perf_counter() - started
    loadgen = cpu_seconds(me) - me_cpu
    usage = meter.stop()
    foreign = max(0.0, usage.machine_busy_seconds - usage.cpu_seconds - loadgen)
    row.update(
        wall_seconds=round(wall, 4),
        system_cpu_seconds=round(usage.cpu_seconds, 3),
        system_cpu_seconds_by_process={k: round(v, 3) for k, v in usage.cpu_by_label.items()},
        load_generator_cpu_seconds=round(loadgen, 3),
        foreign_cpu_cores=round(foreign / wall, 3) if wall > 0 else None,
        settle=settled,
    )
    return row


def _seconds(a: Any, b: Any) -> float | None:
    """Seconds from timestamp ``a`` to ``b`` (datetimes or ISO strings), if both exist."""
    if a is None or b is None:
        return None
    when = [x if isinstance(x, datetime) else datetime.fromisoformat(str(x)) for x in (a, b)]
    return round((when[1] - when[0]).total_seconds(), 4)


async def one_sweep(qm: Any, work: SweepWorkload, plan: SweepPlan) -> dict[str, Any]:
    """One task for the whole sweep: submit, long-poll, parse (``qmill.AsyncClient``)."""
    sent = datetime.now(UTC)
    started = time.perf_counter()
    task_id = await qm.submit(work.program, plan.shots, parameters=work.parameters, seed=plan.seed)
    posted = time.perf_counter() - started
    task = await qm.result(task_id)
    received = datetime.now(UTC)
    results = task.results or []
    counts = [dict(r["counts"]) for r in results]
    return {
        "task_id": task_id,
        "completed": len(counts),
        "post_seconds": round(posted, 4),
        # Where the time went, by the client's and the server's clocks (one machine).
        "phases_seconds": {
            "submit (POST until recorded)": _seconds(sent, task.created_at),
            "queue": _seconds(task.created_at, task.started_at),
            "worker execution (parse, lower, Aer, split)": task.execution_seconds,
            "child to Redis (pipe, store)": None
            if task.execution_seconds is None
            else round(
                (_seconds(task.started_at, task.completed_at) or 0.0) - task.execution_seconds, 4
            ),
            "answer to the client (long-poll, GET, parse)": _seconds(task.completed_at, received),
        },
        "execution_seconds": task.execution_seconds,
        "wrong_results": sum(1 for c in counts if sum(c.values()) != plan.shots),
        "counts_digest": digest(counts),
    }


def _chunks(bodies: list[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    """Batches of at most ``size`` tasks and `BATCH_BODY_BYTES` of JSON each."""
    out: list[list[dict[str, Any]]] = [[]]
    used = 0
    for body in bodies:
        n = len(json.dumps(body)) + 2
        if out[-1] and (len(out[-1]) >= size or used + n > BATCH_BODY_BYTES):
            out.append([])
            used = 0
        out[-1].append(body)
        used += n
    return out


async def plain_tasks(
    http: httpx.AsyncClient,
    url: str,
    work: SweepWorkload,
    plan: SweepPlan,
    seeds: list[int] | None,
) -> dict[str, Any]:
    """One task per point: POST /batches in chunks; as each chunk's ids come back,
    collectors wait for its tasks: ``collect="batch"`` long-polls the chunk's last task,
    then reads the whole chunk with one ``GET /batches/{id}`` (and long-polls any task
    not finished yet); ``collect="task"`` long-polls every task."""
    bodies = [
        {"quantum_circuit": q, "shots": plan.shots}
        | ({"seed": seeds[j]} if seeds is not None else {})
        for j, q in enumerate(work.plain)
    ]
    chunks: asyncio.Queue[tuple[int, str, list[str]] | None] = asyncio.Queue()
    counts: list[Counts | None] = [None] * len(bodies)
    errors: list[str] = []
    requests = {"posts": 0, "gets": 0}
    post_seconds = 0.0

    async def submit() -> None:
        nonlocal post_seconds
        first = 0
        try:
            for chunk in _chunks(bodies, plan.plain_batch):
                started = time.perf_counter()
                r = await http.post(url + "/batches", json={"tasks": chunk})
                post_seconds += time.perf_counter() - started
                requests["posts"] += 1
                if r.status_code != 201:
                    raise RuntimeError(f"POST /batches: {r.status_code} {r.text[:200]}")
                answer = r.json()
                task_ids = [str(t) for t in answer["task_ids"]]
                if plan.plain_collect == "batch":
                    chunks.put_nowait((first, str(answer["batch_id"]), task_ids))
                else:
                    for k, task_id in enumerate(task_ids):
                        chunks.put_nowait((first + k, "", [task_id]))
                first += len(task_ids)
        finally:
            for _ in range(PLAIN_COLLECTORS):
                chunks.put_nowait(None)

    async def wait(task_id: str) -> dict[str, Any]:
        while True:
            r = await http.get(
                f"{url}/tasks/{task_id}", params={"wait": str(e2e.LONG_POLL_SECONDS)}
            )
            requests["gets"] += 1
            body: dict[str, Any] = r.json()
            if r.status_code != 200 or body.get("status") in e2e.TERMINAL:
                return body

    def record(index: int, body: dict[str, Any]) -> None:
        if body.get("status") == "completed":
            counts[index] = dict(body["result"])
        elif len(errors) < 5:
            errors.append(f"{body.get('task_id')}: {body.get('status')} {body.get('error')}")

    async def collect() -> None:
        while (item := await chunks.get()) is not None:
            first, batch_id, task_ids = item
            if not batch_id:
                record(first, await wait(task_ids[0]))
                continue
            await wait(task_ids[-1])  # tasks run in order, give or take a slot
            r = await http.get(f"{url}/batches/{batch_id}")
            requests["gets"] += 1
            views = {str(v["task_id"]): v for v in r.json()["tasks"]}
            for k, task_id in enumerate(task_ids):
                view = views.get(task_id, {"task_id": task_id, "status": "missing"})
                record(first + k, view if view["status"] in e2e.TERMINAL else await wait(task_id))

    results = await asyncio.gather(
        submit(), *(collect() for _ in range(PLAIN_COLLECTORS)), return_exceptions=True
    )
    errors += [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
    done = [c for c in counts if c is not None]
    return {
        "completed": len(done),
        "errors": errors,
        "post_seconds": round(post_seconds, 4),
        "requests": requests,
        "wrong_results": sum(1 for c in done if sum(c.values()) != plan.shots),
        "counts_digest": digest(done) if len(done) == len(counts) else None,
    }


async def _warm(qm: Any, http: httpx.AsyncClient, url: str, work: SweepWorkload) -> None:
    """The sweep path once (a parametrised program's first parse and lowering) and a few
    plain programs, before anything is timed."""
    small = {name: values[:4] for name, values in work.parameters.items()}
    await qm.result(await qm.submit(work.program, 64, parameters=small))
    few = SweepWorkload(work.program, small, work.plain[:8], 0.0)
    await plain_tasks(http, url, few, SweepPlan(points=8, shots=64), None)


def _answer_size(http_body: bytes) -> dict[str, Any]:
    """Bytes of the sweep's answer and what parsing them costs this client."""
    from qmill.client_core import Task

    started = time.perf_counter()
    Task.from_json(json.loads(http_body))
    return {
        "answer_bytes": len(http_body),
        "client_parse_seconds": round(time.perf_counter() - started, 4),
    }


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 4) if values else None


def summarise(tries: list[dict[str, Any]], points: int) -> dict[str, Any]:
    good = [t for t in tries if not t.get("error") and not t.get("errors")]
    walls = [float(t["wall_seconds"]) for t in good]
    mid = median(walls)
    out: dict[str, Any] = {
        "tries": tries,
        "tries_wall_seconds": [t.get("wall_seconds") for t in tries],
        "median_seconds": mid,
        "evaluations_per_second": round(points / mid, 1) if mid else None,
    }
    for key in ("cpu_seconds", "system_cpu_seconds", "load_generator_cpu_seconds"):
        values = [float(t[key]) for t in good if t.get(key) is not None]
        if values:
            out[f"median_{key}"] = median(values)
    loads = [float(t["foreign_cpu_cores"]) for t in tries if t.get("foreign_cpu_cores") is not None]
    out["max_foreign_cpu_cores"] = max(loads) if loads else None
    return out


async def bench_sweep(
    plan: SweepPlan, log: Callable[[str], None], settler: Settler | None = None
) -> dict[str, Any]:
    """Start ``qmill up`` (``plan.config``), run every round, stop it; one result dict."""
    config = SystemConfig.parse(plan.config)
    out: dict[str, Any] = {"plan": asdict(plan), "config": config.name, "spec": config.spec()}
    work = build(plan)
    out["workload"] = {
        "description": f"{plan.points}-point sweep of a {plan.qubits}-qubit, {plan.layers}-layer "
        f"hardware-efficient ansatz ({len(work.parameters)} parameters), {plan.shots} shots",
        "parameters": len(work.parameters),
        "program_bytes": len(work.program),
        "plain_program_bytes": sum(len(p) for p in work.plain),
        "plain_prepare_seconds": round(work.prepare_plain_seconds, 3),
    }
    log(f"sweep: {out['workload']['description']}, {plan.repeat} rounds")
    system = System(config)
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    timeout = httpx.Timeout(e2e.LONG_POLL_SECONDS + 30.0, connect=10.0)
    raw_tries: dict[str, list[dict[str, Any]]] = {v.name: [] for v in RAW_VARIANTS}
    sweep_tries: list[dict[str, Any]] = []
    plain_tries: list[dict[str, Any]] = []
    seeds: list[int] | None = None
    from qmill import AsyncClient

    with tempfile.TemporaryDirectory(prefix="qmill-bench-sweep-") as tmp:
        async with httpx.AsyncClient(limits=limits, timeout=timeout) as http:
            try:
                await system.start(lambda slots: e2e.warm(system.url, slots))
                out["settings"] = system.settings
                async with AsyncClient(system.url, timeout=timeout.read or 60.0) as qm:
                    await _warm(qm, http, system.url, work)
                    for r in range(plan.repeat):
                        # Rotate the raw variants too: a process's first Aer call pays
                        # for more than the later ones, even after the warm-up.
                        names = [v.name for v in RAW_VARIANTS]
                        order = names[r % len(names) :] + names[: r % len(names)]
                        raw = await asyncio.to_thread(
                            raw_round, work, plan, order, Path(tmp), settler
                        )
                        if "error" in raw:
                            log(f"  raw [{r + 1}/{plan.repeat}] ERROR {raw['error']}")
                        for name, row in raw.get("variants", {}).items():
                            raw_tries[name].append(row | {"settle": raw.get("settle")})
                        seeds = seeds or raw.get("seeds")
                        sweep = await measured(system, lambda: one_sweep(qm, work, plan), settler)
                        sweep_tries.append(sweep)
                        plain = await measured(
                            system,
                            functools.partial(plain_tasks, http, system.url, work, plan, seeds),
                            settler,
                        )
                        plain_tries.append(plain)
                        _log_round(log, r, plan.repeat, raw, sweep, plain)
                    answer = await http.get(f"{system.url}/tasks/{sweep_tries[-1]['task_id']}")
                    out["answer"] = _answer_size(answer.content)
            except Exception as exc:  # report, stop the system
                out["error"] = f"{type(exc).__name__}: {exc}"
                out["log_tail"] = system.log()
                log(f"  sweep FAILED: {out['error']}")
            finally:
                system.stop()
    out["leftover_processes"] = system.leftover
    out["raw"] = {
        v.name: {
            "label": v.label,
            "options": v.options(),
            **summarise(raw_tries[v.name], plan.points),
        }
        for v in RAW_VARIANTS
    }
    fastest = [(s["median_seconds"], n) for n, s in out["raw"].items() if s["median_seconds"]]
    out["reference"] = min(fastest)[1] if fastest else None
    out["sweep"] = summarise(sweep_tries, plan.points)
    out["plain"] = summarise(plain_tries, plan.points)
    # Plain tasks give the raw run's counts only with the seeds it reported.
    compared = [*raw_tries.values(), sweep_tries] + ([plain_tries] if seeds else [])
    digests = {
        t.get("counts_digest")
        for part in compared
        for t in part
        if not t.get("error") and not t.get("errors")
    }
    out["counts_agree"] = len(digests) == 1 if digests else None
    _ratios(out)
    return out


def _ratios(out: dict[str, Any]) -> None:
    """Throughput of each way over the raw reference's, and the sweep's speed-up."""
    ref = out["raw"].get(out["reference"] or "", {}).get("median_seconds")
    for part in (*out["raw"].values(), out["sweep"], out["plain"]):
        mid = part.get("median_seconds")
        part["vs_reference"] = round(ref / mid, 3) if ref and mid else None
    sweep, plain = out["sweep"].get("median_seconds"), out["plain"].get("median_seconds")
    out["sweep_speedup_over_plain"] = round(plain / sweep, 2) if sweep and plain else None


def _log_round(
    log: Callable[[str], None],
    r: int,
    repeat: int,
    raw: dict[str, Any],
    sweep: dict[str, Any],
    plain: dict[str, Any],
) -> None:
    raws = ", ".join(f"{n} {v['wall_seconds']:.2f} s" for n, v in raw.get("variants", {}).items())
    log(
        f"  [{r + 1}/{repeat}] {raws}; sweep {sweep['wall_seconds']:.2f} s; plain "
        f"{plain['wall_seconds']:.2f} s ({plain['completed']} done, "
        f"{len(plain['errors'])} errors); other load {sweep['foreign_cpu_cores']:.2f} / "
        f"{plain['foreign_cpu_cores']:.2f} cores"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="the raw Aer side of the sweep benchmark")
    parser.add_argument("--raw", type=Path, required=True, help="spec JSON")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        raw_main(args.raw, args.out)


if __name__ == "__main__":
    main()
