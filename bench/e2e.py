"""End-to-end workloads against the real system, started exactly as ``make run`` starts it
(`bench.system`).

The load generator is one asyncio process with the lean client of `bench.client` (one
keep-alive connection per logical client), behaving like the original system's clients:
``POST /tasks``, then ``GET /tasks/{id}`` until the task is terminal.

* ``bell32``: 1000 Bell tasks, 32 concurrent clients; each client submits one task,
  polls it (sleeping ``poll_interval_concurrent`` before every GET), and only then
  submits its next task. Throughput and submit-to-result latency. The interval is 10 ms
  by default, as in issue 15's reference run of the original system (it was 20 ms here
  before issue 15).
* ``poll1``: one client, 300 Bell tasks one after the other, polling every
  ``poll_interval_single`` (10 ms by default; the first GET comes one interval after the
  201). The latency resolution is therefore about one interval.
* ``longpoll1``: the same with ``GET /tasks/{id}?wait=30`` (repeated until terminal).
* ``heavy``: the 12 heavy circuits submitted at once, each then long-polled; wall time
  from the first POST to the last result.

Per workload we measure CPU and peak RSS of every process of the system (labelled:
gateway or api, each function, nats, redis, worker event loop, simulator children) and
of the load generator itself, the CPU the rest of the machine used meanwhile, and the
server-side ``queue_seconds``/``execution_seconds`` of the tasks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import psutil

from bench import workloads
from bench.client import Client, ClientError, Connection
from bench.measure import Settler, StallMonitor, TreeMeter, cpu_seconds, percentile
from bench.system import System, SystemConfig, label_process

T = TypeVar("T")


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run the load generator on uvloop when it is installed (it is in the lock, with
    uvicorn): its loop costs the client about half the CPU per request of asyncio's
    (measured with 32 clients against a local server: 28 vs 59 us)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def event_loop_name() -> str:
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


TERMINAL = frozenset({"completed", "failed", "cancelled"})
LONG_POLL_SECONDS = 30.0
# POST refusals that create nothing, and how they are retried (`submit_and_wait`).
RETRIED_STATUSES = frozenset({429, 503})
RETRY_PAUSE_SECONDS = 1.0
RETRY_FOR_SECONDS = 120.0
LOAD_GEN_TICK_SECONDS = 0.02
TASK_DEADLINE_SECONDS = 300.0


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
    retries: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(what[:200])


async def submit_and_wait(
    client: Client,
    conn: Connection,
    qasm: str,
    shots: int,
    *,
    poll_interval: float | None = None,
    counters: Counters | None = None,
) -> TaskOutcome:
    """POST one task and wait for it: poll every ``poll_interval`` s, or long-poll (None)."""
    counters = counters or Counters()
    started = time.perf_counter()
    created = await client.submit(conn, qasm, shots)
    counters.posts += 1
    # A refusal that created nothing (429 over a rate, 503 with every parse process busy)
    # is sent again after a pause, as `qmill.Client` does (it honours Retry-After); the
    # latency and the POST time include the waits, the retries are counted.
    while created.status in RETRIED_STATUSES and time.perf_counter() - started < RETRY_FOR_SECONDS:
        counters.retries += 1
        await asyncio.sleep(RETRY_PAUSE_SECONDS)
        created = await client.submit(conn, qasm, shots)
        counters.posts += 1
    posted = time.perf_counter() - started
    if created.status != 201:
        raise RuntimeError(f"POST /tasks: {created.status} {created.text[:200]}")
    task_id = created.json()["task_id"]
    path = f"/tasks/{task_id}" + (
        "" if poll_interval is not None else f"?wait={LONG_POLL_SECONDS:g}"
    )
    gets = 0
    deadline = started + TASK_DEADLINE_SECONDS
    while time.perf_counter() < deadline:
        if poll_interval is not None:
            await asyncio.sleep(poll_interval)
        response = await client.get(conn, path)
        gets += 1
        counters.gets += 1
        if response.status != 200:
            raise RuntimeError(f"GET /tasks/{task_id}: {response.status}")
        body: dict[str, Any] = response.json()
        if body["status"] in TERMINAL:
            return TaskOutcome(time.perf_counter() - started, body["status"], body, gets, posted)
    raise TimeoutError(f"task {task_id} not terminal after {TASK_DEADLINE_SECONDS} s")


async def run_clients(
    client: Client,
    circuits: list[workloads.Circuit],
    clients: int,
    poll_interval: float | None,
    counters: Counters,
) -> list[TaskOutcome]:
    """``clients`` closed-loop clients sharing one list of tasks, a connection each."""
    queue = list(reversed(circuits))
    outcomes: list[TaskOutcome] = []

    async def one_client() -> None:
        conn = client.connection()
        while queue:
            c = queue.pop()
            try:
                outcome = await submit_and_wait(
                    client, conn, c.qasm, c.shots, poll_interval=poll_interval, counters=counters
                )
            except (OSError, ClientError, RuntimeError, TimeoutError) as exc:
                counters.error(f"{type(exc).__name__}: {exc}")
                continue
            outcomes.append(outcome)
            if outcome.status != "completed":
                counters.error(f"task {outcome.status}: {outcome.body.get('error')}")

    await asyncio.gather(*(one_client() for _ in range(clients)))
    return outcomes


async def run_burst(
    client: Client, circuits: list[workloads.Circuit], counters: Counters
) -> list[TaskOutcome]:
    """Every task submitted at once, then long-polled (the heavy workload)."""
    return await run_clients(client, circuits, len(circuits), None, counters)


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
        "post_retries": counters.retries,
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
    poll_interval_concurrent: float = 0.01
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
    # 20 ms ticks: a 5 ms ticker woke the client's loop 200 times a second, a fifth of
    # its CPU at ~50 tasks/s; a stall longer than a tick is still measured to the ms.
    client_stall = StallMonitor(interval=LOAD_GEN_TICK_SECONDS)
    counters = Counters()
    meter.start()
    me_cpu = cpu_seconds(me)
    loop_cpu = time.thread_time()  # this coroutine runs on the load generator's loop thread
    client_stall.start()
    started = time.perf_counter()
    outcomes = await run(counters)
    wall = time.perf_counter() - started
    await client_stall.stop()
    loop_cpu = time.thread_time() - loop_cpu
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
        # The combined topology's one process: front door and the three functions.
        "api (per request)": round(per.get("api", 0.0) * 1000 / max(1, requests), 3),
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
        # The client alone: its event-loop thread (requests, parsing, the stall ticker),
        # without the meter's sampling thread that the whole process also carries.
        "client_cpu_ms_per_task": round(loop_cpu * 1000 / max(1, len(outcomes)), 3),
        "event_loop": event_loop_name(),
        **client_stall.to_dict(),
    }
    row["foreign_cpu_cores"] = round(foreign / wall, 3) if wall > 0 else None
    row["settle"] = settled
    return row


def _runs(
    client: Client, plan: E2EPlan, heavy: workloads.Workload
) -> dict[str, tuple[Callable[[Counters], Awaitable[list[TaskOutcome]]], int, dict[str, Any]]]:
    """Each workload: how to run it, its task count, what the report says about it."""
    small = workloads.small(max(plan.bell_tasks, plan.single_tasks)).circuits
    bell, single = small[: plan.bell_tasks], small[: plan.single_tasks]
    return {
        "bell32": (
            lambda c: run_clients(
                client, bell, plan.bell_clients, plan.poll_interval_concurrent, c
            ),
            plan.bell_tasks,
            {
                "clients": plan.bell_clients,
                "poll_interval_ms": plan.poll_interval_concurrent * 1000,
            },
        ),
        "poll1": (
            lambda c: run_clients(client, single, 1, plan.poll_interval_single, c),
            plan.single_tasks,
            {"clients": 1, "poll_interval_ms": plan.poll_interval_single * 1000},
        ),
        "longpoll1": (
            lambda c: run_clients(client, single, 1, None, c),
            plan.single_tasks,
            {"clients": 1, "long_poll_wait_seconds": LONG_POLL_SECONDS},
        ),
        "heavy": (
            lambda c: run_burst(client, heavy.circuits, c),
            len(heavy.circuits),
            {"clients": len(heavy.circuits), "long_poll_wait_seconds": LONG_POLL_SECONDS},
        ),
    }


async def warm(url: str, slots: int) -> None:
    """Every worker slot (imports, pass manager) and every function, before timing."""
    client = Client(url)
    try:
        await run_clients(
            client,
            [workloads.small(1).circuits[0]] * max(8, slots * 4),
            max(8, slots * 4),
            None,
            Counters(),
        )
    finally:
        client.close()


async def bench_config(
    config: SystemConfig,
    plan: E2EPlan,
    heavy: workloads.Workload,
    log: Callable[[str], None],
    settler: Settler | None = None,
) -> dict[str, Any]:
    """Start the system in ``config``, run its workloads, stop it; one result dict."""
    system = System(config)
    out: dict[str, Any] = {"config": config.name, "spec": config.spec(), "workloads": {}}
    try:
        await system.start(lambda slots: warm(system.url, slots))
        out["settings"] = system.settings
        out["start_seconds"] = round(system.start_seconds, 2)
        log(f"  [{config.name}] up in {system.start_seconds:.1f} s: {system.settings}")
        for name in config.workloads:
            # A fresh client per workload: no connection idles past a keep-alive timeout
            # while the settler waits between workloads.
            client = Client(system.url)
            try:
                run, tasks, extra = _runs(client, plan, heavy)[name]
                row = await measure_workload(system, name, run, tasks, extra, settler)
                row["load_generator"]["reconnects"] = client.reconnects
            finally:
                client.close()
            out["workloads"][name] = row
            log(
                f"  [{config.name}] {name}: {row['wall_seconds']:.2f} s, "
                f"{row['tasks_per_second']} tasks/s, p50 {row['latency_ms']['p50']} ms, "
                f"p99 {row['latency_ms']['p99']} ms, errors {row['errors']}, load-gen "
                f"{row['load_generator']['cpu_ms_per_task']} ms/task"
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
