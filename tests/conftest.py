"""Fixtures: real nats-server and redis-server on free ports, real worker processes.

Servers start once per test session (as nats.py's own suite does) and every test
starts from an empty Redis and a fresh stream. Every process a fixture starts is
stopped in a ``finally``, so a failing test leaves nothing running.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from nats.js.errors import NotFoundError

from qmill.server import constants, embedded
from qmill.server.bus import Bus
from qmill.server.config import Settings
from qmill.server.store import Stores

REPO = Path(__file__).resolve().parents[1]
BELL = (
    'OPENQASM 3.0; include "stdgates.inc"; qubit[2] q; bit[2] c; h q[0]; cx q[0],q[1]; '
    "c[0] = measure q[0]; c[1] = measure q[1];"
)


def _port_range() -> range:
    """Where test servers get their ports: outside the kernel's ephemeral range.

    A port the kernel hands out for ``bind(0)`` comes from the ephemeral range, where
    any outgoing connection of any test can take it between the moment a test picks it
    and the moment its server binds it (seen: `qmill up` failing at start because a
    function's port had become some client's local port).
    """
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    if low - 10000 >= 2000:
        return range(10000, low)
    return range(high + 1, 65536)


_PORTS = _port_range()
# Handed out in order from a random start, so the servers of one test run never pick
# the same port, and two runs on one machine rarely start near each other.
_next_port = itertools.count(random.randrange(len(_PORTS)))


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive ports that nothing holds now."""
    for _ in range(len(_PORTS)):
        base = _PORTS[next(_next_port) % (len(_PORTS) - count)]
        if all(_bindable(base + i) for i in range(count)):
            for _ in range(count - 1):
                next(_next_port)
            return base
    raise RuntimeError(f"no {count} consecutive free ports in {_PORTS}")


def free_port() -> int:
    return free_ports(1)


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on port {port}")


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL; the process group too, so no grandchild survives."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@dataclass
class Server:
    """A real server process that a test may kill and restart on the same port and data."""

    name: str
    port: int
    data_dir: Path
    proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        if self.name == "nats":
            return embedded.nats_command(self.port, self.data_dir)
        return embedded.redis_command(self.port, self.data_dir)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.command(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_port(self.port)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)


@dataclass
class Servers:
    nats: Server
    redis: Server

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.nats.port}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis.port}"


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    root = tmp_path_factory.mktemp("servers")
    both = Servers(
        nats=Server("nats", free_port(), root / "nats"),
        redis=Server("redis", free_port(), root / "redis"),
    )
    try:
        both.nats.start()
        both.redis.start()
        yield both
    finally:
        both.nats.stop()
        both.redis.stop()


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


def settings_env(settings: Settings) -> dict[str, str]:
    """The same settings as QMILL_* variables, for child processes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QMILL_")}
    for section, values in settings.model_dump(mode="json").items():
        for key, value in values.items():
            env[f"QMILL_{section.upper()}__{key.upper()}"] = str(value)
    return env


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
        with open(self.logs / f"{len(self.started)}.log", "wb") as log:
            # The child keeps its own copy of the descriptor.
            proc = subprocess.Popen(
                argv,
                env={**self.env, **env},
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started.append(proc)
        return proc

    def worker(self, **env: str) -> subprocess.Popen[bytes]:
        return self.start(
            [shutil.which("qmill-worker", path=str(Path(sys.executable).parent)) or "qmill-worker"],
            **env,
        )


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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """In CI (CI=true) a skipped test fails: CI installs everything the suite needs, so a
    skip there would hide a check that did not run."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if os.environ.get("CI") == "true" and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI: {report.longrepr}"
