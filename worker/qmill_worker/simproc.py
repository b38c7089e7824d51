"""Simulation processes: a fork server (the "zygote") and the children it forks.

The worker's `ProcessExecutor` runs every simulation in a child process: running Aer
there instead of in a thread keeps the worker's event loop free (Aer holds the GIL
while it simulates) and makes a runaway or crashing simulation something the worker
can kill and survive. A child killed that way must be replaced, and starting Python,
importing qiskit and qiskit-aer and building the pass manager costs ~0.45 s of CPU:
on two cores, a poison task that kills its child three times, or a few runaways,
would take that from healthy tasks each time. So one zygote per worker pays for the
imports once, and forks each child from that warm state (~15 ms).

Fork is safe here because the zygote never simulates: OpenMP's thread pool, which
does not survive a fork, is only created by a child's first simulation.

Protocol:

* zygote: ``python -m qmill_worker.simproc --control FD``. FD is a Unix socket on which
  the worker sends ``spawn`` with one file descriptor attached (SCM_RIGHTS): the
  child's end of a socket pair. The zygote answers on fd 1, JSON lines:
  ``{"ready": true}`` once warm, ``{"spawned": pid}`` per spawn (in order), and
  ``{"exit": pid, "code": c}`` when a child ends (``c`` < 0: killed by signal ``-c``).
  ``kill PID`` (no descriptor) SIGKILLs a child; the zygote sends it only to a child
  it has not reaped, so a reused pid is never hit.
  EOF on the control socket (the worker closed it or died) ends the zygote.
* child: JSON lines on its socket; ``{"ready": true}`` first, then one reply per
  request (a `SimJob` as a dict plus ``threads``): ``{"ok": true, "result": ...}``, or
  ``{"ok": false, "error": message, "reason": FailureReason value, "retryable": bool}``.
  A group of compatible small tasks (``{"jobs": [SimJob dicts], "threads": n}``, run by
  ``qmill_worker.grouped``) is answered ``{"ok": true, "answers": [...]}``, one reply
  as above per job, in order.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import json
import os
import selectors
import signal
import socket
import sys
import traceback
from typing import Any, TextIO

from qmill_worker.errors import SimulationError
from qmill_worker.grouped import simulate_group
from qmill_worker.simulator import SimJob, SimResult, preload, simulate, warm_up

_PR_SET_PDEATHSIG = 1


def _serve(conn: TextIO) -> None:
    """A child: answer simulation requests on ``conn`` until EOF."""
    warm_up()
    conn.write('{"ready": true}\n')
    conn.flush()
    for line in conn:
        request = json.loads(line)
        threads = int(request.pop("threads", 0))
        reply: dict[str, Any]
        try:
            if "jobs" in request:
                jobs = [SimJob(**job) for job in request["jobs"]]
                answers = simulate_group(jobs, threads=threads)
                reply = {"ok": True, "answers": [_reply(answer) for answer in answers]}
            else:
                reply = _reply(simulate(SimJob(**request), threads=threads))
        except SimulationError as exc:
            reply = _reply(exc)
        except Exception as exc:  # a bug in qmill or qiskit: report it, stay alive
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "retryable": False}
        conn.write(json.dumps(reply) + "\n")
        conn.flush()


def _reply(answer: SimResult | SimulationError) -> dict[str, Any]:
    if isinstance(answer, SimResult):
        return {"ok": True, "result": answer.to_dict()}
    return {
        "ok": False,
        "error": answer.message,
        "reason": answer.reason.value,
        "retryable": answer.retryable,
    }


def _detach_from_signals(parent: int) -> None:
    """Leave stopping to the worker, and die with the parent.

    The worker's process group gets SIGTERM on a graceful stop; a child that died then
    would fail the task the worker is trying to finish. The worker kills its children
    itself when it closes; if the parent (the worker, for the zygote; the zygote, for
    a child) dies, the kernel kills this process (PR_SET_PDEATHSIG), so a SIGKILLed
    worker leaves no orphan zygote and no orphan simulation.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _child(fd: int, zygote_pid: int, inherited: list[Any]) -> None:
    """Runs in a freshly forked child; never returns."""
    code = 0
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for thing in inherited:  # the zygote's selector, sockets and pipes
            if isinstance(thing, int):
                os.close(thing)
            else:
                thing.close()
        _detach_from_signals(zygote_pid)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, KeyboardInterrupt):
            _serve(socket.socket(fileno=fd).makefile("rw", encoding="utf-8"))
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        sys.stderr.flush()
        os._exit(code)


def _reap(out: TextIO, children: set[int]) -> None:
    """Report every child that ended (SIGCHLD woke the zygote)."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        children.discard(pid)
        out.write(json.dumps({"exit": pid, "code": os.waitstatus_to_exitcode(status)}) + "\n")


def zygote(control: socket.socket, out: TextIO) -> None:
    """Fork a warm child for every ``spawn`` request until the control socket closes."""
    preload()
    me = os.getpid()
    children: set[int] = set()  # forked and not reaped yet: safe to signal
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so the wakeup fd is written
    selector = selectors.DefaultSelector()
    selector.register(control, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    out.write('{"ready": true}\n')
    out.flush()
    while True:
        for key, _ in selector.select():
            if key.fileobj == wake_r:
                os.read(wake_r, 4096)
                _reap(out, children)
                continue
            msg, fds, _flags, _addr = socket.recv_fds(control, 64, 4)
            if not msg:
                return  # the worker closed the control socket, or died
            if msg.startswith(b"kill "):
                pid = int(msg.split()[1])
                if pid in children:
                    os.kill(pid, signal.SIGKILL)
                continue
            if not fds:
                continue
            for extra in fds[1:]:
                os.close(extra)
            pid = os.fork()
            if pid == 0:
                _child(fds[0], me, [selector, control, out, wake_r, wake_w])
            children.add(pid)
            os.close(fds[0])
            out.write(json.dumps({"spawned": pid}) + "\n")
        out.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m qmill_worker.simproc")
    parser.add_argument("--control", type=int, required=True, help="Unix socket fd")
    parent = os.getppid()  # the worker
    args = parser.parse_args(argv)
    _detach_from_signals(parent)
    # Anything a library prints must not corrupt the protocol: fd 1 is ours alone.
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    control = socket.socket(fileno=args.control)
    with contextlib.suppress(BrokenPipeError, KeyboardInterrupt):
        zygote(control, out)
    # Ended (the worker closed the control socket): exit now, without the interpreter's
    # teardown of everything `preload` imported, which took 1.1-1.8 s of a stopping
    # worker's time here (CPU-bound, on a loaded machine); a platform's SIGKILL deadline
    # counts it. Its children die with it (PR_SET_PDEATHSIG) or on their own EOF.
    with contextlib.suppress(OSError, ValueError):
        out.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
