"""Fixtures: real nats-server and redis-server on free ports, real worker processes.

Servers start once per test session (as nats.py's own suite does) and every test
starts from an empty Redis and a fresh stream. Every process a fixture starts is
stopped in a ``finally``, so a failing test leaves nothing running. Processes and
ports come from `qmill.server.launcher` and `qmill.server.ports`, the same launcher
the fault campaign and the benchmark use.

A test that drives a system binary (Chromium, nginx) gets it from `require_binary`:
skipped, loudly, where it is absent; failed instead under
``QMILL_REQUIRE_SYSTEM_BINARIES=1``, which ``.ci/run`` sets after installing them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from nats.js.errors import NotFoundError

from qmill.server import constants, embedded, tasks
from qmill.server.bus import Bus
from qmill.server.config import Settings
from qmill.server.launcher import Launcher, settings_env
from qmill.server.ports import free_port, free_ports, wait_port
from qmill.server.processes import Process, Server, stop
from qmill.server.store import Stores

__all__ = [
    "BELL",
    "REPO",
    "Processes",
    "Server",
    "Servers",
    "free_port",
    "free_ports",
    "require_binary",
    "settings_env",
    "stop",
    "submit_task",
    "wait_for",
    "wait_port",
]

REPO = Path(__file__).resolve().parents[1]
BELL = (
    'OPENQASM 3.0; include "stdgates.inc"; qubit[2] q; bit[2] c; h q[0]; cx q[0],q[1]; '
    "c[0] = measure q[0]; c[1] = measure q[1];"
)
# The session's nats-server and redis-server: a launcher of which only the servers run
# (``servers.nats``, ``servers.redis``, ``servers.nats_url``, ``servers.redis_url``).
Servers = Launcher


def random_outcomes(bits: int, *, one_bit_registers: bool = False) -> str:
    """Every qubit in superposition and measured: (nearly) every shot a new outcome, so
    an answer is as large as its shots and width allow. With ``one_bit_registers``, one
    register per bit (each outcome spelt with a space between registers)."""
    if one_bit_registers:
        declared = " ".join(f"bit[1] c{i};" for i in range(bits))
        measured = " ".join(f"c{i}[0] = measure q[{i}];" for i in range(bits))
    else:
        declared = f"bit[{bits}] c;"
        measured = " ".join(f"c[{i}] = measure q[{i}];" for i in range(bits))
    hadamards = " ".join(f"h q[{i}];" for i in range(bits))
    return (
        f'OPENQASM 3.0; include "stdgates.inc"; qubit[{bits}] q; {declared} {hadamards} {measured}'
    )


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """nats-server and redis-server for the whole session, from the one launcher."""
    both = Servers(tmp_path_factory.mktemp("servers"), cwd=REPO)
    try:
        both.start_servers()
        yield both
    finally:
        both.stop()


# Short limits so redelivery happens in seconds, not minutes.
TEST_SETTINGS = {
    "limits": {"max_execution_seconds": 30.0},
    "nats": {"ack_wait_seconds": 5.0},
    "worker": {"max_attempts": 2, "grace_period_seconds": 5.0, "max_concurrent_tasks": 2},
    "log": {"format": "text"},
}


@pytest.fixture
def settings(servers: Servers) -> Settings:
    return Settings.model_validate(
        {
            **TEST_SETTINGS,
            "nats": {**TEST_SETTINGS["nats"], "url": servers.nats_url},
            "redis": {"url": servers.redis_url},
        }
    )


@pytest.fixture
async def clean(servers: Servers, settings: Settings) -> AsyncIterator[None]:
    """An empty Redis and no stream or consumer, so each test starts from nothing."""
    redis.Redis(port=servers.redis.port).flushall()
    bus = Bus(settings, name="test-cleaner")
    js = await bus.connect()
    with contextlib.suppress(NotFoundError):
        await js.delete_stream(constants.STREAM_NAME)
    await bus.close()
    return


@pytest.fixture
async def stores(settings: Settings, clean: None) -> AsyncIterator[Stores]:
    s = Stores.open(
        settings.redis.url, result_ttl_seconds=settings.redis.result_ttl_seconds, socket_timeout=2.0
    )
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def bus(settings: Settings, clean: None) -> AsyncIterator[Bus]:
    b = Bus(settings, name="test")
    try:
        await b.connect()
        yield b
    finally:
        await b.close()


@dataclass
class Processes:
    """Starts child processes for a test and stops every one of them afterwards."""

    env: dict[str, str]
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: Path | None = None

    def start(self, argv: list[str], **env: str) -> subprocess.Popen[bytes]:
        assert self.logs is not None
        name = str(len(self.started))
        log = self.logs / f"{name}.log"
        proc = Process(name, argv, env={**self.env, **env}, log=log, cwd=REPO).spawn()
        self.started.append(proc)
        return proc

    def worker(self, **env: str) -> subprocess.Popen[bytes]:
        return self.start([embedded.binary("qmill-worker")], **env)


@pytest.fixture
def procs(settings: Settings, tmp_path: Path) -> Iterator[Processes]:
    p = Processes(env=settings_env(settings), logs=tmp_path)
    try:
        yield p
    finally:
        for proc in p.started:
            stop(proc)


async def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.05) -> None:
    """Poll an async or sync predicate until truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        await asyncio.sleep(interval)
    raise TimeoutError("condition not met in time")


