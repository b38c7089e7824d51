"""A whole qmill system as child processes, for tests, the fault campaign and the benchmark.

One launcher, two ways to run the same commands on ports from `qmill.server.ports`:

* `Launcher.start` starts each service of `embedded.services` itself (nats-server,
  redis-server, the three functions, the gateway, ``qmill-worker`` processes), so a
  caller can kill, pause or restart any one of them and nothing restarts it behind its
  back. Every process gets the launcher's full `Settings` as ``QMILL_*`` variables.
* `Launcher.up` runs ``qmill up`` itself: the system exactly as a user starts it,
  supervisor included, with only its ports and data directory set (the rest comes from
  ``config.toml`` and the defaults, as for the user).

Every process a launcher starts carries ``QMILL_LAUNCH_MARK`` in its environment, and
children inherit it: that is how `Launcher.leftovers` finds anything still running,
grandchildren included, and why `Launcher.stop` can promise to leave nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import psutil

from qmill.server import constants, embedded
from qmill.server.config import Settings, env_name
from qmill.server.ports import free_port, free_ports, wait_port

MARK_ENV = "QMILL_LAUNCH_MARK"
READY_TIMEOUT_SECONDS = 60.0
# `qmill up` starts every service in turn before its gateway listens.
UP_READY_TIMEOUT_SECONDS = 120.0


def base_env() -> dict[str, str]:
    """This process's environment without any ``QMILL_*``: a launched system is configured
    only by what its launcher sets, never by the caller's shell."""
    return {k: v for k, v in os.environ.items() if not k.startswith("QMILL_")}


def settings_env(settings: Settings) -> dict[str, str]:
    """``base_env`` plus every key of ``settings`` as its ``QMILL_*`` variable."""
    env = base_env()
    for section, values in settings.model_dump(mode="json").items():
        for key, value in values.items():
            env[env_name(section, key)] = str(value)
    return env


