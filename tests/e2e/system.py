"""Start the whole system the way `make run` does, for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from tests.conftest import REPO, free_port, free_ports, wait_port


@dataclass
class System:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    nats_url: str = ""
    redis_url: str = ""

    def tree(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)

    def workers(self) -> list[psutil.Process]:
        found = []
        for proc in self.tree():
            try:
                if proc.status() != psutil.STATUS_ZOMBIE and "qmill-worker" in " ".join(
                    proc.cmdline()
                ):
                    found.append(proc)
            except psutil.Error:
                continue  # exited while we looked
        return found


@contextmanager
def running_system(tmp: Path, **env_overrides: str) -> Iterator[System]:
    """`qmill up` on free ports with its data in ``tmp``; everything killed afterwards."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("QMILL_")}
    env.update(
        QMILL_SERVER__PORT=str(port),
        QMILL_NATS__URL=f"nats://127.0.0.1:{free_port()}",
        QMILL_REDIS__URL=f"redis://127.0.0.1:{free_port()}",
        QMILL_EMBEDDED__DATA_DIR=str(tmp / "data"),
        QMILL_EMBEDDED__FUNCTIONS_BASE_PORT=str(free_ports(3)),
        QMILL_WORKER__PROCESSES="2",
        QMILL_LOG__FORMAT="text",
    )
    env.update(env_overrides)
    log = tmp / "qmill-up.log"
    qmill = str(Path(sys.executable).parent / "qmill")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [qmill, "up"], env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_port(port, timeout=90)
        yield System(
            proc, f"http://127.0.0.1:{port}", log, env["QMILL_NATS__URL"], env["QMILL_REDIS__URL"]
        )
    finally:
        kill_system(proc)


def kill_system(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL `qmill up` and every process under it.

    The children must be found before the supervisor dies: a dead process has no
    children (they are re-parented to init), which is how killing the supervisor first
    leaked every service. The supervisor is frozen first so it restarts nothing while
    this runs, and each service is killed with its process group (`qmill up` starts
    each in its own session), which also takes grandchildren such as simulation
    processes started after the list was taken.
    """
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGSTOP)
    try:
        services = psutil.Process(proc.pid).children()
    except psutil.NoSuchProcess:
        services = []
    for service in services:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(service.pid, signal.SIGKILL)
    proc.kill()
    proc.wait()
    psutil.wait_procs(services, timeout=10)
