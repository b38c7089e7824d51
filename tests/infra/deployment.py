"""What the deployments (infra/compose.yaml and infra/terraform) agree on: image names,
the image tag and ports.

Compose and Terraform are written in parallel; both suites compare against
:func:`expected`, which reads ``infra/compose.yaml`` when it exists and otherwise
returns the values agreed for it (``AGREED``), saying which one it used.
"""

from __future__ import annotations

import itertools
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "infra" / "compose.yaml"


def project_version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as f:
        version: str = tomllib.load(f)["project"]["version"]
    return version


@dataclass(frozen=True)
class Deployment:
    """Images (name -> tag) and the container ports of each role."""

    source: str
    images: dict[str, str]
    function_port: int
    nats_client_port: int
    nats_monitor_port: int
    redis_port: int
    gateway_port: int
    # Ports compose declares per role, when it declares any (empty: not stated).
    declared: dict[str, set[int]] = field(default_factory=dict)


FUNCTIONS_IMAGE = "qmill-functions"
WORKER_IMAGE = "qmill-worker"

AGREED = Deployment(
    source="agreed values (infra/compose.yaml not present)",
    images={FUNCTIONS_IMAGE: project_version(), WORKER_IMAGE: project_version()},
    function_port=8080,
    nats_client_port=4222,
    nats_monitor_port=8222,
    redis_port=6379,
    gateway_port=8000,
)

_DEFAULTED = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-([^}]*))?\}")


def _substitute(text: str) -> str:
    """Compose's ${VAR:-default} / ${VAR} with the defaults (an unset variable is "")."""
    return _DEFAULTED.sub(lambda m: m.group(1) or "", text)


def split_image(reference: str) -> tuple[str, str]:
    """("qmill-worker", "0.1.0") from "registry/path/qmill-worker:0.1.0"."""
    reference = _substitute(reference).split("@", 1)[0]
    last = reference.rsplit("/", 1)[-1]
    name, _, tag = last.partition(":")
    return name, tag or "latest"


def _ports(service: dict[str, Any]) -> set[int]:
    found: set[int] = set()
    for entry in service.get("ports", []) or []:
        if isinstance(entry, dict):
            found.add(int(entry["target"]))
        else:
            target = _substitute(str(entry)).split("/", 1)[0].rsplit(":", 1)[-1]
            found.add(int(target.split("-", 1)[0]))
    for entry in service.get("expose", []) or []:
        found.add(int(_substitute(str(entry)).split("/", 1)[0]))
    command = service.get("command") or []
    words = command.split() if isinstance(command, str) else [str(w) for w in command]
    for flag, value in itertools.pairwise(words):
        if flag in ("--port", "-p") and value.isdigit():
            found.add(int(value))
    return found


def _role(name: str, service: dict[str, Any]) -> str | None:
    image = split_image(str(service.get("image", "")))[0] if service.get("image") else ""
    if image == FUNCTIONS_IMAGE:
        return "function"
    if image == WORKER_IMAGE:
        return "worker"
    for role in ("nats", "redis", "valkey", "gateway", "nginx"):
        if role in name or role in image:
            return {"valkey": "redis", "nginx": "gateway"}.get(role, role)
    return None


def load_compose() -> dict[str, Any] | None:
    if not COMPOSE_FILE.is_file():
        return None
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict), f"{COMPOSE_FILE} is not a mapping"
    return data


def from_compose(compose: dict[str, Any]) -> Deployment:
    images: dict[str, str] = {}
    declared: dict[str, set[int]] = {}
    for name, service in (compose.get("services") or {}).items():
        if service.get("image"):
            image, tag = split_image(str(service["image"]))
            if image in (FUNCTIONS_IMAGE, WORKER_IMAGE):
                images[image] = tag
        role = _role(str(name), service)
        if role:
            declared.setdefault(role, set()).update(_ports(service))
    return Deployment(
        source=str(COMPOSE_FILE.relative_to(ROOT)),
        images=images,
        function_port=AGREED.function_port,
        nats_client_port=AGREED.nats_client_port,
        nats_monitor_port=AGREED.nats_monitor_port,
        redis_port=AGREED.redis_port,
        gateway_port=AGREED.gateway_port,
        declared=declared,
    )


def expected() -> Deployment:
    """The facts a deployment must match: compose's when it exists, else the agreed ones."""
    compose = load_compose()
    return AGREED if compose is None else from_compose(compose)