def stop(proc: subprocess.Popen[bytes], timeout: float = embedded.STOP_TIMEOUT_SECONDS) -> None:
    """SIGTERM, then SIGKILL; the process group too, so no grandchild survives."""
    if proc.poll() is None:
        _signal_group(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    _signal_group(proc.pid, signal.SIGKILL)
    proc.wait()


def _signal_group(pid: int, sig: signal.Signals) -> None:
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

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} was never started"
        return self.proc.pid

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start the process and return at once."""
        out = open(self.log, "ab") if self.log is not None else None  # noqa: SIM115
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

    def output(self) -> str:
        if self.log is None:
            return ""
        with contextlib.suppress(FileNotFoundError):
            return self.log.read_text(errors="replace")
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
    ) -> None:
        commands = {"nats": embedded.nats_command, "redis": embedded.redis_command}
        super().__init__(name, commands[name](port, data_dir), port=port, env=env, log=log)
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
        while "pulling tasks" not in self.output():
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


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class Launcher:
    """A qmill system on free ports with everything under ``root`` (data, logs).

    ``config`` holds settings by section, like config.toml (``{"worker": {"max_attempts":
    3}}``); the launcher adds the ports and the data directory. ``cwd`` is where the
    processes run (``qmill up`` reads ``./config.toml`` there).
    """

    def __init__(
        self,
        root: Path,
        config: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        mark: str | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.root = root
        self.cwd = cwd
        self.mark = mark or uuid.uuid4().hex[:12]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.placement: dict[str, dict[str, Any]] = {
            "server": {"port": self.port},
            "nats": {"url": f"nats://127.0.0.1:{free_port()}"},
            "redis": {"url": f"redis://127.0.0.1:{free_port()}"},
            "embedded": {
                "data_dir": str(root / "data"),
                "functions_base_port": free_ports(len(constants.FUNCTION_NAMES)),
            },
        }
        self.settings = Settings.model_validate(_merge(config or {}, self.placement))
        self.env = {**settings_env(self.settings), MARK_ENV: self.mark}
        plan = embedded.services(self.settings)
        self._services = {service.name: service for service in plan}
        self.nats = self._server("nats")
        self.redis = self._server("redis")
        self.services: list[Process] = []
        self.workers: list[Worker] = []
        self.worker_env: dict[str, str] = {}
        self.supervisor: Process | None = None
        self._down = False

    @property
    def nats_url(self) -> str:
        return self.settings.nats.url

    @property
    def redis_url(self) -> str:
        return self.settings.redis.url

    def _server(self, name: str) -> Server:
        port = self._services[name].port
        assert port is not None
        data = self.settings.embedded.data_dir / name
        return Server(name, port, data, env=self.env, log=self.root / f"{name}.log")

    def _process(self, service: embedded.Service) -> Process:
        return Process(
            service.name,
            service.argv,
            port=service.port,
            env={**self.env, **service.env},
            log=self.root / f"{service.name}.log",
            cwd=self.cwd,
            stop_timeout=service.stop_timeout,
        )

    # --- start, one process per service ----------------------------------------------------
    def start_servers(self) -> None:
        """nats-server and redis-server, ready when this returns."""
        for server in (self.nats, self.redis):
            server.start()

    def start(self, workers: int = 2, **worker_env: str) -> None:
        """Every service, ready when this returns; ``worker_env`` applies to every worker
        started from now on (they share one JetStream consumer, so must agree on it)."""
        self.worker_env = worker_env
        self.start_servers()
        for name in (*constants.FUNCTION_NAMES, "gateway"):
            process = self._process(self._services[name])
            process.spawn()
            self.services.append(process)
        started = [self.add_worker() for _ in range(workers)]
        for process in [*self.services, *started]:
            process.wait_ready()

    def add_worker(self, **env: str) -> Worker:
        """One more ``qmill-worker`` (as a supervisor replacing a dead one would), started
        but not waited for: `Worker.wait_ready` waits until it pulls."""
        index = len(self.workers)
        worker_id = f"worker-{index + 1}"
        template = self._services["worker-1"]
        extra = dict(template.env)
        metrics = self.settings.worker.metrics_port
        if metrics:  # one port per worker process on this host
            extra[env_name("worker", "metrics_port")] = str(metrics + index)
        heartbeat = self.root / f"{worker_id}.alive"
        worker = Worker(
            worker_id,
            template.argv,
            heartbeat,
            env={
                **self.env,
                **extra,
                env_name("worker", "heartbeat_file"): str(heartbeat),
                **self.worker_env,
                **env,
            },
            log=self.root / f"{worker_id}.log",
            cwd=self.cwd,
            stop_timeout=template.stop_timeout,
        )
        worker.spawn()
        self.workers.append(worker)
        return worker

    # --- start, the way a user does ----------------------------------------------------------
    def up_env(self, **env: str) -> dict[str, str]:
        """The environment `up` gives ``qmill up``: ports, data directory, ``env``."""
        placement = {
            env_name(section, key): str(value)
            for section, values in self.placement.items()
            for key, value in values.items()
        }
        return {**base_env(), **placement, MARK_ENV: self.mark, **env}

    def up(self, **env: str) -> Process:
        """``qmill up`` on this launcher's ports and data directory, ready when its gateway
        listens; ``env`` adds ``QMILL_*`` settings (anything else comes from config.toml)."""
        self.supervisor = Process(
            "qmill-up",
            [embedded.binary("qmill"), "up"],
            port=self.port,
            env=self.up_env(**env),
            log=self.root / "qmill-up.log",
            cwd=self.cwd,
            # It stops its workers within their grace period, then everything else.
            stop_timeout=90.0,
        )
        self.supervisor.start(UP_READY_TIMEOUT_SECONDS)
        return self.supervisor

    def wait_healthy(self, timeout: float = UP_READY_TIMEOUT_SECONDS) -> None:
        """Until ``GET /health`` answers 200 (NATS and Redis reachable from the functions)."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/health", timeout=5).status_code == 200:
                    return
            if self.supervisor is not None and not self.supervisor.alive():
                raise RuntimeError(f"qmill up exited; see {self.supervisor.log}")
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.url}/health not 200 after {timeout} s")
            time.sleep(0.1)

    # --- stop ------------------------------------------------------------------------------
    def started(self) -> list[Process]:
        """Every process started directly, in start order."""
        first: list[Process] = [self.supervisor] if self.supervisor is not None else []
        servers = [s for s in (self.nats, self.redis) if s.proc is not None]
        return [*first, *servers, *self.services, *self.workers]

    def leftovers(self) -> list[str]:
        """Processes still running that this launcher started, or that they started."""
        found = []
        for proc in psutil.process_iter():
            try:
                if proc.status() == psutil.STATUS_ZOMBIE:
                    continue
                if proc.environ().get(MARK_ENV) == self.mark:
                    found.append(f"{proc.pid} {' '.join(proc.cmdline())[:120]}")
            except psutil.Error:
                continue
        return found

    def stop(self, *, kill: bool = False) -> list[str]:
        """Stop everything, servers last; return what was still running after that (which is
        then SIGKILLed, so nothing is left either way).

        Politely (SIGTERM, then SIGKILL after each service's stop timeout), or with
        ``kill`` at once: the supervisor is frozen first so it restarts nothing, then
        every marked process is SIGKILLed with its process group.
        """
        if self._down:
            return self.leftovers()
        self._down = True
        if kill:
            if self.supervisor is not None and self.supervisor.alive():
                self.supervisor.pause()
            self._kill_marked()
        for process in reversed(self.started()):
            process.stop()
        left = self.leftovers()
        self._kill_marked()
        return left

    def _kill_marked(self) -> None:
        for line in self.leftovers():
            pid = int(line.split()[0])
            _signal_group(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
