"""The fault campaign's harness: a whole qmill system on its own servers, load, and a checker.

Each scenario starts a `Cluster` (its own nats-server and redis-server, the three
functions under functions-framework, the gateway and ``qmill-worker`` processes, each
started by `qmill.server.launcher` with the command `make run` uses, and no supervisor
to restart what a scenario kills), drives it with `run_load` over HTTP
while it injects faults into the real processes, and ends with `Checker.verify`,
which reads every accepted task back through ``GET /tasks/{id}`` and fails the
scenario unless

* lost = accepted - terminal = 0,
* every completed result is right for its circuit (each circuit's outcomes are
  known exactly, and differ from task to task, so a result written to the wrong task
  is caught too),
* no terminal state was ever overwritten (the checker snapshots each task the first
  time it sees it terminal, and counts the store's ``qmill:done:*`` publishes),
* and, at `Cluster.shutdown`, no process the scenario started is left running.

Why the cluster has its own servers: scenarios SIGKILL nats-server and redis-server,
and the session `servers` fixture is shared by every other test.

``FAULTS_SCALE=full`` (``make faults``) runs the same scenarios with larger counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from qmill.server import constants
from qmill.server.config import sentinel_addresses
from qmill.server.launcher import Launcher
from qmill.server.processes import Process, Worker
from qmill.server.store import RedisClient
from tests.conftest import REPO

FULL = os.environ.get("FAULTS_SCALE", "fast") == "full"
# Summary lines of the scenarios run in this session; conftest prints them as a table.
SUMMARIES: list[str] = []
TERMINAL = ("completed", "failed")
T = TypeVar("T")


def scaled(fast: T, full: T) -> T:
    """``fast`` in `make test`, ``full`` in `make faults`."""
    return full if FULL else fast


@contextlib.asynccontextmanager
async def redis_of(
    url: str, sentinels: str = "", master: str = "qmill", timeout: float | None = None
) -> AsyncIterator[aioredis.Redis]:
    """A Redis client for the harness: at ``url``, or through ``sentinels`` (the
    ``[redis]`` settings), as qmill's own clients connect, so it follows a failover."""
    client = RedisClient(
        url, socket_timeout=timeout, sentinels=sentinel_addresses(sentinels), master=master
    )
    try:
        yield client.redis
    finally:
        with contextlib.suppress(RedisError, OSError):
            await client.close()


# --- circuits whose outcomes are known exactly ----------------------------------------------
@dataclass(frozen=True)
class Circuit:
    """A program, its shots, and what a correct outcome is."""

    kind: str
    source: str
    shots: int
    # The only outcomes a correct result may contain; None for a task meant to fail.
    keys: frozenset[str] | None
    expect: str = "completed"
    # For an expected failure: a text the error must contain.
    reason: str | None = None

    def body(self) -> dict[str, Any]:
        return {"quantum_circuit": self.source, "shots": self.shots}

    def problem(self, counts: dict[str, int] | None) -> str | None:
        """Why ``counts`` is not a correct result for this circuit, or None."""
        if self.keys is None:
            return "a task meant to fail completed"
        if counts is None:
            return "completed without counts"
        if sum(counts.values()) != self.shots:
            return f"counts sum to {sum(counts.values())}, not {self.shots}"
        stray = set(counts) - self.keys
        if stray:
            return f"outcomes {sorted(stray)[:3]} impossible for {self.kind}"
        return None


BELL_QASM = (
    'OPENQASM 3.0; include "stdgates.inc"; qubit[2] q; bit[2] c; h q[0]; cx q[0],q[1]; '
    "c[0] = measure q[0]; c[1] = measure q[1];"
)


def bell(shots: int = 100) -> Circuit:
    return Circuit("bell", BELL_QASM, shots, frozenset({"00", "11"}))


