"""Parse processes: where the submit function parses what could be expensive, under a
deadline the OS enforces.

A parser's own deadline is looked at between statements and tokens, which does not
help when one call runs for minutes: ``ctrl(7) @ pow(0.5) @ x`` made qiskit synthesise a
256 x 256 matrix for 39.8 s on the event loop, and every other request waited. So every
program `qasm.parse` will not take inline (`qasm.NotInline`) is checked here, in a
child process that is SIGKILLed at ``[limits] max_parse_seconds`` and replaced; the
request gets a 422 within that budget, and the function's event loop never parses it.
The result function draws a task's circuit here too (`DrawJob`, for
``GET /tasks/{id}/diagram.txt``): parsing and drawing under the same deadline, and
qiskit never imported into the result function's own process.

* Children are forked by a zygote (``python -m qmill.server.qasm.zygote``, as the
  worker's simulation processes are), which imports qiskit and the parsers once
  (``zygote.PRELOAD``): a child is warm when forked (~20 ms), and nothing is forked
  from the function's own process, whose threads a fork would not carry.
* One message each way per job, framed as `multiprocessing.connection.Connection`
  frames them (the child uses one); the function process reads and writes its end
  with the event loop's socket calls, never blocking on it (the loop may make the
  socket non-blocking: uvloop does, and a blocking read of a big reply then failed
  half-way with EAGAIN). To the child, the `Job` (or `DrawJob`) pickled: our own
  objects, from the process the child trusts (the public models do not survive a JSON
  round trip: a sweep's mapping is stored as names and values). Back, JSON: what
  `tasks.check` made of the requests, their numbers and plans (or a drawing's text),
  never a pickle or a circuit, so that a program that compromised a parser cannot get code
  run in the function by what it sends back.
* Lifetime: the zygote exits when the function process closes its control socket or
  dies, after killing its children and waiting for them; a child also dies with the
  zygote (PR_SET_PDEATHSIG), and kills itself with SIGALRM shortly after its
  deadline if nobody else has. At exit the function process closes the socket.
* Slots: at most ``[limits] parse_processes`` parses at once per function process, a
  bounded wait for one (``max_parse_wait_seconds``, then 503 with Retry-After), and a
  tenant may hold at most ``tenant_parse_share`` of them (429 past the same wait).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import math
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from qmill.server.errors import (
    DependencyUnavailable,
    InvalidCircuit,
    LimitExceeded,
    RateLimited,
    RequestError,
)
from qmill.server.qasm import zygote
from qmill.server.qasm.zygote import CHILD_NAME, DrawJob, Job

__all__ = ["CHILD_NAME", "DrawJob", "Job", "ParsePool", "decode_error", "pool", "shutdown"]

log = logging.getLogger(__name__)

# A child not ready this long after it was asked for (the first one waits for the fork
# server to import qiskit: ~1-2 s, more on a loaded machine) is a 503.
SPAWN_SECONDS = 60.0


@dataclass(slots=True)
class _Child:
    pid: int
    # A pidfd: signals reach this process even after its pid was reaped and reused.
    pidfd: int
    # The function process's end of the child's socket, non-blocking.
    sock: socket.socket

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.close(self.pidfd)
        with contextlib.suppress(OSError):
            self.sock.close()


class ParsePool:
    """The parse processes of one function process (`pool` is the one in use)."""

    def __init__(self) -> None:
        self._idle: list[_Child] = []
        self._busy = 0
        self._by_tenant: Counter[str] = Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed = asyncio.Condition()

    async def run(
        self,
        job: Job | DrawJob,
        *,
        seconds: float,
        slots: int,
        wait: float,
        tenant: str | None,
        share: int,
    ) -> dict[str, Any]:
        """Send ``job`` to a child and return its answer, within ``seconds``.

        Raises LimitExceeded (422) at the deadline, DependencyUnavailable (503) when no
        slot is free within ``wait``, RateLimited (429) when the tenant already holds
        ``share`` of them. A caller that goes away does not free its slot early: the
        child's work goes on (to its deadline) and counts until it is done.
        """
        await self._acquire(tenant, slots, share, wait)
        work = asyncio.ensure_future(self._run(job, seconds, tenant))
        return await asyncio.shield(work)

    def close(self) -> None:
        """Kill every idle child (busy ones are killed by their own jobs' deadlines)."""
        idle, self._idle = self._idle, []
        for child in idle:
            child.kill()

    async def _acquire(self, tenant: str | None, slots: int, share: int, wait: float) -> None:
        changed = self._condition()

        def free() -> bool:
            mine = tenant is None or self._by_tenant[tenant] < share
            return self._busy < slots and mine

        async with changed:
            try:
                await asyncio.wait_for(changed.wait_for(free), wait)
            except TimeoutError:
                retry = max(1, math.ceil(wait))
                if tenant is not None and self._by_tenant[tenant] >= share:
                    raise RateLimited(
                        f"{self._by_tenant[tenant]} of your programs are being parsed; "
                        f"at most {share} at once",
                        retry,
                    ) from None
                raise DependencyUnavailable(
                    "parser", f"all {slots} parse processes busy for {wait:g} s", retry
                ) from None
            self._busy += 1
            if tenant is not None:
                self._by_tenant[tenant] += 1

    async def _release(self, tenant: str | None) -> None:
        changed = self._condition()
        async with changed:
            self._busy -= 1
            if tenant is not None:
                self._by_tenant[tenant] -= 1
                if not self._by_tenant[tenant]:
                    del self._by_tenant[tenant]
            changed.notify_all()

    def _condition(self) -> asyncio.Condition:
        """The slot bookkeeping of the running event loop (tests run several in turn;
        slots held on a loop that is gone are gone with it)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop, self._changed = loop, asyncio.Condition()
            self._busy = 0
            self._by_tenant.clear()
        return self._changed

    async def _run(self, job: Job | DrawJob, seconds: float, tenant: str | None) -> dict[str, Any]:
        child: _Child | None = None
        data = pickle.dumps(job)
        try:
            child = self._idle.pop() if self._idle else await _spawn()
            try:
                await _send(child.sock, data)
            except OSError:  # died while idle (the OOM killer): one fresh try
                child.kill()
                child = await _spawn()
                await _send(child.sock, data)
            reply = await _reply(child, seconds)
            self._idle.append(child)
            child = None
            return reply
        finally:
            if child is not None:
                child.kill()
            await self._release(tenant)


async def _reply(child: _Child, seconds: float) -> dict[str, Any]:
    """The child's answer; it is killed at the deadline, or reported if it died."""
    started = time.monotonic()
    try:
        data = await asyncio.wait_for(_receive(child.sock), seconds)
    except TimeoutError:
        log.warning("parse process killed at the deadline", extra={"pid": child.pid})
        raise LimitExceeded("parse seconds", f"over {seconds:g}", seconds) from None
    except (EOFError, OSError) as exc:
        # Killed by the OOM killer, or by itself (SIGALRM) past its deadline.
        log.warning("parse process died", extra={"pid": child.pid, "error": repr(exc)})
        if time.monotonic() - started >= seconds:
            raise LimitExceeded("parse seconds", f"over {seconds:g}", seconds) from None
        raise InvalidCircuit("could not be parsed: the parse process died") from None
    reply: dict[str, Any] = json.loads(data)
    return reply


# `multiprocessing.connection.Connection`'s framing: a signed 4-byte big-endian length,
# or -1 and an 8-byte length for a message over 2 GiB.
_LENGTH = struct.Struct("!i")
_LONG_LENGTH = struct.Struct("!Q")


async def _send(sock: socket.socket, data: bytes) -> None:
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(sock, _LENGTH.pack(len(data)) + data)


async def _receive(sock: socket.socket) -> bytes:
    (length,) = _LENGTH.unpack(await _exactly(sock, _LENGTH.size))
    if length == -1:
        (length,) = _LONG_LENGTH.unpack(await _exactly(sock, _LONG_LENGTH.size))
    return await _exactly(sock, length)


async def _exactly(sock: socket.socket, size: int) -> bytes:
    """``size`` bytes from the socket; EOFError if the other end closed first."""
    loop = asyncio.get_running_loop()
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        read = await loop.sock_recv_into(sock, view[got:])
        if read == 0:
            raise EOFError("the parse process closed its socket")
        got += read
    return bytes(buffer)


async def _spawn() -> _Child:
    """A warm child, forked by the zygote (started on first use, in a thread: it imports
    qiskit)."""
    try:
        return await asyncio.wait_for(asyncio.to_thread(_ZYGOTE.spawn), SPAWN_SECONDS)
    except (TimeoutError, OSError, EOFError) as exc:
        raise DependencyUnavailable("parser", f"no parse process: {exc!r}", 2) from None


class _Zygote:
    """The function process's handle on its zygote (`qmill.server.qasm.zygote`): starts
    it on first use, asks it for children, and closes it at exit (EOF on the control
    socket ends it, and its children with it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        self._registered = False

    def spawn(self) -> _Child:
        with self._lock:
            for attempt in (1, 2):
                control = self._running()
                try:
                    control.sendall(b"s")
                    message, fds, _flags, _addr = socket.recv_fds(control, 64, 1)
                    if not fds:
                        raise EOFError("the parse zygote closed its socket")
                    pid = int(message)
                    pidfd = os.pidfd_open(pid)
                except (OSError, EOFError, ValueError):
                    self._stop()
                    if attempt == 2:
                        raise
                    continue
                sock = socket.socket(fileno=fds[0])
                child = _Child(pid, pidfd, sock)
                if not _ready(sock):
                    child.kill()
                    raise OSError("the parse process did not start")
                sock.setblocking(False)
                return child
        raise AssertionError("unreachable")

    def _running(self) -> socket.socket:
        if self._proc is not None and self._proc.poll() is None and self._control is not None:
            return self._control
        self._stop()
        if self._proc is None and not self._registered:
            atexit.register(shutdown)
            self._registered = True
        ours, theirs = socket.socketpair()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", zygote.__name__, str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        ours.settimeout(SPAWN_SECONDS)
        if ours.recv(len(zygote.READY)) != zygote.READY:
            ours.close()
            raise OSError("the parse zygote did not start")
        self._control = ours
        return ours

    def stop(self) -> None:
        with self._lock:
            self._stop()

    def _stop(self) -> None:
        """EOF on its control socket ends the zygote (and so its children); SIGKILL if
        it has not gone within a second."""
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._proc is not None:
            try:
                self._proc.wait(1)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None


def _ready(sock: socket.socket) -> bool:
    """Whether a new child says it is ready within SPAWN_SECONDS (read blocking, in the
    spawning thread: the socket is not yet the event loop's)."""
    sock.settimeout(SPAWN_SECONDS)
    expected = _LENGTH.pack(len(zygote.READY)) + zygote.READY
    received = b""
    try:
        while len(received) < len(expected):
            chunk = sock.recv(len(expected) - len(received))
            if not chunk:
                return False
            received += chunk
    except OSError:
        return False
    return received == expected


_ZYGOTE = _Zygote()


def shutdown() -> None:
    """Kill the idle children and the zygote (at exit; a busy child dies with the
    zygote, by PR_SET_PDEATHSIG)."""
    pool.close()
    _ZYGOTE.stop()


def decode_error(data: dict[str, Any]) -> RequestError:
    """The RequestError `zygote.encode_error` described, rebuilt by its class in `errors`."""
    from qmill.server import errors

    cls = getattr(errors, str(data.get("type")), None)
    if not (isinstance(cls, type) and issubclass(cls, RequestError)):
        return InvalidCircuit(f"could not be parsed ({data.get('type')})")
    exc = cls.__new__(cls)
    Exception.__init__(exc, *data.get("args", []))
    vars(exc).update(data.get("state", {}))
    return exc


pool = ParsePool()
