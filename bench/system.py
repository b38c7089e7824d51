"""The system under test: ``qmill up`` in one configuration, and which process is which.

``qmill up`` runs from the one launcher (`qmill.server.launcher`, which the tests and
the fault campaign use too) with free ports and a temporary data directory (so a bench
never touches a dev system on :8000), one system per configuration, and is always
stopped with SIGTERM; any process left over after that is killed and reported.
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
from pathlib import Path
from typing import Any

import psutil

from qmill.server.launcher import Launcher

REPO = Path(__file__).resolve().parents[1]
E2E_WORKLOADS = ("bell32", "poll1", "longpoll1", "heavy")

# Config keys a tuner may set, and the environment variable each one becomes.
CONFIG_KEYS = {
    "processes": "QMILL_WORKER__PROCESSES",
    "executor": "QMILL_WORKER__EXECUTOR",
    "concurrency": "QMILL_WORKER__MAX_CONCURRENT_TASKS",
    "aer_threads": "QMILL_WORKER__AER_THREADS",
    "log_level": "QMILL_LOG__LEVEL",
    # Issue 15's two switches, so one run shows the CPU per task before and after each:
    # `combined` serves the three functions from one process for `qmill up` (`split` is
    # the separate processes behind the gateway that deployments run), and the worker's
    # micro-batching (1 = off). A qmill without them refuses the keys (its settings
    # forbid unknown ones), and that configuration then reports an error row.
    "topology": "QMILL_EMBEDDED__TOPOLOGY",
    "batch_max_tasks": "QMILL_WORKER__BATCH_MAX_TASKS",
}

# Before and after each change of issue 15, in one run: both changes off, the combined
# topology alone, then what ships (both on). The heavy workload runs only on `shipped`:
# neither change touches a 20-layer 23-qubit simulation, and it is the longest row. The
# two-worker-process configuration of issue 7 (`workers2:processes=2,concurrency=1,
# aer_threads=1`) is still one --config away.
DEFAULT_CONFIGS = (
    "before:topology=split,batch_max_tasks=1,workloads=bell32+poll1+longpoll1",
    "combined:topology=combined,batch_max_tasks=1,workloads=bell32+poll1+longpoll1",
    "shipped",
)


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
    # The combined topology: one process serves the three functions' apps.
    if "qmill-api" in joined or "qmill.server.combined" in joined:
        return "api"
    if "qmill" in joined and "up" in cmd:
        return "supervisor"
    return str(proc.name())


SETTINGS_CODE = """
import json
from qmill.server.config import load_settings
from qmill_worker.executors import aer_threads
s = load_settings()
print(json.dumps({'processes': s.worker.processes, 'executor': s.worker.executor,
 'concurrency_per_worker': s.worker.concurrency,
 'aer_threads': aer_threads(s.worker.aer_threads, s.worker.concurrency),
 'aer_threads_alone': aer_threads(s.worker.aer_threads, 1),
 'max_qubits': s.limits.max_qubits, 'log_level': s.log.level,
 'topology': getattr(s.embedded, 'topology', None),
 'batch_max_tasks': getattr(s.worker, 'batch_max_tasks', None),
 'worker_memory_budget_bytes': s.worker_memory_bytes}))
"""


def effective_settings(env: dict[str, str]) -> dict[str, Any]:
    """What the system will run with, resolved by qmill itself (defaults < toml < env).

    A key this qmill does not know (``topology`` before its branch is merged) fails
    here, with qmill's own message, before anything is started."""
    out = subprocess.run(
        [sys.executable, "-c", SETTINGS_CODE], cwd=REPO, env=env, capture_output=True, text=True
    )
    if out.returncode != 0:
        lines = [line for line in out.stderr.strip().splitlines() if line.strip()]
        raise RuntimeError("qmill refuses these settings: " + (lines[-1] if lines else "?"))
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

    async def start(self, warm: Callable[[int], Awaitable[None]]) -> None:
        """Start, wait until healthy, then ``warm(slots)``: every worker slot (imports,
        pass manager) and every function once before anything is timed."""
        self.settings = effective_settings(self.env)
        started = time.perf_counter()
        await asyncio.to_thread(self.launcher.up, **self.config.env())
        try:
            await asyncio.to_thread(self.launcher.wait_healthy, 120)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}: {self.log()}") from None
        slots = int(self.settings["processes"]) * int(self.settings["concurrency_per_worker"])
        await warm(slots)
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
