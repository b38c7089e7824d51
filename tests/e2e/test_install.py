"""`qmill up` from a regular install, run from a directory that is not the checkout.

The wheel is built from a copy of the sources and unpacked into a directory that
``PYTHONPATH`` puts ahead of the development install; the system is then started from an
empty directory. Anything the installed package needs at run time (the functions' modules,
the web page, the OpenAPI document) must therefore come from the wheel, never from the
source tree.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest

from qmill.server.launcher import Launcher
from tests.conftest import BELL, REPO

pytestmark = pytest.mark.e2e
SOURCES = ("pyproject.toml", "README.md", "src", "worker")


def pip(*args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the sources (the build writes next to them)."""
    root = tmp_path_factory.mktemp("build")
    for name in SOURCES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, root / name)
    out = root / "dist"
    pip("wheel", "--no-deps", "--quiet", "-w", str(out), str(root))
    (built,) = out.glob("qmill-*.whl")
    return built


@pytest.fixture(scope="module")
def site(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    pip("install", "--no-deps", "--quiet", "--target", str(target), str(wheel))
    return target


def test_the_wheel_carries_what_the_server_loads_at_run_time(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in (
        "qmill/__init__.py",
        "qmill/client.py",
        "qmill/server/functions/submit.py",
        "qmill/server/functions/result.py",
        "qmill/server/functions/health.py",
        "qmill/server/static/index.html",
        "qmill/server/openapi/openapi.json",
        "qmill/py.typed",
        "qmill_worker/consumer.py",
    ):
        assert name in names, name
    assert not any(n.startswith(("tests/", "bench/", "functions/")) for n in names)


def test_an_installed_package_resolves_inside_the_install(site: Path, tmp_path: Path) -> None:
    code = (
        "import qmill, qmill.server.embedded as e; "
        "print(qmill.__file__); print(e.function_source('submit'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    package, source = done.stdout.split()
    assert Path(package).is_relative_to(site)
    assert Path(source) == site / "qmill" / "server" / "functions" / "submit.py"


def test_qmill_up_runs_from_the_install_outside_the_checkout(site: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    launcher = Launcher(tmp_path, cwd=elsewhere)
    try:
        launcher.up(PYTHONPATH=str(site), QMILL_WORKER__PROCESSES="1")
        launcher.wait_healthy()
        assert launcher.supervisor is not None and launcher.supervisor.proc is not None
        # The one API process says which function files it serves (the split topology's
        # processes name them on their command lines: the same `function_source`).
        (served,) = [e for e in launcher.supervisor.events() if "sources" in e]
        sources = set(served["sources"])
        assert len(sources) == 3
        assert all(Path(s).is_relative_to(site) for s in sources), sources
        with httpx.Client(base_url=launcher.url, timeout=30) as client:
            created = client.post("/tasks", json={"quantum_circuit": BELL, "shots": 64})
            assert created.status_code == 201, created.text
            task_id = created.json()["task_id"]
            done = client.get(f"/tasks/{task_id}", params={"wait": 20})
            assert done.json()["status"] == "completed", done.text
            assert sum(done.json()["result"].values()) == 64
            assert set(done.json()["result"]) <= {"00", "11"}
            page = client.get("/")
            assert page.status_code == 200 and "<html" in page.text.lower()
            assert client.get("/openapi.json").json()["openapi"].startswith("3.")
    finally:
        left = launcher.stop()
    assert left == []
