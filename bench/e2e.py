"""End-to-end workloads against the real system, started exactly as ``make run`` starts it.

``qmill up`` runs from the one launcher (`qmill.server.launcher`, which the tests and
the fault campaign use too) with free ports and a temporary data directory (so a bench
never touches a dev system on :8000), one system per configuration, and is always
stopped with SIGTERM; any process left over after that is killed and reported.

The load generator is one asyncio process with httpx, behaving like the original
system's clients: ``POST /tasks``, then ``GET /tasks/{id}`` until the task is terminal.

* ``bell32``: 1000 Bell tasks, 32 concurrent clients; each client submits one task,
  polls it (sleeping ``poll_interval_concurrent``, 20 ms by default, before every GET),
  and only then submits its next task. Throughput and submit-to-result latency.
* ``poll1``: one client, 300 Bell tasks one after the other, polling every
  ``poll_interval_single`` (10 ms by default; the first GET comes one interval after the
  201). The latency resolution is therefore about one interval.
* ``longpoll1``: the same with ``GET /tasks/{id}?wait=30`` (repeated until terminal).
* ``heavy``: the 12 heavy circuits submitted at once, each then long-polled; wall time
  from the first POST to the last result.

Per workload we measure CPU and peak RSS of every process of the system (labelled:
gateway, each function, nats, redis, worker event loop, simulator children) and of the
load generator itself, the CPU the rest of the machine used meanwhile, and the
server-side ``queue_seconds``/``execution_seconds`` of the tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench import workloads
from bench.measure import Settler, StallMonitor, TreeMeter, cpu_seconds, percentile
from qmill.server.launcher import Launcher

REPO = Path(__file__).resolve().parents[1]
TERMINAL = frozenset({"completed", "failed", "cancelled"})
E2E_WORKLOADS = ("bell32", "poll1", "longpoll1", "heavy")
LONG_POLL_SECONDS = 30.0
TASK_DEADLINE_SECONDS = 300.0

# Config keys a tuner may set, and the environment variable each one becomes.
CONFIG_KEYS = {
    "processes": "QMILL_WORKER__PROCESSES",
    "executor": "QMILL_WORKER__EXECUTOR",
    "concurrency": "QMILL_WORKER__MAX_CONCURRENT_TASKS",
    "aer_threads": "QMILL_WORKER__AER_THREADS",
    "log_level": "QMILL_LOG__LEVEL",
}


@dataclass(frozen=True)
class SystemConfig:
    """One configuration of the system to bench, e.g. ``workers2:processes=2,concurrency=1``.

    Only the keys given are set; the rest come from config.toml and qmill's defaults, so
    ``shipped`` (no keys) is exactly what ``make run`` starts. ``log_level`` defaults to
    WARNING so that log volume is not what we measure; set ``log_level=INFO`` to see
    what the shipped logging costs. ``workloads=bell32+heavy`` limits what runs.
    """

    name: str
    settings: dict[str, str] = field(default_factory=dict)
    workloads: tuple[str, ...] = E2E_WORKLOADS

    @classmethod
    def parse(cls, spec: str) -> SystemConfig:
        name, _, rest = spec.partition(":")
        settings: dict[str, str] = {}
        chosen: tuple[str, ...] = E2E_WORKLOADS
        for item in filter(None, rest.split(",")):
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"{spec!r}: expected key=value, got {item!r}")
            if key == "workloads":
                chosen = tuple(value.split("+"))
                unknown = set(chosen) - set(E2E_WORKLOADS)
                if unknown:
                    raise ValueError(f"{spec!r}: unknown workloads {sorted(unknown)}")
            elif key in CONFIG_KEYS:
                settings[key] = value
            else:
                raise ValueError(f"{spec!r}: unknown key {key!r}; known: {sorted(CONFIG_KEYS)}")
        return cls(name or "unnamed", settings, chosen)

    def env(self) -> dict[str, str]:
        out = {CONFIG_KEYS["log_level"]: "WARNING"}
        out.update({CONFIG_KEYS[k]: v for k, v in self.settings.items()})
        return out

    def spec(self) -> str:
        items = [f"{k}={v}" for k, v in self.settings.items()]
        if self.workloads != E2E_WORKLOADS:
            items.append("workloads=" + "+".join(self.workloads))
        return self.name + (":" + ",".join(items) if items else "")


# The shipped configuration, and one alternative that changes how the worker side uses
# the cores: two worker processes with one slot each instead of one with two slots (the
# worker's event loop, its NATS and Redis calls, then run on both cores). aer_threads is
# set because qmill's automatic choice (cores // slots per worker) does not know about
# the other worker process and would pick 2 threads each: 4 on 2 cores. The heavy
# workload is left out: both configurations simulate 2 circuits x 1 thread at a time.
DEFAULT_CONFIGS = (
    "shipped",
    "workers2:processes=2,concurrency=1,aer_threads=1,workloads=bell32+poll1+longpoll1",
)


def label_process(proc: psutil.Process) -> str:
    """Which part of the system a process is, from its command line."""
    try:
        cmd = proc.cmdline()
    except psutil.Error:
        return "?"
    joined = " ".join(cmd)
    if "nats-server" in joined:
        return "nats"
    if "redis-server" in joined:
        return "redis"
    if "functions-framework" in joined and "--target" in cmd:
        return "function:" + str(cmd[cmd.index("--target") + 1])
    if "qmill_worker.simproc" in joined:
        return "worker:simulator"
    if "qmill-worker" in joined:
        return "worker:event-loop"
    if "qmill-gateway" in joined:
        return "gateway"
    if "qmill" in joined and "up" in cmd:
        return "supervisor"
    return str(proc.name())


def effective_settings(env: dict[str, str]) -> dict[str, Any]:
    """What the system will run with, resolved by qmill itself (defaults < toml < env)."""
    code = (
        "import json\n"
        "from qmill.server.config import load_settings\n"
        "from qmill_worker.executors import aer_threads\n"
        "s = load_settings()\n"
        "print(json.dumps({'processes': s.worker.processes, 'executor': s.worker.executor,"
        " 'concurrency_per_worker': s.worker.concurrency,"
        " 'aer_threads': aer_threads(s.worker.aer_threads, s.worker.concurrency),"
        " 'aer_threads_alone': aer_threads(s.worker.aer_threads, 1),"
        " 'max_qubits': s.limits.max_qubits, 'log_level': s.log.level,"
        " 'worker_memory_budget_bytes': s.worker_memory_bytes}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


class System:
    """``qmill up`` from the one launcher (`qmill.server.launcher`): free ports outside
    the ephemeral range and a temporary data directory."""

    def __init__(self, config: SystemConfig) -> None:
        self.config = config
        self._tmp = tempfile.TemporaryDirectory(prefix="qmill-bench-")
        self.launcher = Launcher(Path(self._tmp.name), cwd=REPO)
        self.port = self.launcher.port
        self.url = self.launcher.url
        self.env = self.launcher.up_env(**config.env())
        self.log_path = Path(self._tmp.name) / "qmill-up.log"
        self.settings: dict[str, Any] = {}
        self.leftover: list[str] = []
        self.start_seconds = 0.0

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        supervisor = self.launcher.supervisor
        return supervisor.proc if supervisor is not None else None

    async def start(self, client: httpx.AsyncClient) -> None:
        self.settings = effective_settings(self.env)
        started = time.perf_counter()
        await asyncio.to_thread(self.launcher.up, **self.config.env())
        try:
            await asyncio.to_thread(self.launcher.wait_healthy, 120)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}: {self.log()}") from None
        # Warm every worker slot (imports, pass manager) and every function before timing.
        slots = int(self.settings["processes"]) * int(self.settings["concurrency_per_worker"])
        warm = [workloads.BELL] * max(8, slots * 4)
        await asyncio.gather(*(submit_and_wait(client, self.url, qasm, 64) for qasm in warm))
        self.start_seconds = time.perf_counter() - started

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-2000:]
        return ""

    def processes(self) -> list[psutil.Process]:
        if self.proc is None:
            return []
        with contextlib.suppress(psutil.Error):
            return list(psutil.Process(self.proc.pid).children(recursive=True))
        return []

    def stop(self) -> None:
        """SIGTERM to ``qmill up`` (it stops its children); kill and report whatever is left."""
        self.leftover = self.launcher.stop()
        self._tmp.cleanup()


# --- the load generator ---------------------------------------------------------------


@dataclass
class TaskOutcome:
    latency: float
    status: str
    body: dict[str, Any]
    gets: int
    post_latency: float


@dataclass
class Counters:
    posts: int = 0
    gets: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(what[:200])


async def submit_and_wait(
    client: httpx.AsyncClient,
    url: str,
    qasm: str,
    shots: int,
    *,
    poll_interval: float | None = None,
    counters: Counters | None = None,
) -> TaskOutcome:
    """POST one task and wait for it: poll every ``poll_interval`` s, or long-poll (None)."""
    counters = counters or Counters()
    started = time.perf_counter()
    created = await client.post(url + "/tasks", json={"quantum_circuit": qasm, "shots": shots})
    counters.posts += 1
    posted = time.perf_counter() - started
    if created.status_code != 201:
        raise RuntimeError(f"POST /tasks: {created.status_code} {created.text[:200]}")
    task_id = created.json()["task_id"]
    params = {} if poll_interval is not None else {"wait": str(LONG_POLL_SECONDS)}
    gets = 0
    deadline = started + TASK_DEADLINE_SECONDS
    while time.perf_counter() < deadline:
        if poll_interval is not None:
            await asyncio.sleep(poll_interval)
        response = await client.get(f"{url}/tasks/{task_id}", params=params)
        gets += 1
        counters.gets += 1
        if response.status_code != 200:
            raise RuntimeError(f"GET /tasks/{task_id}: {response.status_code}")
        body: dict[str, Any] = response.json()
        if body["status"] in TERMINAL:
            return TaskOutcome(time.perf_counter() - started, body["status"], body, gets, posted)
    raise TimeoutError(f"task {task_id} not terminal after {TASK_DEADLINE_SECONDS} s")


async def run_clients(
    client: httpx.AsyncClient,
    url: str,
    circuits: list[workloads.Circuit],
    clients: int,
    poll_interval: float | None,
    counters: Counters,
) -> list[TaskOutcome]:
    """``clients`` closed-loop clients sharing one list of tasks."""
    queue = list(reversed(circuits))
    outcomes: list[TaskOutcome] = []

    async def one_client() -> None:
        while queue:
            c = queue.pop()
            try:
                outcome = await submit_and_wait(
                    client, url, c.qasm, c.shots, poll_interval=poll_interval, counters=counters
                )
            except (httpx.HTTPError, RuntimeError, TimeoutError) as exc:
                counters.error(f"{type(exc).__name__}: {exc}")
                continue
            outcomes.append(outcome)
            if outcome.status != "completed":
                counters.error(f"task {outcome.status}: {outcome.body.get('error')}")

    await asyncio.gather(*(one_client() for _ in range(clients)))
    return outcomes


async def run_burst(
    client: httpx.AsyncClient, url: str, circuits: list[workloads.Circuit], counters: Counters
) -> list[TaskOutcome]:
    """Every task submitted at once, then long-polled (the heavy workload)."""
    return await run_clients(client, url, circuits, len(circuits), None, counters)


def _span(body: dict[str, Any], start: str, end: str) -> float | None:
    """Seconds between two of the task's ISO timestamps (server clock), if both exist."""
    try:
        a = datetime.fromisoformat(str(body[start]).replace("Z", "+00:00"))
        b = datetime.fromisoformat(str(body[end]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return None
    return (b - a).total_seconds()


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


def summarise(
    name: str,
    outcomes: list[TaskOutcome],
    wall: float,
    counters: Counters,
    tasks: int,
    extra: dict[str, Any],
) -> dict[str, Any]:
    latencies = [o.latency for o in outcomes]
    done = [o for o in outcomes if o.status == "completed"]
    exec_s = [float(o.body["execution_seconds"]) for o in done if o.body.get("execution_seconds")]
    queue_s = [float(o.body["queue_seconds"]) for o in done if o.body.get("queue_seconds")]
    server_total = [_span(o.body, "created_at", "completed_at") for o in done]
    totals = [t for t in server_total if t is not None]
    return {
        "workload": name,
        "tasks": tasks,
        "completed": len(done),
        "errors": counters.errors,
        "error_samples": counters.error_samples,
        "wall_seconds": round(wall, 3),
        "tasks_per_second": round(len(done) / wall, 2) if wall > 0 else None,
        "latency_ms": {
            "p50": _ms(percentile(latencies, 50)),
            "p90": _ms(percentile(latencies, 90)),
            "p99": _ms(percentile(latencies, 99)),
            "max": _ms(max(latencies) if latencies else None),
            "mean": _ms(sum(latencies) / len(latencies) if latencies else None),
        },
        "post_ms": {
            "p50": _ms(percentile([o.post_latency for o in outcomes], 50)),
            "p99": _ms(percentile([o.post_latency for o in outcomes], 99)),
        },
        "server_ms": {
            "created_to_completed_p50": _ms(percentile(totals, 50)),
            "created_to_completed_p99": _ms(percentile(totals, 99)),
            "execution_p50": _ms(percentile(exec_s, 50)),
            "execution_sum_seconds": round(sum(exec_s), 3),
            "queue_p50": _ms(percentile(queue_s, 50)),
            "queue_p99": _ms(percentile(queue_s, 99)),
        },
        "requests": {
            "posts": counters.posts,
            "gets": counters.gets,
            "gets_per_task": round(counters.gets / max(1, len(outcomes)), 2),
        },
        **extra,
    }


@dataclass(frozen=True)
class E2EPlan:
    bell_tasks: int = 1000
    bell_clients: int = 32
    single_tasks: int = 300
    poll_interval_concurrent: float = 0.02
    poll_interval_single: float = 0.01


async def measure_workload(
    system: System,
    name: str,
    run: Callable[[Counters], Awaitable[list[TaskOutcome]]],
    tasks: int,
    extra: dict[str, Any],
    settler: Settler | None = None,
) -> dict[str, Any]:
    assert system.proc is not None
    settled = await asyncio.to_thread(settler.wait) if settler is not None else None
    me = psutil.Process()
    meter = TreeMeter(system.proc.pid, interval=0.25, label=label_process)
    client_stall = StallMonitor(interval=0.005)
    counters = Counters()
    meter.start()
    me_cpu = cpu_seconds(me)
    client_stall.start()
    started = time.perf_counter()
    outcomes = await run(counters)
    wall = time.perf_counter() - started
    await client_stall.stop()
    loadgen_cpu = cpu_seconds(me) - me_cpu
    usage = meter.stop()
    row = summarise(name, outcomes, wall, counters, tasks, extra)
    sysd = usage.to_dict()
    foreign = max(0.0, usage.machine_busy_seconds - usage.cpu_seconds - loadgen_cpu)
    row["system"] = {
        "cpu_seconds": sysd["cpu_seconds"],
        "cpu_utilisation_cores": round(usage.cpu_seconds / wall, 3),
        "peak_rss_mib": sysd["peak_rss_mib"],
        "peak_rss_sampled_mib": sysd["peak_rss_sampled_mib"],
        "cpu_seconds_by_process": sysd["cpu_seconds_by_process"],
        "peak_rss_mib_by_process": sysd["peak_rss_mib_by_process"],
        "cpu_ms_per_task_by_process": {
            k: round(v * 1000 / max(1, len(outcomes)), 3) for k, v in usage.cpu_by_label.items()
        },
    }
    per = usage.cpu_by_label
    requests = counters.posts + counters.gets
    row["system"]["cpu_ms_per_request"] = {
        "gateway (per request)": round(per.get("gateway", 0.0) * 1000 / max(1, requests), 3),
        "function:submit (per POST)": round(
            per.get("function:submit", 0.0) * 1000 / max(1, counters.posts), 3
        ),
        "function:result (per GET)": round(
            per.get("function:result", 0.0) * 1000 / max(1, counters.gets), 3
        ),
    }
    row["load_generator"] = {
        "cpu_seconds": round(loadgen_cpu, 3),
        "cpu_ms_per_task": round(loadgen_cpu * 1000 / max(1, len(outcomes)), 3),
        **client_stall.to_dict(),
    }
    row["foreign_cpu_cores"] = round(foreign / wall, 3) if wall > 0 else None
    row["settle"] = settled
    return row


async def bench_config(
    config: SystemConfig,
    plan: E2EPlan,
    heavy: workloads.Workload,
    log: Callable[[str], None],
    settler: Settler | None = None,
) -> dict[str, Any]:
    """Start the system in ``config``, run its workloads, stop it; one result dict."""
    system = System(config)
    limits = httpx.Limits(max_connections=128, max_keepalive_connections=128)
    timeout = httpx.Timeout(LONG_POLL_SECONDS + 30.0, connect=10.0)
    out: dict[str, Any] = {"config": config.name, "spec": config.spec(), "workloads": {}}
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        try:
            await system.start(client)
            out["settings"] = system.settings
            out["start_seconds"] = round(system.start_seconds, 2)
            log(f"  [{config.name}] up in {system.start_seconds:.1f} s: {system.settings}")
            small = workloads.small(max(plan.bell_tasks, plan.single_tasks)).circuits
            runs: dict[str, tuple[Callable[[Counters], Awaitable[list[TaskOutcome]]], int]] = {
                "bell32": (
                    lambda c: run_clients(
                        client,
                        system.url,
                        small[: plan.bell_tasks],
                        plan.bell_clients,
                        plan.poll_interval_concurrent,
                        c,
                    ),
                    plan.bell_tasks,
                ),
                "poll1": (
                    lambda c: run_clients(
                        client,
                        system.url,
                        small[: plan.single_tasks],
                        1,
                        plan.poll_interval_single,
                        c,
                    ),
                    plan.single_tasks,
                ),
                "longpoll1": (
                    lambda c: run_clients(
                        client, system.url, small[: plan.single_tasks], 1, None, c
                    ),
                    plan.single_tasks,
                ),
                "heavy": (
                    lambda c: run_burst(client, system.url, heavy.circuits, c),
                    len(heavy.circuits),
                ),
            }
            extras = {
                "bell32": {
                    "clients": plan.bell_clients,
                    "poll_interval_ms": plan.poll_interval_concurrent * 1000,
                },
                "poll1": {"clients": 1, "poll_interval_ms": plan.poll_interval_single * 1000},
                "longpoll1": {"clients": 1, "long_poll_wait_seconds": LONG_POLL_SECONDS},
                "heavy": {"clients": len(heavy.circuits), "long_poll_wait_seconds": 30.0},
            }
            for name in config.workloads:
                run, tasks = runs[name]
                row = await measure_workload(system, name, run, tasks, extras[name], settler)
                out["workloads"][name] = row
                log(
                    f"  [{config.name}] {name}: {row['wall_seconds']:.2f} s, "
                    f"{row['tasks_per_second']} tasks/s, p50 {row['latency_ms']['p50']} ms, "
                    f"p99 {row['latency_ms']['p99']} ms, errors {row['errors']}"
                )
        except Exception as exc:  # report, stop the system, go on with the next config
            out["error"] = f"{type(exc).__name__}: {exc}"
            out["log_tail"] = system.log()
            log(f"  [{config.name}] FAILED: {out['error']}")
        finally:
            # Synchronously: this must also run when the run is being cancelled.
            system.stop()
    out["leftover_processes"] = system.leftover
    return out
