"""Start the whole system the way `make run` does, for end-to-end tests: ``qmill up``
through the one launcher (`qmill.server.launcher`), on its ports, with its data in a
temporary directory."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from qmill.server.launcher import Launcher
from tests.conftest import REPO


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
    """`qmill up` on free ports with its data in ``tmp``; everything SIGKILLed afterwards
    (the supervisor frozen first, so it restarts nothing meanwhile)."""
    launcher = Launcher(tmp, cwd=REPO)
    try:
        defaults = {"QMILL_WORKER__PROCESSES": "2", "QMILL_LOG__FORMAT": "text"}
        up = launcher.up(**{**defaults, **env_overrides})
        assert up.proc is not None and up.log is not None
        yield System(up.proc, launcher.url, up.log, launcher.nats_url, launcher.redis_url)
    finally:
        launcher.stop(kill=True)