def wait_until(
    predicate: Callable[[], object], timeout: float, seen: Callable[[], object] = lambda: None
) -> None:
    """`wait_for` for code that is not async: poll a predicate until truthy, failing
    with what ``seen`` reports when it is not within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not within {timeout} s; seen: {seen()}"
        time.sleep(0.05)


async def submit_task(
    settings: Settings, stores: Stores, bus: Bus, circuit: str = BELL, shots: int = 1024
) -> str:
    """Submit through the submit function's core (no HTTP); the new task's id."""
    body = {"quantum_circuit": circuit, "shots": shots}
    return (await tasks.submit(body, settings, stores, bus)).task_id


# Set by .ci/run, which installs every system binary the suite drives: there a missing
# one fails its tests instead of skipping them.
REQUIRE_BINARIES_ENV = "QMILL_REQUIRE_SYSTEM_BINARIES"
# System directories that are often not on a user's PATH (Debian's nginx is in /usr/sbin).
SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")
# What was skipped for a missing binary, repeated at the end of the run.
MISSING_BINARIES: dict[str, str] = {}


def find_binary(name_or_path: str) -> str | None:
    """An executable path: a path as given, a bare name on PATH or in the sbin directories."""
    if os.sep in name_or_path:
        path = Path(name_or_path)
        return str(path) if path.is_file() and os.access(path, os.X_OK) else None
    search = os.pathsep.join([os.environ.get("PATH", os.defpath), *SBIN])
    return shutil.which(name_or_path, path=search)


def require_binary(name_or_path: str, why: str) -> str:
    """The system binary a test drives, or a loud skip where it is absent.

    ``make test`` must pass on a machine with only Python and pip, so a missing browser
    or nginx skips the tests that need it, with the reason in the summary and in a
    section of its own at the end. Under ``QMILL_REQUIRE_SYSTEM_BINARIES=1`` (CI,
    which installs them) it fails instead, so a check CI should run is never skipped.
    """
    found = find_binary(name_or_path)
    if found is not None:
        return found
    message = f"system binary {name_or_path} not found: {why}"
    if os.environ.get(REQUIRE_BINARIES_ENV) == "1":
        pytest.fail(f"{message} ({REQUIRE_BINARIES_ENV}=1 requires it)", pytrace=False)
    MISSING_BINARIES[name_or_path] = why
    pytest.skip(f"{message} (set {REQUIRE_BINARIES_ENV}=1 to fail instead)")


# --- pytest-xdist: `make test` runs ``pytest -n 2 --dist loadscope`` --------------------------
@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadscope`` hands out the suite's own work units (tests/xdist_units.py):
    a module each, the load-sensitive modules together, first."""
    if config.getvalue("dist") != "loadscope":
        return None
    from tests.xdist_units import UnitScheduling

    return UnitScheduling(config, log)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On an xdist worker: the load-sensitive unit first (see tests/xdist_units.py)."""
    if hasattr(config, "workerinput"):
        from tests.xdist_units import first_the_load_sensitive

        first_the_load_sensitive(items)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not MISSING_BINARIES:
        return
    terminalreporter.section("MISSING SYSTEM BINARIES: tests skipped", red=True, bold=True)
    for name, why in MISSING_BINARIES.items():
        terminalreporter.write_line(f"{name}: {why}", red=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """In CI (CI=true) a skipped test fails: CI installs everything the suite needs, so a
    skip there would hide a check that did not run."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if os.environ.get("CI") == "true" and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI: {report.longrepr}"
