"""What every benchmark row measures: CPU and peak RSS of a process tree, event-loop stalls.

Why these instruments:

* **CPU** is user+sys of every process in the tree, as a delta of per-process counters
  read at the start and at the end (plus periodic samples, so a process that exits in
  between is counted up to its last sample). Wall time alone cannot tell a strategy that
  uses both cores from one that burns them.
* **Peak RSS** comes from the kernel's per-process high-water mark (``VmHWM``), which we
  reset at the start of a measurement (``echo 5 > /proc/PID/clear_refs``), so it is exact
  for every process and not at the mercy of a sampler that a GIL-holding simulation can
  starve. We report the sum over the tree (an upper bound of the simultaneous peak,
  because each process may peak at a different moment) and the largest sampled sum.
* **Event-loop stall** is the worst lateness of a 5 ms ticker coroutine in the driving
  process. A thread that holds the GIL (Aer does while it simulates) freezes the loop,
  and this number shows for how long heartbeats, acks and shutdown would be starved.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

MIB = 1024 * 1024


def cpu_seconds(proc: psutil.Process) -> float:
    """user+sys of one process (all its threads), not of its children."""
    times = proc.cpu_times()
    return float(times.user + times.system)


def reset_peak_rss(pid: int) -> None:
    """Reset the kernel's RSS high-water mark of ``pid`` to its current RSS (Linux >= 4.0)."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def peak_rss_bytes(pid: int) -> int | None:
    """``VmHWM`` of ``pid``: its largest RSS since start or the last `reset_peak_rss`."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def tree(root: psutil.Process, include_root: bool = True) -> list[psutil.Process]:
    """The live processes of a tree (zombies excluded)."""
    try:
        procs = ([root] if include_root else []) + root.children(recursive=True)
    except psutil.Error:
        return []
    alive = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            if proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
    return alive


@dataclass
class _Seen:
    label: str
    cpu_start: float
    cpu_last: float
    hwm: int = 0


@dataclass
class TreeUsage:
    """What a `TreeMeter` measured between start and stop."""

    wall_seconds: float
    cpu_seconds: float
    peak_rss_hwm_sum_bytes: int
    peak_rss_sampled_bytes: int
    samples: int
    processes: int
    machine_busy_seconds: float = 0.0
    cpu_by_label: dict[str, float] = field(default_factory=dict)
    peak_rss_by_label: dict[str, int] = field(default_factory=dict)

    @property
    def foreign_cpu_seconds(self) -> float:
        """CPU the whole machine spent that this tree did not: other tenants, steal."""
        return max(0.0, self.machine_busy_seconds - self.cpu_seconds)

    def to_dict(self) -> dict[str, Any]:
        return {
            "wall_seconds": round(self.wall_seconds, 4),
            "cpu_seconds": round(self.cpu_seconds, 3),
            "cpu_utilisation_cores": round(self.cpu_seconds / self.wall_seconds, 3)
            if self.wall_seconds > 0
            else None,
            "peak_rss_mib": round(self.peak_rss_hwm_sum_bytes / MIB, 1),
            "peak_rss_sampled_mib": round(self.peak_rss_sampled_bytes / MIB, 1),
            "rss_samples": self.samples,
            "foreign_cpu_cores": round(self.foreign_cpu_seconds / self.wall_seconds, 3)
            if self.wall_seconds > 0
            else None,
            "processes": self.processes,
            "cpu_seconds_by_process": {k: round(v, 3) for k, v in self.cpu_by_label.items()},
            "peak_rss_mib_by_process": {
                k: round(v / MIB, 1) for k, v in self.peak_rss_by_label.items()
            },
        }


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy since boot (steal counts as busy:
    it is capacity we did not get). ``guest`` is already part of ``user`` on Linux."""
    t = psutil.cpu_times()
    busy = t.user + t.nice + t.system
    for extra in ("irq", "softirq", "steal"):
        busy += getattr(t, extra, 0.0)
    return float(busy)


class Settler:
    """Wait for a quiet machine before a measurement, within a time budget.

    Other tenants of a shared machine come and go; a row measured while they burn a core
    is worth little. Before each row we wait (at most ``per_call`` seconds, and at most
    ``budget`` seconds over the whole run, so the bench still ends in time) until the
    machine's busy CPU over a ``window`` is below ``threshold_cores``. The load found is
    recorded with the row either way.
    """

    def __init__(
        self,
        budget: float,
        per_call: float = 15.0,
        threshold_cores: float = 0.3,
        window: float = 0.5,
    ) -> None:
        self.budget = budget
        self.per_call = per_call
        self.threshold = threshold_cores
        self.window = window
        self.spent = 0.0

    def wait(self) -> dict[str, float]:
        started = time.perf_counter()
        while True:
            before = machine_busy_seconds()
            time.sleep(self.window)
            load = (machine_busy_seconds() - before) / self.window
            waited = time.perf_counter() - started
            if (
                load <= self.threshold
                or waited >= self.per_call
                or self.spent + waited >= self.budget
            ):
                self.spent += waited
                return {"waited_seconds": round(waited, 2), "load_cores_before": round(load, 2)}


