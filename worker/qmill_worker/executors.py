"""Where simulations run. The worker only sees the `Executor` interface.

* `ThreadExecutor` is the design card's ThreadPoolExecutor. Aer holds the GIL while it
  simulates, so while a simulation runs the worker's event loop is frozen, and a
  simulation cannot be stopped. The worker is built to tolerate the freeze (ack_wait
  covers the longest run, Redis calls retry), but it cannot enforce a time limit.
* `ProcessExecutor` keeps one warm child process per slot (``qmill_worker.simproc``),
  talking JSON lines over pipes. The event loop never freezes, simulations use every
  core, and a runaway or crashing simulation is killed and its child replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Protocol

from qmill.errors import SimulationError
from qmill_worker.simulator import SimJob, SimResult, simulate, warm_up

log = logging.getLogger(__name__)

# Counts of a wide register with many shots make long lines; asyncio's default is 64 KiB.
_PIPE_LIMIT = 256 * 1024 * 1024


class SimulationTimeout(SimulationError):
    def __init__(self, seconds: float) -> None:
        super().__init__(f"timeout: the simulation ran longer than {seconds:g} s and was stopped")


class Executor(Protocol):
    name: str

    async def start(self) -> None: ...

    async def run(self, job: SimJob, timeout: float) -> SimResult: ...

    async def close(self) -> None: ...


def aer_threads(configured: int, concurrency: int) -> int:
    """OpenMP threads per simulation: the cores shared by the concurrent simulations."""
    if configured:
        return configured
    return max(1, (os.cpu_count() or 1) // max(1, concurrency))


class ThreadExecutor:
    name = "thread"

    def __init__(self, slots: int, threads: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="qmill-sim")
        self._threads = threads

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, warm_up)

    async def run(self, job: SimJob, timeout: float) -> SimResult:
        # `timeout` cannot be enforced: a thread cannot be stopped (see module docstring).
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, partial(simulate, job, threads=self._threads))

    async def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class _Child:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def spawn(cls) -> _Child:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "qmill_worker.simproc",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=_PIPE_LIMIT,
        )
        child = cls(proc)
        try:
            ready = await child._read()
        except BaseException:  # cancelled (the executor is closing) or a broken pipe
            await child.kill()
            raise
        if ready is None or not ready.get("ready"):
            await child.kill()
            raise RuntimeError("simulation child failed to start")
        return child

    async def _read(self) -> dict[str, object] | None:
        assert self.proc.stdout is not None
        line = await self.proc.stdout.readline()
        return json.loads(line) if line else None

    async def call(self, request: dict[str, object]) -> dict[str, object] | None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request).encode() + b"\n")
        await self.proc.stdin.drain()
        return await self._read()

    async def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()


class ProcessExecutor:
    name = "process"

    def __init__(self, slots: int, threads: int) -> None:
        self._slots = slots
        self._threads = threads
        self._idle: asyncio.Queue[_Child] = asyncio.Queue()
        self._busy: set[_Child] = set()
        self._spawning: set[asyncio.Task[None]] = set()
        self._closed = False

    async def start(self) -> None:
        children = await asyncio.gather(*(_Child.spawn() for _ in range(self._slots)))
        for child in children:
            self._idle.put_nowait(child)

    async def run(self, job: SimJob, timeout: float) -> SimResult:
        child = await self._idle.get()
        self._busy.add(child)
        request = {**job.to_dict(), "threads": self._threads}
        replace = True
        try:
            try:
                reply = await asyncio.wait_for(child.call(request), timeout)
            except TimeoutError:
                raise SimulationTimeout(timeout) from None
            except (BrokenPipeError, ConnectionResetError):
                reply = None
            if reply is None:
                code = await child.proc.wait()
                how = f"signal {-code}" if code < 0 else f"exit code {code}"
                raise SimulationError(f"simulator process died ({how})", retryable=True)
            replace = False
        finally:
            self._busy.discard(child)
            if replace:
                await child.kill()
                self._replace()
            else:
                self._idle.put_nowait(child)
        if not reply.get("ok"):
            raise SimulationError(str(reply.get("error")), retryable=bool(reply.get("retryable")))
        result = reply["result"]
        assert isinstance(result, dict)
        return SimResult(**result)

    def _replace(self) -> None:
        """Start a child in place of a killed one, in the background.

        The run that killed its child (a timeout, a crash, a user's cancel, or a
        shutdown past the grace period) returns at once instead of waiting for the
        new child to import Aer and warm up (~0.5 s on an idle machine, seconds on a
        busy one): the task's outcome is stored, or the task handed back to JetStream,
        that much sooner, and a stopping worker keeps to its grace period. The next
        `run` on this slot waits for the child instead.
        """
        task = asyncio.create_task(self._spawn_idle(), name="qmill-sim-respawn")
        self._spawning.add(task)
        task.add_done_callback(self._spawning.discard)

    async def _spawn_idle(self) -> None:
        delay = 1.0
        while not self._closed:
            try:
                child = await _Child.spawn()
            except (OSError, RuntimeError, ValueError):
                log.exception("could not start a simulation child; retrying")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            if self._closed:
                await child.kill()
            else:
                self._idle.put_nowait(child)
            return

    async def close(self) -> None:
        self._closed = True
        for task in list(self._spawning):
            task.cancel()
        await asyncio.gather(*self._spawning, return_exceptions=True)
        children = list(self._busy)
        while not self._idle.empty():
            children.append(self._idle.get_nowait())
        await asyncio.gather(*(child.kill() for child in children), return_exceptions=True)


def make_executor(kind: str, slots: int, threads: int) -> Executor:
    if kind == "process":
        return ProcessExecutor(slots, threads)
    return ThreadExecutor(slots, threads)
