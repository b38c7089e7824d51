"""A simulation child process: JSON lines in on stdin, JSON lines out on fd 1.

The worker's `ProcessExecutor` keeps a few of these warm. Running Aer here instead of
in a thread keeps the worker's event loop free (Aer holds the GIL while it simulates)
and makes a runaway or crashing simulation something the worker can kill and survive.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import signal
import sys
from typing import Any

from qmill.errors import SimulationError
from qmill_worker.simulator import SimJob, simulate, warm_up

_PR_SET_PDEATHSIG = 1


def _serve(out: Any) -> None:
    warm_up()
    out.write('{"ready": true}\n')
    out.flush()
    for line in sys.stdin:
        request = json.loads(line)
        threads = int(request.pop("threads", 0))
        reply: dict[str, Any]
        try:
            result = simulate(SimJob(**request), threads=threads)
            reply = {"ok": True, "result": result.to_dict()}
        except SimulationError as exc:
            reply = {"ok": False, "error": exc.message, "retryable": exc.retryable}
        except Exception as exc:  # a bug in qmill or qiskit: report it, stay alive
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "retryable": False}
        out.write(json.dumps(reply) + "\n")
        out.flush()


def _detach_from_signals() -> None:
    """Leave stopping to the worker, and die with it.

    The worker's process group gets SIGTERM on a graceful stop; a child that died then
    would fail the task the worker is trying to finish. The worker kills its children
    itself when it closes; if the worker is SIGKILLed, the kernel kills the child
    (PR_SET_PDEATHSIG) so no orphan simulation keeps running.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the worker died before prctl took effect
        os._exit(1)


def main() -> None:
    _detach_from_signals()
    # Anything a library prints must not corrupt the protocol: fd 1 is ours alone.
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
        _serve(out)


if __name__ == "__main__":
    main()