def pattern(n: int, tag: int, rounds: int, shots: int = 100) -> Circuit:
    """``n`` qubits: a Bell pair on q[0], q[1] and a bit pattern (from ``tag``) on the rest.

    ``rounds`` layers of T, a CNOT ladder, the reversed ladder and T-dagger cancel
    out, so the outcome is exactly the two keys below; but they are not Clifford, so
    Aer runs a statevector simulation whose cost grows with ``rounds * 2**n``. A
    different tag per task makes a result stored on the wrong task visible.
    """
    assert n >= 3
    bits = {i: (tag * 2654435761 >> (i - 2)) & 1 for i in range(2, n)}
    lines = [
        "OPENQASM 3.0;",
        'include "stdgates.inc";',
        f"qubit[{n}] q;",
        f"bit[{n}] c;",
        "h q[0];",
        "cx q[0], q[1];",
    ]
    lines += [f"x q[{i}];" for i, bit in bits.items() if bit]
    for _ in range(rounds):
        lines += [f"t q[{i}];" for i in range(n)]
        lines += [f"cx q[{i}], q[{i + 1}];" for i in range(n - 1)]
        lines += [f"cx q[{i}], q[{i + 1}];" for i in reversed(range(n - 1))]
        lines += [f"tdg q[{i}];" for i in range(n)]
    lines.append("c = measure q;")
    # Counts keys print c[n-1] first.
    rest = "".join(str(bits[i]) for i in reversed(range(2, n)))
    keys = frozenset({rest + "00", rest + "11"})
    return Circuit(f"pattern{n}", "\n".join(lines), shots, keys)


def mixed(i: int) -> Circuit:
    """The i-th task of a mixed load: Bell pairs and 3- to 20-qubit statevector circuits."""
    if i % 2 == 0:
        return bell()
    n = 3 + (i * 7) % 18  # 3..20
    return pattern(n, tag=i, rounds=3)


def runaway(n: int = 22, rounds: int = 12) -> Circuit:
    """A simulation of many seconds (~6 s single-threaded at 22 qubits, 10 rounds here)."""
    slow = pattern(n, tag=0, rounds=rounds)
    return Circuit("runaway", slow.source, 10, None, expect="failed", reason="timeout")


# --- the system under test -------------------------------------------------------------------
# The launcher's processes: kill, pause (SIGSTOP), resume, start again; workers' JSON events.
WorkerProc = Worker

# Short limits so redelivery happens in seconds: the process executor marks a running
# task in progress every ack_wait/3, so a short ack_wait costs nothing to a live worker.
BASE_SETTINGS: dict[str, dict[str, Any]] = {
    "nats": {"ack_wait_seconds": 4.0},
    "worker": {
        "max_attempts": 3,
        "grace_period_seconds": 10.0,
        "max_concurrent_tasks": 2,
        "executor": "process",
    },
    "limits": {"max_execution_seconds": 60.0},
    "log": {"format": "json"},
    # One process per service, as deployments run them (a scenario may stop any one).
    "embedded": {"topology": "split"},
}


