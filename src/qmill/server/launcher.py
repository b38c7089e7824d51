"""A whole qmill system as child processes, for tests, the fault campaign and the benchmark.

One launcher, two ways to run the same commands on ports from `qmill.server.ports`:

* `Launcher.start` starts each service of `embedded.services` itself (nats-server,
  redis-server, the API: the three functions and the gateway with ``[embedded]
  topology = "split"``, the one combined process by default; ``qmill-worker``
  processes), so a
  caller can kill, pause or restart any one of them and nothing restarts it behind its
  back. Every process gets the launcher's full `Settings` as ``QMILL_*`` variables.
* `Launcher.up` runs ``qmill up`` itself: the system exactly as a user starts it,
  supervisor included, with only its ports and data directory set (the rest comes from
  ``config.toml`` and the defaults, as for the user).

The processes themselves (`Process`, `Server`, `Worker`) are in `qmill.server.processes`.
Every process a launcher starts carries ``QMILL_LAUNCH_MARK`` in its environment, and
children inherit it: that is how `Launcher.leftovers` finds anything still running,
grandchildren included, and why `Launcher.stop` can promise to leave nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import psutil

from qmill.server import constants, embedded
from qmill.server.config import Settings, env_name
from qmill.server.ports import free_port, free_ports
from qmill.server.processes import Process, Server, Worker, signal_group

MARK_ENV = "QMILL_LAUNCH_MARK"
# `qmill up` starts every service in turn before its gateway listens.
UP_READY_TIMEOUT_SECONDS = 120.0
# On SIGTERM `qmill up` lets its workers finish within their grace period (config.toml's,
# which the launcher does not read), then stops everything else.
UP_STOP_TIMEOUT_SECONDS = 90.0


def base_env() -> dict[str, str]:
    """This process's environment without any ``QMILL_*``: a launched system is configured
    only by what its launcher sets, never by the caller's shell."""
    return {k: v for k, v in os.environ.items() if not k.startswith("QMILL_")}


def settings_env(settings: Settings) -> dict[str, str]:
    """``base_env`` plus every key of ``settings`` as its ``QMILL_*`` variable."""
    env = base_env()
    for section, values in settings.model_dump(mode="json").items():
        for key, value in values.items():
            # A list (api_key_hashes, allowed_hosts) is read back as JSON, not as repr.
            text = json.dumps(value) if isinstance(value, list | dict) else str(value)
            env[env_name(section, key)] = text
    return env


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
    3}}``); the launcher adds the ports and the data directory, and ``settings`` is the
    result: what every process `start` starts runs with. ``cwd`` is where the processes
    run (``qmill up`` reads ``./config.toml`` there).
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
        embedded_config = (config or {}).get("embedded", {})
        self.placement: dict[str, dict[str, Any]] = {
            "server": {"port": self.port},
            "embedded": {
                "data_dir": str(root / "data"),
                "functions_base_port": free_ports(len(constants.FUNCTION_NAMES)),
            },
        }
        # A server the launcher starts gets a free port; one it does not start
        # ([embedded] start_nats / start_redis false) is wherever ``config`` says.
        if embedded_config.get("start_nats", True):
            self.placement["nats"] = {"url": f"nats://127.0.0.1:{free_port()}"}
        if embedded_config.get("start_redis", True):
            self.placement["redis"] = {"url": f"redis://127.0.0.1:{free_port()}"}
        self.settings = Settings.model_validate(_merge(config or {}, self.placement))
        self.env = {**settings_env(self.settings), MARK_ENV: self.mark}
        plan = embedded.services(self.settings)
        self._services = {service.name: service for service in plan}
        self.nats = self._server("nats")
        self.redis = self._server("redis")
        self.servers = [server for server in (self.nats, self.redis) if server is not None]
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

    def _server(self, name: str) -> Server | None:
        """The server the launcher starts, or None when it runs against one it did not."""
        if name not in self._services:
            return None
        port = self._services[name].port
        assert port is not None
        data = self.settings.embedded.data_dir / name
        argv = self._services[name].argv
        return Server(name, port, data, env=self.env, log=self.root / f"{name}.log", argv=argv)

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
        """nats-server and redis-server (those the launcher runs), ready when this returns."""
        for server in self.servers:
            server.start()

    def start(self, workers: int = 2, **worker_env: str) -> None:
        """Every service, ready when this returns; ``worker_env`` applies to every worker
        started from now on (they share one JetStream consumer, so must agree on it)."""
        self.worker_env = worker_env
        self.start_servers()
        for name in [n for n in self._services if n in embedded.API_SERVICES]:
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
            stop_timeout=UP_STOP_TIMEOUT_SECONDS,
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
        servers = [s for s in self.servers if s.proc is not None]
        return [*first, *servers, *self.services, *self.workers]

    def leftovers(self) -> list[str]:
        """Processes still running that this launcher started, or that they started."""
        found = []
        for proc in self._marked():
            with contextlib.suppress(psutil.Error):
                found.append(f"{proc.pid} {' '.join(proc.cmdline())[:120]}")
        return found

    def _marked(self) -> list[psutil.Process]:
        """Every live process carrying the mark, and every descendant of one.

        The descendants count too: a process may overwrite its environment, as
        redis-server does when it sets its title, and then only its parent tells
        whose it is (so they are collected before any parent is killed).
        """
        found: dict[int, psutil.Process] = {}
        for proc in psutil.process_iter():
            try:
                if proc.environ().get(MARK_ENV) == self.mark:
                    found[proc.pid] = proc
                    found.update((c.pid, c) for c in proc.children(recursive=True))
            except psutil.Error:
                continue
        return [proc for proc in found.values() if _alive(proc)]

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
        """SIGKILL every marked process and its group; wait (briefly) until they are gone."""
        marked = self._marked()
        for proc in marked:
            signal_group(proc.pid, signal.SIGKILL)
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(marked, timeout=5)


def _alive(proc: psutil.Process) -> bool:
    try:
        return bool(proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False
