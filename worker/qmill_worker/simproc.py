"""A simulation child process: JSON lines in on stdin, JSON lines out on fd 1.

The worker's `ProcessExecutor` keeps a few of these warm. Running Aer here instead of
in a thread keeps the worker's event loop free (Aer holds the GIL while it simulates)
and makes a runaway or crashing simulation something the worker can kill and survive.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import Any

from qmill.errors import SimulationError
from qmill_worker.simulator import SimJob, simulate, warm_up


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


def main() -> None:
    # Anything a library prints must not corrupt the protocol: fd 1 is ours alone.
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
        _serve(out)


if __name__ == "__main__":
    main()
