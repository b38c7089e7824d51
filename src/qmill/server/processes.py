"""Child processes of a launched qmill system: each in its own session, with its output in
a log file, and each one may be SIGKILLed, frozen (SIGSTOP) and started again on the same
port and data, which is what the fault campaign does to them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from qmill.server import embedded
from qmill.server.config import env_name
from qmill.server.ports import wait_port

READY_TIMEOUT_SECONDS = 60.0
# What qmill_worker.consumer logs once its consumer pulls: the worker is ready.
WORKER_READY_MESSAGE = "pulling tasks"


def stop(proc: subprocess.Popen[bytes], timeout: float = embedded.STOP_TIMEOUT_SECONDS) -> None:
    """SIGTERM, then SIGKILL; the process group too, so no grandchild survives."""
    if proc.poll() is None:
        signal_group(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    signal_group(proc.pid, signal.SIGKILL)
    proc.wait()


def signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


class Process:
    """One service as a child process in its own session, which may be killed, paused
    and started again with the same command, port and data.

    Output goes to ``log`` (appended, so a restart keeps what came before), or nowhere.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        port: int | None = None,
        env: Mapping[str, str] | None = None,
        log: Path | None = None,
        cwd: Path | None = None,
        stop_timeout: float = embedded.STOP_TIMEOUT_SECONDS,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.port = port
        self.env = dict(env) if env is not None else None
        self.log = log
        self.cwd = cwd
        self.stop_timeout = stop_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_start = 0  # where this run's output begins in the appended log

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} was never started"
        return self.proc.pid

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start the process and return at once."""
        out = open(self.log, "ab") if self.log is not None else None  # noqa: SIM115
        self._log_start = out.tell() if out is not None else 0
        try:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdout=out if out is not None else subprocess.DEVNULL,
                stderr=subprocess.STDOUT if out is not None else subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            if out is not None:
                out.close()
        return self.proc

    def start(self, timeout: float = READY_TIMEOUT_SECONDS) -> subprocess.Popen[bytes]:
        """Start the process and wait until it is ready."""
        proc = self.spawn()
        self.wait_ready(timeout)
        return proc

    def wait_ready(self, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        """Until its port accepts connections; fails early if it exits meanwhile."""
        if self.port is None:
            return
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited at start{self._see_log()}")
            with contextlib.suppress(TimeoutError):
                wait_port(self.port, timeout=min(0.5, max(0.0, deadline - time.monotonic())))
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.name} not ready on port {self.port}{self._see_log()}")

    def _see_log(self) -> str:
        return f"; see {self.log}" if self.log is not None else ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL this process only: what its own children do then is what a test checks."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def pause(self) -> None:
        """SIGSTOP: the process is there but answers nothing (hung, or cut off)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """SIGTERM its process group, SIGKILL after ``stop_timeout``."""
        if self.proc is not None:
            self.resume()  # a stopped process would sit on SIGTERM until the SIGKILL
            stop(self.proc, self.stop_timeout)

    def restart(self, timeout: float = READY_TIMEOUT_SECONDS) -> subprocess.Popen[bytes]:
        """SIGKILL it if it still runs, then start it again: same command, port and data."""
        if self.alive():
            self.kill()
        return self.start(timeout)

    def output(self, *, this_run: bool = False) -> str:
        """Its log: all of it, or only what it wrote since it was last started."""
        if self.log is None:
            return ""
        with contextlib.suppress(FileNotFoundError):
            data = self.log.read_bytes()
            return data[self._log_start if this_run else 0 :].decode(errors="replace")
        return ""

    def events(self) -> list[dict[str, Any]]:
        """Its JSON log lines (``[log] format = "json"``); other lines are skipped."""
        found = []
        for line in self.output().splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict):
                    found.append(event)
        return found


class Server(Process):
    """nats-server or redis-server with the embedded run's command, on ``port`` with its
    data in ``data_dir``; a restart finds the data it left there."""

    def __init__(
        self,
        name: str,
        port: int,
        data_dir: Path,
        *,
        env: Mapping[str, str] | None = None,
        log: Path | None = None,
        argv: Sequence[str] | None = None,
    ) -> None:
        """``argv``: the command as `embedded.services` built it from the settings (its
        bounds); else the embedded command with the default bounds."""
        if argv is not None:
            command = list(argv)
        elif name == "nats":
            command = embedded.nats_command(port, data_dir)
        else:
            command = embedded.redis_command(port, data_dir)
        super().__init__(name, command, port=port, env=env, log=log)
        self.data_dir = data_dir


class Worker(Process):
    """A ``qmill-worker`` with its own id (in its log lines and in Redis) and liveness file."""

    def __init__(self, worker_id: str, argv: Sequence[str], heartbeat: Path, **kwargs: Any) -> None:
        super().__init__(worker_id, [*argv, "--worker-id", worker_id], **kwargs)
        self.worker_id = worker_id
        self.heartbeat = heartbeat

    def wait_ready(self, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        """Until it pulls tasks (its simulation processes are warm by then)."""
        deadline = time.monotonic() + timeout
        while WORKER_READY_MESSAGE not in self.output(this_run=True):
            if not self.alive():
                raise RuntimeError(f"{self.worker_id} exited at start{self._see_log()}")
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.worker_id} not pulling after {timeout} s")
            time.sleep(0.1)

    def check(self) -> int:
        """``qmill-worker --check``, the liveness probe compose and Kubernetes run."""
        env = {**os.environ, env_name("worker", "heartbeat_file"): str(self.heartbeat)}
        argv = [embedded.binary("qmill-worker"), "--check"]
        return subprocess.run(argv, env=env, capture_output=True, check=False).returncode
