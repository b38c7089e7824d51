"""The zygote of the parse processes, and the parse processes it forks.

``python -m qmill.server.qasm.zygote FD`` imports qiskit and the parsers once
(`PRELOAD`) and parses (and draws) a program of each kind, then forks a child for every byte it
reads on its control socket FD, and sends back the child's pid and the function's end
of a new socket pair (SCM_RIGHTS). A child, warm from the start, checks `Job`s until
EOF: a `Job` (the submit function: check programs) or a `DrawJob` (the result
function: draw one, `qmill.server.qasm.diagram`). See `qmill.server.qasm.pool` for the
side of the function process.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import importlib
import json
import math
import os
import pickle
import selectors
import signal
import socket
import sys
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from qmill.server.errors import RequestError

if TYPE_CHECKING:
    from qmill.server.config import Settings
    from qmill.server.models import SubmitRequest

# What the zygote imports before it forks anything: the parsers and what they use.
PRELOAD = [
    "qmill.server.tasks",
    "qmill.server.qasm.diagram",
    "qiskit.qasm2",
    "qiskit.qasm3",
    "qiskit_qasm3_import",
    "openqasm3",
]
# A child outlives its deadline by this much before it kills itself (SIGALRM); the
# parent SIGKILLs it at the deadline, so this only matters if the parent cannot.
_SELF_KILL_GRACE_SECONDS = 2
_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15
# A parse process's name (``ps -o comm``, psutil's ``name()``).
CHILD_NAME = "qmill-parse"
READY = b"ready"


@dataclass(frozen=True, slots=True)
class Job:
    """What a parse process checks: ``tasks.check_all(requests, settings, batch)``."""

    settings: Settings
    requests: list[SubmitRequest]
    batch: bool
    # The parse deadline (the process is killed past it).
    seconds: float


@dataclass(frozen=True, slots=True)
class DrawJob:
    """What a parse process draws: ``diagram.draw(program, settings)``, a task's circuit."""

    settings: Settings
    program: str
    # The parse deadline (the process is killed past it): parsing and drawing in all.
    seconds: float


def zygote(control: socket.socket) -> None:
    """Import the parsers, then fork a child for every spawn request until EOF.

    EOF comes when the function process closes the socket or dies: the zygote waits
    on it whenever it is not forking. (Not PR_SET_PDEATHSIG: that fires when the
    *thread* that started the zygote ends, and a thread of an executor starts it.)
    Then it kills its children and waits until they are gone, so none is left behind.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the function process
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the children
    for module in PRELOAD:
        importlib.import_module(module)
    _Handler().warm_up()
    control.sendall(READY)
    events = selectors.DefaultSelector()
    events.register(control, selectors.EVENT_READ)
    children: set[int] = set()  # pidfds of the children alive
    while True:
        for key, _ in events.select():
            if key.fileobj is not control:  # a child ended: its pidfd became readable
                events.unregister(key.fd)
                os.close(key.fd)
                children.discard(key.fd)
            elif control.recv(1):
                pidfd = _fork_child(control)
                children.add(pidfd)
                events.register(pidfd, selectors.EVENT_READ)
            else:
                for pidfd in children:
                    with contextlib.suppress(OSError):
                        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.wait()  # with SIGCHLD ignored: returns when every child is gone
                return


def _fork_child(control: socket.socket) -> int:
    """Fork a child, send its pid and socket to the function process; its pidfd."""
    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        control.close()
        ours.close()
        try:
            _serve(Connection(theirs.detach()))
        finally:
            os._exit(0)
    pidfd = os.pidfd_open(pid)
    theirs.close()
    socket.send_fds(control, [str(pid).encode()], [ours.fileno()])
    ours.close()
    return pidfd


def _serve(conn: Connection) -> None:
    """A child: answer jobs on ``conn`` until EOF (the function process closed it or
    died); and die with the zygote, which is single-threaded."""
    _die_with_parent()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    conn.send_bytes(READY)
    handler = _Handler()
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return
        job = pickle.loads(data)  # from the function process, which this one trusts
        # Past its deadline the parent SIGKILLs this process; should it be unable to,
        # SIGALRM (not handled: it terminates) ends it a little later.
        signal.alarm(math.ceil(job.seconds) + _SELF_KILL_GRACE_SECONDS)
        reply = handler.handle(job)
        signal.alarm(0)
        conn.send_bytes(json.dumps(reply, default=str).encode())


def _die_with_parent() -> None:
    """SIGKILL this process when its parent (the zygote) ends."""
    libc_name = ctypes.util.find_library("c")
    if libc_name:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        # The name `ps` and the tests see (comm): replaced children are expected.
        libc.prctl(_PR_SET_NAME, CHILD_NAME.encode())
    if os.getppid() == 1:  # the zygote died before prctl took effect
        os._exit(1)


class _Handler:
    """Runs `tasks.check_all` on a job, and says what came of it as JSON."""

    def warm_up(self) -> None:
        """Parse one program of each kind, so the first job pays no lazy imports."""
        from qmill.server.config import Settings
        from qmill.server.models import SubmitRequest

        head = 'OPENQASM 3.0; include "stdgates.inc"; qubit[2] q; bit[2] c; '
        programs = (
            head + "h q[0]; cx q[0], q[1]; c = measure q;",
            head + "gate g a { h a; } g q[0]; ctrl @ pow(0.5) @ x q[0], q[1]; c = measure q;",
            'OPENQASM 2.0; include "qelib1.inc"; qreg q[1]; creg c[1]; measure q -> c;',
        )
        requests = [SubmitRequest(quantum_circuit=p) for p in programs]
        settings = Settings.model_validate({})
        self.handle(Job(settings, requests, True, 60.0))
        self.handle(DrawJob(settings, programs[1], 60.0))  # the drawer's own imports

    def handle(self, job: Job | DrawJob) -> dict[str, Any]:
        from qmill.server import tasks

        if isinstance(job, DrawJob):
            return self.draw(job)
        try:
            accepted = tasks.check_all(job.requests, job.settings, job.batch)
        except RequestError as exc:
            return {"error": encode_error(exc)}
        except Exception as exc:  # a bug: reported as one (500), the child lives on
            return {"bug": f"{type(exc).__name__}: {exc}"}
        return {
            "accepted": [
                {
                    "shape": [
                        a.parsed.version,
                        a.parsed.qubits,
                        a.parsed.clbits,
                        a.parsed.depth,
                        a.parsed.size,
                        a.parsed.clifford,
                    ],
                    "plan": a.plan.model_dump_json(),
                }
                for a in accepted
            ]
        }

    def draw(self, job: DrawJob) -> dict[str, Any]:
        """The drawing as text (JSON, like every reply: never a pickle)."""
        from qmill.server.qasm import diagram

        try:
            return {"diagram": diagram.draw(job.program, job.settings)}
        except RequestError as exc:
            return {"error": encode_error(exc)}
        except Exception as exc:  # a bug: reported as one (500), the child lives on
            return {"bug": f"{type(exc).__name__}: {exc}"}


def encode_error(exc: RequestError) -> dict[str, Any]:
    """A RequestError as JSON: its class (by name), its message and its attributes."""
    state = {k: v for k, v in vars(exc).items() if not k.startswith("_")}
    return {"type": type(exc).__name__, "args": list(exc.args), "state": state}


if __name__ == "__main__":
    # Run as the module by its own name, not as __main__: a job unpickled in a child is a
    # qmill.server.qasm.zygote class, and `_Handler.handle` tells them apart by class.
    from qmill.server.qasm import zygote as module

    module.zygote(socket.socket(fileno=int(sys.argv[1])))