class Cluster(Launcher):
    """The whole system from the one launcher, one process per service, so a scenario can
    SIGKILL or freeze any of them (``cluster.pause(cluster.nats)``, ``cluster.kill(worker)``).

    Everything is stopped by `shutdown` (also called by the fixture's finally), which
    returns what, if anything, was left running.
    """

    def __init__(
        self, root: Path, scenario: str, config: dict[str, dict[str, Any]] | None = None
    ) -> None:
        """``config`` is merged over BASE_SETTINGS by section (a NATS cluster's url)."""
        merged = {
            key: {**value, **(config or {}).get(key, {})} for key, value in BASE_SETTINGS.items()
        }
        merged |= {key: value for key, value in (config or {}).items() if key not in merged}
        super().__init__(root, merged, mark=f"{scenario}-{uuid.uuid4().hex[:8]}", cwd=REPO)
        self.scenario = scenario

    async def start(self, workers: int = 2, **worker_env: str) -> None:  # type: ignore[override]
        """`Launcher.start` off the event loop the scenario runs in, then a ``/health``
        check; ``worker_env`` applies to every worker (they share one JetStream consumer,
        so they must agree on its settings)."""
        await asyncio.to_thread(super().start, workers, **worker_env)
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as client:
            assert (await client.get("/health")).status_code == 200

    async def wait_ready(self, worker: WorkerProc, timeout: float = 60) -> None:
        """Until the worker pulls (its simulation children are warm by then)."""
        await asyncio.to_thread(worker.wait_ready, timeout)

    # --- faults --------------------------------------------------------------------------
    def kill(self, worker: WorkerProc) -> None:
        """SIGKILL the worker process (its simulation children die with it: PDEATHSIG)."""
        worker.kill()

    def pause(self, process: Process, timeout: float = 10.0) -> None:
        """SIGSTOP ``process`` and return once every one of its threads has stopped.

        The signal stops the threads one after another, and a thread busy in the kernel
        (an fsync, on a loaded disk) only when that returns; meanwhile the others still
        run: a nats-server "paused" so has stored and acked a publish sent after the
        signal. Measured here on an idle nats-server: 8 pauses in 200 not yet complete
        when the signal was sent.
        """
        process.pause()
        deadline = time.monotonic() + timeout
        while not _stopped(process.pid):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{process.name} not stopped {timeout:g} s after SIGSTOP")
            time.sleep(0.001)

    def sim_children(self, worker: WorkerProc) -> list[psutil.Process]:
        """The worker's simulation children: forked by its fork server (its one
        ``qmill_worker.simproc`` child), so they are the server's children."""
        try:
            children = psutil.Process(worker.pid).children()
        except psutil.NoSuchProcess:
            return []
        found = []
        for child in children:
            with contextlib.suppress(psutil.Error):
                if "qmill_worker.simproc" in " ".join(child.cmdline()):
                    found.extend(child.children())
        return found

    async def holdings(self, task_ids: list[str] | None = None) -> dict[str, list[str]]:
        """Per worker id, the tasks Redis shows it running (``processing`` with its id).

        Of ``task_ids``, or of every task record when None: a worker may start a task
        before the client that submitted it has read its 201 (so before a checker
        counts it accepted), and a kill must see what the victim held all the same.
        """
        held: dict[str, list[str]] = defaultdict(list)
        redis = self.settings.redis
        async with redis_of(redis.url, redis.sentinels, redis.sentinel_master) as client:
            if task_ids is None:
                prefix = constants.TASK_KEY_PREFIX
                task_ids = [
                    key.removeprefix(prefix) async for key in client.scan_iter(prefix + "*")
                ]
            async with client.pipeline(transaction=False) as pipe:
                for task_id in task_ids:
                    pipe.hmget(constants.task_key(task_id), ["status", "worker_id"])
                rows = await pipe.execute()
        for task_id, (status, worker_id) in zip(task_ids, rows, strict=True):
            if status == "processing" and worker_id:
                held[worker_id].append(task_id)
        return held

    def events(self) -> list[dict[str, Any]]:
        """Every worker's log events, each with its ``worker_id``."""
        return [{"worker_id": w.worker_id, **e} for w in self.workers for e in w.events()]

    # --- stop ----------------------------------------------------------------------------
    def shutdown(self) -> list[str]:
        """Stop everything (servers last); return what was still running after that.

        Politely, as `Launcher.stop` does, but the workers, the gateway and the functions
        at once (~1 s: a worker waits out its last fetch), while NATS and Redis are still
        up for the workers to settle what they hold; then `Launcher.stop` stops the
        servers and looks for leftovers. One process after another took ~4 s.
        """
        running = [p for p in [*self.workers, *self.services] if p.alive()]
        if running and not self._down:
            with ThreadPoolExecutor(len(running)) as pool:
                list(pool.map(lambda p: p.stop(), running))
        return self.stop()


