"""Start the whole system the way `make run` does, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from tests.conftest import REPO, free_port, wait_port


def consecutive_free_ports(count: int) -> int:
    for _ in range(100):
        base = free_port()
        if base + count < 65535 and all(_free(base + i) for i in range(count)):
            return base
    raise RuntimeError("no run of free ports")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


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
        QMILL_EMBEDDED__FUNCTIONS_BASE_PORT=str(consecutive_free_ports(3)),
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
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            for child in psutil.Process(proc.pid).children(recursive=True):
                child.kill()
            proc.wait()