def default_label(proc: psutil.Process) -> str:
    with contextlib.suppress(psutil.Error):
        return str(proc.name())
    return "?"


class TreeMeter:
    """CPU and peak RSS of a process tree between `start` and `stop`.

    ``label`` names a process for the per-process breakdown (several processes may share
    a label; their numbers add up). A sampler thread re-reads the tree every
    ``interval`` seconds to catch processes that start or exit during the measurement.
    """

    def __init__(
        self,
        root_pid: int,
        *,
        include_root: bool = True,
        interval: float = 0.2,
        label: Callable[[psutil.Process], str] = default_label,
    ) -> None:
        self._root = psutil.Process(root_pid)
        self._include_root = include_root
        self._interval = interval
        self._label = label
        self._seen: dict[tuple[int, float], _Seen] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._peak_sampled = 0
        self._samples = 0
        self._started = 0.0
        self._busy_start = 0.0

    def _key(self, proc: psutil.Process) -> tuple[int, float]:
        return (proc.pid, proc.create_time())

    def start(self) -> None:
        for proc in tree(self._root, self._include_root):
            with contextlib.suppress(psutil.Error):
                reset_peak_rss(proc.pid)
                cpu = cpu_seconds(proc)
                self._seen[self._key(proc)] = _Seen(self._label(proc), cpu, cpu)
        self._busy_start = machine_busy_seconds()
        self._started = time.perf_counter()
        self._thread = threading.Thread(target=self._sample_loop, name="bench-meter", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        total_rss = 0
        with self._lock:
            for proc in tree(self._root, self._include_root):
                try:
                    key = self._key(proc)
                    cpu = cpu_seconds(proc)
                    rss = int(proc.memory_info().rss)
                except psutil.Error:
                    continue
                seen = self._seen.get(key)
                if seen is None:  # started during the measurement: all its CPU counts
                    seen = self._seen[key] = _Seen(self._label(proc), 0.0, cpu)
                seen.cpu_last = cpu
                seen.hwm = max(seen.hwm, peak_rss_bytes(proc.pid) or rss)
                total_rss += rss
            self._peak_sampled = max(self._peak_sampled, total_rss)
            self._samples += 1

    def _sample_loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def stop(self) -> TreeUsage:
        wall = time.perf_counter() - self._started
        busy = machine_busy_seconds() - self._busy_start
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        cpu_by: dict[str, float] = {}
        rss_by: dict[str, int] = {}
        for seen in self._seen.values():
            cpu_by[seen.label] = cpu_by.get(seen.label, 0.0) + (seen.cpu_last - seen.cpu_start)
            rss_by[seen.label] = rss_by.get(seen.label, 0) + seen.hwm
        return TreeUsage(
            wall_seconds=wall,
            cpu_seconds=sum(cpu_by.values()),
            peak_rss_hwm_sum_bytes=sum(rss_by.values()),
            peak_rss_sampled_bytes=self._peak_sampled,
            samples=self._samples,
            processes=len(self._seen),
            machine_busy_seconds=busy,
            cpu_by_label=dict(sorted(cpu_by.items())),
            peak_rss_by_label=dict(sorted(rss_by.items())),
        )


class StallMonitor:
    """Worst lateness of a ticker coroutine: how long the event loop was frozen.

    The ticker sleeps ``interval`` seconds in a loop; a wake-up that comes late by more
    than that is a stall. ``worst`` is the largest lateness seen, ``over_50ms`` how many
    wake-ups were late by more than 50 ms.
    """

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.worst = 0.0
        self.over_50ms = 0
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(self.interval)
            now = time.perf_counter()
            late = now - last - self.interval
            self.ticks += 1
            if late > self.worst:
                self.worst = late
            if late > 0.05:
                self.over_50ms += 1
            last = now

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._tick(), name="bench-stall")

    async def stop(self) -> None:
        # One more turn of the loop so that a freeze that ends just now is recorded.
        await asyncio.sleep(self.interval * 2)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def to_dict(self) -> dict[str, Any]:
        return {
            "worst_stall_ms": round(self.worst * 1000, 2),
            "stalls_over_50ms": self.over_50ms,
            "ticks": self.ticks,
        }


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation; None for no values."""
    if not values:
        return None
    data = sorted(values)
    pos = (len(data) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (pos - low)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """The machine and software a run measured, so numbers are never quoted without it."""
    vm = psutil.virtual_memory()
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "ram_gib": round(vm.total / 1024**3, 1),
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "qiskit": _version("qiskit"),
        "qiskit_aer": _version("qiskit-aer"),
        "qiskit_qasm3_import": _version("qiskit-qasm3-import"),
        "httpx": _version("httpx"),
        "load_average_at_start": [round(x, 2) for x in load],
    }