def _stopped(pid: int) -> bool:
    """Whether every thread of ``pid`` is stopped (state T in /proc)."""
    task = Path(f"/proc/{pid}/task")
    for tid in os.listdir(task):
        with contextlib.suppress(FileNotFoundError):  # a thread that has just exited
            state = (task / tid / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if state not in ("T", "t"):
                return False
    return True


# --- load -----------------------------------------------------------------------------------
@dataclass
class Sample:
    """One POST /tasks as the client saw it."""

    started: float
    ended: float
    status: int  # 0 when no HTTP answer came (transport error or client timeout)
    retry_after: str | None
    task_id: str | None
    error: str | None = None
    replayed: bool = False

    @property
    def seconds(self) -> float:
        return self.ended - self.started


@dataclass
class LoadStats:
    samples: list[Sample] = field(default_factory=list)

    def codes(self, samples: list[Sample] | None = None) -> Counter[int]:
        return Counter(s.status for s in (self.samples if samples is None else samples))

    def between(self, start: float, end: float) -> list[Sample]:
        """Requests that started and ended inside [start, end]."""
        return [s for s in self.samples if s.started >= start and s.ended <= end]

    def server_errors(self) -> list[Sample]:
        """Answers that are never acceptable: 5xx other than 503, or no answer at all."""
        return [s for s in self.samples if s.status == 0 or (s.status >= 500 and s.status != 503)]

    def unavailable_without_retry_after(self) -> list[Sample]:
        return [s for s in self.samples if s.status == 503 and not s.retry_after]


async def post_task(
    client: httpx.AsyncClient,
    circuit: Circuit,
    checker: Checker,
    stats: LoadStats,
    headers: dict[str, str] | None = None,
    timeout: float = 15.0,
) -> Sample:
    """POST one task; a 201 is recorded as accepted before anything else happens."""
    started = time.monotonic()
    try:
        response = await client.post(
            "/tasks", json=circuit.body(), headers=headers, timeout=timeout
        )
    except httpx.HTTPError as exc:
        sample = Sample(started, time.monotonic(), 0, None, None, f"{type(exc).__name__}: {exc}")
        stats.samples.append(sample)
        return sample
    ended = time.monotonic()
    task_id = None
    if response.status_code == 201:
        task_id = str(response.json()["task_id"])
        checker.accept(task_id, circuit)
    sample = Sample(
        started,
        ended,
        response.status_code,
        response.headers.get("retry-after"),
        task_id,
        None if response.status_code < 500 else response.text[:200],
        response.headers.get("idempotent-replayed") == "true",
    )
    stats.samples.append(sample)
    return sample


async def run_load(
    client: httpx.AsyncClient,
    checker: Checker,
    make: Callable[[int], Circuit],
    *,
    clients: int,
    count: int | None = None,
    rate: float | None = None,
    duration: float | None = None,
    stop: asyncio.Event | None = None,
    stats: LoadStats | None = None,
    max_outstanding: int | None = None,
) -> LoadStats:
    """Submit from ``clients`` concurrent clients until ``count`` tasks were accepted,
    ``duration`` passed, or ``stop`` is set.

    With ``rate`` (requests per second, all clients together) each client paces itself
    to a steady schedule; without it, clients submit back to back. A refused request
    (503) is simply counted: the client goes on, as a real one would after Retry-After.

    With ``max_outstanding`` the clients hold back while that many accepted tasks are
    not yet terminal (as the checker last saw them; each client checks before it
    submits, so the count may pass it by up to ``clients``): the workers stay busy
    with a short queue, which a slow or shared machine does not turn into a backlog
    that takes longer to drain than the scenario took to run.
    """
    stats = stats if stats is not None else LoadStats()
    begin = time.monotonic()
    issued = 0
    accepted = 0

    def done() -> bool:
        return (
            (count is not None and accepted >= count)
            or (duration is not None and time.monotonic() - begin >= duration)
            or (stop is not None and stop.is_set())
        )

    def saturated() -> bool:
        if max_outstanding is None:
            return False
        return len(checker.accepted) - len(checker.first_terminal) >= max_outstanding

    async def one_client(index: int) -> None:
        nonlocal issued, accepted
        period = clients / rate if rate else 0.0
        next_at = begin + index * period / clients if rate else begin
        while not done():
            if saturated():
                await asyncio.sleep(0.05)
                next_at = max(next_at, time.monotonic())  # no burst to catch up after
                continue
            if rate:
                delay = next_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                next_at += period
                if done():
                    return
            i = issued
            issued += 1
            sample = await post_task(client, make(i), checker, stats)
            if sample.status == 201:
                accepted += 1
            elif not rate and sample.status in (0, 503):
                await asyncio.sleep(0.05)  # back off a little, as Retry-After asks

    await asyncio.gather(*(one_client(i) for i in range(clients)))
    return stats


# --- the checker ----------------------------------------------------------------------------
_FIELDS = ("status", "result", "error", "completed_at", "attempts", "worker_id")


@dataclass
class Report:
    scenario: str
    accepted: int
    completed: int
    failed: int
    lost: list[str]
    wrong: list[str]
    overwritten: list[str]
    unexpected: list[str]
    views: dict[str, dict[str, Any]]
    wall: float
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def redelivered(self) -> int:
        """Tasks that were started more than once."""
        return sum(1 for v in self.views.values() if int(v.get("attempts") or 0) > 1)

    def line(self) -> str:
        parts = [
            f"scenario={self.scenario}",
            f"accepted={self.accepted}",
            f"completed={self.completed}",
            f"failed={self.failed}",
            f"lost={len(self.lost)}",
            f"redelivered={self.redelivered}",
            f"wall={self.wall:.1f}s",
        ]
        parts += [f"{k}={v}" for k, v in self.extra.items()]
        return "faults: " + " ".join(parts)

    def publish(self, **extra: object) -> str:
        """Add measurements, print the summary line and keep it for the session's table.

        ``load`` is the machine's 1-minute load average at the end: timings mean
        little without it on a shared 2-core machine.
        """
        self.extra.update(extra)
        self.extra["load"] = f"{os.getloadavg()[0]:.1f}"
        line = self.line()
        SUMMARIES.append(line)
        print(line)
        return line

    def assert_ok(self) -> None:
        assert not self.lost, f"lost {len(self.lost)} accepted tasks, e.g. {self.lost[:5]}"
        assert not self.wrong, f"wrong results: {self.wrong[:5]}"
        assert not self.overwritten, f"terminal states overwritten: {self.overwritten[:5]}"
        assert not self.unexpected, f"unexpected outcomes: {self.unexpected[:5]}"
        assert self.extra.get("leaked", 0) == 0, f"processes left running: {self.extra['leaked']}"


class Checker:
    """Records every 201 and checks, at the end, that each of those tasks ended right.

    While the scenario runs it also watches Redis: it snapshots each task the first time
    it is terminal and counts the terminal transitions the store publishes, so a state
    that changes after it was final (overwritten, or lost and redone) is caught even if
    it ends up looking fine.
    """

    def __init__(
        self, scenario: str, redis_url: str, *, sentinels: str = "", master: str = "qmill"
    ) -> None:
        """``sentinels``: watch Redis through them (``[redis] sentinels``) across failovers."""
        self.scenario = scenario
        self.redis_url = redis_url
        self.sentinels = sentinels
        self.master = master
        self.accepted: dict[str, Circuit] = {}
        self.first_terminal: dict[str, dict[str, str]] = {}
        self.changed: dict[str, str] = {}
        self.publishes: Counter[str] = Counter()
        self._tasks: list[asyncio.Task[None]] = []
        self._began = time.monotonic()

    def accept(self, task_id: str, circuit: Circuit) -> None:
        known = self.accepted.get(task_id)
        assert known is None or known.body() == circuit.body(), "one task id for two bodies"
        self.accepted[task_id] = circuit

    async def __aenter__(self) -> Checker:
        self._began = time.monotonic()
        self._tasks = [
            asyncio.create_task(self._watch_states()),
            asyncio.create_task(self._count_publishes()),
        ]
        await asyncio.sleep(0.2)  # let the subscription start
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stop_watching()

    async def _stop_watching(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _watch_states(self) -> None:
        async with redis_of(self.redis_url, self.sentinels, self.master, timeout=2) as client:
            while True:
                with contextlib.suppress(RedisError, OSError):
                    await self._snapshot(client)
                await asyncio.sleep(0.3)

    async def _snapshot(self, client: aioredis.Redis) -> None:
        ids = list(self.accepted)
        async with client.pipeline(transaction=False) as pipe:
            for task_id in ids:
                pipe.hmget(constants.task_key(task_id), _FIELDS)
            rows = await pipe.execute()
        for task_id, row in zip(ids, rows, strict=True):
            self._observe(task_id, dict(zip(_FIELDS, row, strict=True)))

    def _observe(self, task_id: str, state: dict[str, Any]) -> None:
        first = self.first_terminal.get(task_id)
        if first is None:
            if state.get("status") in TERMINAL:
                self.first_terminal[task_id] = {k: state[k] for k in _FIELDS if k != "attempts"}
            return
        now = {k: state.get(k) for k in first}
        if now != first and task_id not in self.changed:
            self.changed[task_id] = f"{first} became {now}"

    async def _count_publishes(self) -> None:
        """Count ``qmill:done:<id>`` messages; reconnects (and resubscribes) after outages."""
        while True:
            try:
                async with redis_of(self.redis_url, self.sentinels, self.master) as client:
                    pubsub = client.pubsub(ignore_subscribe_messages=True)
                    await pubsub.psubscribe(constants.TASK_DONE_CHANNEL_PREFIX + "*")
                    async for message in pubsub.listen():
                        if message.get("type") == "pmessage":
                            channel = str(message["channel"])
                            self.publishes[channel[len(constants.TASK_DONE_CHANNEL_PREFIX) :]] += 1
            except (RedisError, OSError):
                await asyncio.sleep(0.3)

    async def verify(self, client: httpx.AsyncClient, timeout: float = 120.0) -> Report:
        """Read every accepted task back through the API (long-polling until terminal or
        ``timeout``) and compare it with its circuit and with what was seen before."""
        deadline = time.monotonic() + timeout
        views: dict[str, dict[str, Any]] = {}
        gate = asyncio.Semaphore(16)

        async def read(task_id: str) -> None:
            async with gate:
                view: dict[str, Any] = {"status": "unknown"}
                missing = 0
                while time.monotonic() < deadline and missing < 5:
                    wait = max(1, min(20, int(deadline - time.monotonic())))
                    try:
                        response = await client.get(
                            f"/tasks/{task_id}", params={"wait": wait}, timeout=wait + 15
                        )
                    except httpx.HTTPError:
                        await asyncio.sleep(0.5)
                        continue
                    if response.status_code == 200:
                        view = response.json()
                        if view["status"] in TERMINAL:
                            break
                    else:
                        # 404 a few times over seconds: the record is gone, not late.
                        missing += response.status_code == 404
                        view = {"status": f"http {response.status_code}"}
                        await asyncio.sleep(0.5)
                views[task_id] = view

        await asyncio.gather(*(read(task_id) for task_id in self.accepted))
        # One last look at Redis for changes after the final reads.
        with contextlib.suppress(RedisError, OSError):
            async with redis_of(self.redis_url, self.sentinels, self.master, timeout=2) as r:
                await self._snapshot(r)
        await self._stop_watching()
        return self._judge(views)

    def _judge(self, views: dict[str, dict[str, Any]]) -> Report:
        lost, wrong, overwritten, unexpected = [], [], [], []
        completed = failed = 0
        for task_id, circuit in self.accepted.items():
            view = views[task_id]
            status = view["status"]
            if status not in TERMINAL:
                lost.append(f"{task_id} ({status})")
                continue
            if status == "completed":
                completed += 1
                problem = circuit.problem(view.get("result"))
                if problem:
                    wrong.append(f"{task_id}: {problem}")
            else:
                failed += 1
                if circuit.expect != "failed":
                    unexpected.append(f"{task_id} {circuit.kind} failed: {view.get('error')}")
                elif circuit.reason and circuit.reason not in str(view.get("error")):
                    unexpected.append(f"{task_id} failed with {view.get('error')!r}")
            first = self.first_terminal.get(task_id)
            if first is not None and first["status"] != status:
                overwritten.append(f"{task_id}: first {first['status']}, then {status}")
            if task_id in self.changed:
                overwritten.append(f"{task_id}: {self.changed[task_id]}")
            if self.publishes[task_id] > 1:
                overwritten.append(f"{task_id}: {self.publishes[task_id]} terminal transitions")
        return Report(
            scenario=self.scenario,
            accepted=len(self.accepted),
            completed=completed,
            failed=failed,
            lost=lost,
            wrong=wrong,
            overwritten=overwritten,
            unexpected=unexpected,
            views=views,
            wall=time.monotonic() - self._began,
        )


async def until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Wait until ``condition()`` holds (polled every 0.1 s); returns when.

    Scenarios wait for the event they need (a task done, a submit accepted again)
    rather than sleep for a time long enough on a slow day and idle on every other.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"not {what} after {timeout:g} s")
        await asyncio.sleep(0.1)
    return time.monotonic()


async def terminal(checker: Checker, ids: list[str], timeout: float) -> float:
    """Wait until the checker has seen every task in ``ids`` terminal; returns when."""
    try:
        return await until(
            lambda: all(task_id in checker.first_terminal for task_id in ids), timeout, "done"
        )
    except TimeoutError:
        left = sum(t not in checker.first_terminal for t in ids)
        raise TimeoutError(f"{left} tasks not done") from None


def completed(checker: Checker) -> int:
    """Accepted tasks the checker has seen completed so far."""
    return sum(1 for s in checker.first_terminal.values() if s["status"] == "completed")


def executions(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per task id, the workers' ``task started`` events in order."""
    started: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        if event.get("message") == "task started" and "task_id" in event:
            started[str(event["task_id"])].append(event)
    return started


def messages(events: list[dict[str, Any]], text: str) -> Iterator[dict[str, Any]]:
    return (e for e in events if e.get("message") == text)
