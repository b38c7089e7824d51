"""Where simulations run. The worker only sees the `Executor` interface.

* `ThreadExecutor` runs simulations in a ThreadPoolExecutor. Aer holds the GIL while it
  simulates, so while a simulation runs the worker's event loop is frozen, and a
  simulation cannot be stopped. The worker is built to tolerate the freeze (ack_wait
  covers the longest run, Redis calls retry), but it cannot enforce a time limit.
* `ProcessExecutor` keeps one warm child process per slot, talking JSON lines over a
  socket. The event loop never freezes, simulations use every core, and a runaway or
  crashing simulation is killed and its child replaced: forked in ~15 ms from a fork
  server that imported everything once (``qmill_worker.simproc``), instead of a new
  interpreter that spends ~0.45 s of CPU importing qiskit.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import socket
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Protocol

from qmill_worker.errors import FailureReason, SimulationError, SimulationTimeout
from qmill_worker.grouped import Answer, simulate_group
from qmill_worker.simulator import SimJob, SimResult, simulate, warm_up

log = logging.getLogger(__name__)

# Counts of a wide register with many shots make long lines; asyncio's default is 64 KiB.
_PIPE_LIMIT = 256 * 1024 * 1024


class Executor(Protocol):
    """Runs one simulation per call to `run`, at most as many at once as it has slots.

    `run` returns the result or raises `SimulationError`: its ``reason`` is what the
    failure is counted as, ``retryable`` whether another attempt (on any worker) may
    succeed. Anything else it raises is a bug, and the task is released for redelivery.
    """

    name: str

    async def start(self) -> None: ...

    async def run(self, job: SimJob, timeout: float) -> SimResult: ...

    async def run_group(self, jobs: Sequence[SimJob], timeout: float) -> list[Answer]:
        """Small compatible tasks in one simulation (``qmill_worker.grouped``): each
        job's result or its own failure, in order. Raises `SimulationError` only for
        what ended the whole call (a timeout, a crash): the caller then runs each task
        on its own, so only the task at fault fails."""
        ...

    async def close(self) -> None: ...


def aer_threads(configured: int, running: int) -> int:
    """OpenMP threads a simulation may use when it starts with ``running`` simulations
    (itself included) in this worker: the configured number, or else the cores shared
    among the running ones, so a lone sweep or wide circuit gets the whole machine and
    concurrent ones split it. `simulate` still gives a small circuit one thread."""
    if configured:
        return configured
    return max(1, (os.cpu_count() or 1) // max(1, running))


class ThreadExecutor:
    name = "thread"

    def __init__(self, slots: int, threads: int) -> None:
        """``threads``: Aer threads per simulation; 0 shares the cores (`aer_threads`)."""
        self._pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="qmill-sim")
        self._slots = slots
        self._threads = threads
        self._running = 0

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, warm_up)

    async def run(self, job: SimJob, timeout: float) -> SimResult:
        # `timeout` cannot be enforced: a thread cannot be stopped (see module docstring).
        loop = asyncio.get_running_loop()
        self._running += 1
        try:
            threads = aer_threads(self._threads, min(self._running, self._slots))
            return await loop.run_in_executor(self._pool, partial(simulate, job, threads=threads))
        finally:
            self._running -= 1

    async def run_group(self, jobs: Sequence[SimJob], timeout: float) -> list[Answer]:
        loop = asyncio.get_running_loop()
        self._running += 1
        try:
            threads = aer_threads(self._threads, min(self._running, self._slots))
            run = partial(simulate_group, list(jobs), threads=threads)
            return await loop.run_in_executor(self._pool, run)
        finally:
            self._running -= 1

    async def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


# How a child ended: its exit code (negative: the signal), None if unknown.
_Ended = asyncio.Future[int | None]


class ForkServer:
    """The zygote of one `ProcessExecutor`: forks warm simulation children on request.

    See ``qmill_worker.simproc`` for the protocol. Spawns are one at a time, so the
    zygote's ``spawned`` replies match the requests in order.
    """

    def __init__(self, proc: asyncio.subprocess.Process, control: socket.socket) -> None:
        self.proc = proc
        self._control = control
        # Per spawn request sent and not answered yet: its pid and a future of how the
        # child ended. The lock lets one request out at a time, but a spawn cancelled
        # while it waited leaves its request behind, and the zygote still answers it,
        # in order: a queue keeps the next request from taking that answer.
        self._spawns: collections.deque[asyncio.Future[tuple[int, _Ended]]] = collections.deque()
        # Per child not reported ended yet.
        self._exits: dict[int, _Ended] = {}
        self._lock = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls) -> ForkServer:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "qmill_worker.simproc",
                "--control",
                str(theirs.fileno()),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                pass_fds=(theirs.fileno(),),
            )
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        server = cls(proc, mine)
        try:
            assert proc.stdout is not None
            line = await proc.stdout.readline()
            if not line or not json.loads(line).get("ready"):
                raise RuntimeError("the simulation fork server failed to start")
        except BaseException:
            await server.close()
            raise
        server._reader = asyncio.create_task(server._read_replies(), name="qmill-forkserver")
        return server

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None and self._reader is not None and not self._reader.done()

    async def spawn(self) -> _Child:
        """Fork a child and wait until it is warm (it runs one tiny simulation first)."""
        async with self._lock:
            if not self.alive:
                raise RuntimeError("the simulation fork server is not running")
            mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            spawned: asyncio.Future[tuple[int, _Ended]] = asyncio.get_running_loop().create_future()
            self._spawns.append(spawned)
            try:
                socket.send_fds(self._control, [b"spawn"], [theirs.fileno()])
            except OSError as exc:
                self._spawns.remove(spawned)
                mine.close()
                raise RuntimeError(f"the simulation fork server is gone: {exc}") from None
            finally:
                theirs.close()
            try:
                pid, ended = await spawned
            except BaseException:
                mine.close()
                raise
        reader, writer = await asyncio.open_unix_connection(sock=mine, limit=_PIPE_LIMIT)
        child = _Child(self, pid, ended, reader, writer)
        try:
            ready = await child.read()
        except BaseException:  # cancelled (the executor is closing) or a broken socket
            await child.kill()
            raise
        if ready is None or not ready.get("ready"):
            await child.kill()
            raise RuntimeError("simulation child failed to start")
        return child

    def kill(self, pid: int) -> None:
        """SIGKILL child ``pid``. The zygote sends it, and only to a child it has not
        reaped yet, so a reused pid is never hit."""
        with contextlib.suppress(OSError):
            self._control.send(b"kill %d" % pid)

    async def _read_replies(self) -> None:
        assert self.proc.stdout is not None
        loop = asyncio.get_running_loop()
        try:
            while line := await self.proc.stdout.readline():
                reply = json.loads(line)
                if "spawned" in reply:
                    pid = int(reply["spawned"])
                    ended: _Ended = loop.create_future()
                    self._exits[pid] = ended
                    spawned = self._spawns.popleft()
                    if not spawned.done():
                        spawned.set_result((pid, ended))
                elif "exit" in reply:
                    found = self._exits.pop(int(reply["exit"]), None)
                    if found is not None and not found.done():
                        found.set_result(int(reply["code"]))
        finally:
            # Gone: its children die with it (PR_SET_PDEATHSIG); nobody will report how.
            for spawned in self._spawns:
                if not spawned.done():
                    spawned.set_exception(RuntimeError("the simulation fork server died"))
            for found in self._exits.values():
                if not found.done():
                    found.set_result(None)
            self._exits.clear()

    async def close(self) -> None:
        """Closing the control socket ends the zygote, and its children with it."""
        self._control.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 5.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)


class _Child:
    def __init__(
        self,
        server: ForkServer,
        pid: int,
        ended: _Ended,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.server = server
        self.pid = pid
        self._ended = ended
        self._reader = reader
        self._writer = writer

    @property
    def dead(self) -> bool:
        return self._ended.done()

    async def read(self) -> dict[str, object] | None:
        line = await self._reader.readline()
        return json.loads(line) if line else None

    async def call(self, request: dict[str, object]) -> dict[str, object] | None:
        self._writer.write(json.dumps(request).encode() + b"\n")
        await self._writer.drain()
        return await self.read()

    async def wait(self) -> int | None:
        """How it ended (negative: the signal); None if its fork server died too."""
        return await asyncio.shield(self._ended)

    async def kill(self) -> None:
        if not self._ended.done():
            self.server.kill(self.pid)
        self._writer.close()
        await self.wait()


class ProcessExecutor:
    name = "process"

    def __init__(self, slots: int, threads: int) -> None:
        """``threads``: Aer threads per simulation; 0 shares the cores (`aer_threads`)."""
        self._slots = slots
        self._threads = threads
        self._idle: asyncio.Queue[_Child] = asyncio.Queue()
        self._busy: set[_Child] = set()
        self._spawning: set[asyncio.Task[None]] = set()
        self._server: ForkServer | None = None
        self._server_lock = asyncio.Lock()
        self._closed = False

    async def start(self) -> None:
        children = await asyncio.gather(*(self._spawn() for _ in range(self._slots)))
        for child in children:
            self._idle.put_nowait(child)

    async def _spawn(self) -> _Child:
        """A warm child, from the fork server (started again if it died)."""
        async with self._server_lock:
            if self._server is None or not self._server.alive:
                if self._server is not None:
                    log.warning("the simulation fork server died; starting a new one")
                    await self._server.close()
                self._server = await ForkServer.start()
            server = self._server
        return await server.spawn()

    async def run(self, job: SimJob, timeout: float) -> SimResult:
        reply = await self._call(job.to_dict(), timeout)
        answer = _answer(reply)
        if isinstance(answer, SimulationError):
            raise answer
        return answer

    async def run_group(self, jobs: Sequence[SimJob], timeout: float) -> list[Answer]:
        reply = await self._call({"jobs": [job.to_dict() for job in jobs]}, timeout)
        answers = reply.get("answers")
        if not reply.get("ok") or not isinstance(answers, list) or len(answers) != len(jobs):
            failed = _answer(reply)
            if isinstance(failed, SimulationError):
                raise failed
            raise SimulationError("simulator error: the group's answers do not match its tasks")
        return [_answer(answer) for answer in answers]

    async def _call(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        """One request to an idle child, its reply; a child that timed out or died is
        replaced (SimulationTimeout, or a retryable SimulationError)."""
        child = await self._idle.get()
        while child.dead:  # died while idle (the OOM killer, or its fork server died)
            await child.kill()
            self._replace()
            child = await self._idle.get()
        self._busy.add(child)
        threads = aer_threads(self._threads, len(self._busy))
        request = {**request, "threads": threads}
        replace = True
        try:
            try:
                reply = await asyncio.wait_for(child.call(request), timeout)
            except TimeoutError:
                raise SimulationTimeout(timeout) from None
            except (BrokenPipeError, ConnectionResetError):
                reply = None
            if reply is None:
                code = await child.wait()
                if code is None:
                    how = "its fork server died"
                else:
                    how = f"signal {-code}" if code < 0 else f"exit code {code}"
                raise SimulationError(
                    f"simulator process died ({how})", FailureReason.CRASHED, retryable=True
                )
            replace = False
        finally:
            self._busy.discard(child)
            if replace:
                await child.kill()
                self._replace()
            else:
                self._idle.put_nowait(child)
        return reply

    def _replace(self) -> None:
        """Start a child in place of a killed one, in the background.

        The run that killed its child (a timeout, a crash, a user's cancel, or a
        shutdown past the grace period) returns at once instead of waiting for the
        new child to be forked and warmed up (~15 ms on an idle machine, more on a
        busy one; ~0.5 s if the fork server itself must be started again): the
        task's outcome is stored, or the task handed back to JetStream, that much
        sooner, and a stopping worker keeps to its grace period. The next `run` on
        this slot waits for the child instead.
        """
        task = asyncio.create_task(self._spawn_idle(), name="qmill-sim-respawn")
        self._spawning.add(task)
        task.add_done_callback(self._spawning.discard)

    async def _spawn_idle(self) -> None:
        delay = 1.0
        while not self._closed:
            try:
                child = await self._spawn()
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
        async with self._server_lock:
            if self._server is not None:
                await self._server.close()


def _answer(reply: dict[str, Any]) -> Answer:
    """A child's reply for one task: its result, or its failure as a SimulationError."""
    if not reply.get("ok"):
        return SimulationError(
            str(reply.get("error")),
            FailureReason.parse(reply.get("reason")),
            retryable=bool(reply.get("retryable")),
        )
    result = reply["result"]
    assert isinstance(result, dict)
    return SimResult(**result)


def make_executor(kind: str, slots: int, threads: int) -> Executor:
    if kind == "process":
        return ProcessExecutor(slots, threads)
    return ThreadExecutor(slots, threads)
