"""The Dockerfiles, checked without building them (no Docker engine here): multi-stage,
pinned slim base, unprivileged runtime, dependencies in a layer of their own, a build
context that holds exactly what they copy. hadolint lints them in `make lint`.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from qmill.server import constants, embedded
from tests.infra.conftest import DOCKERFILES, REPO

REQUIREMENTS_SCRIPT = REPO / "infra" / "docker" / "requirements.py"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
# What a final image must never contain: compilers and the like.
BUILD_TOOLS = ("gcc", "g++", "build-essential", "make ", "clang", "cargo", "rustc")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def instructions(path: Path) -> list[Instruction]:
    """A Dockerfile's instructions, with continuation lines joined and comments dropped."""
    out: list[Instruction] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append(Instruction(keyword.upper(), " ".join(args.split())))
    return out


def stages(path: Path) -> list[list[Instruction]]:
    found: list[list[Instruction]] = []
    for ins in instructions(path):
        if ins.keyword == "FROM":
            found.append([])
        found[-1].append(ins)
    return found


def copy_sources(ins: Instruction) -> list[str]:
    """The build-context paths a COPY reads (none for COPY --from=stage)."""
    words = [w for w in shlex.split(ins.args) if not w.startswith("--")]
    if "--from=" in ins.args:
        return []
    return words[:-1]


def exec_form(ins: Instruction) -> list[str]:
    value = json.loads(ins.args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_multi_stage_on_a_pinned_slim_base(kind: str) -> None:
    found = stages(DOCKERFILES[kind])
    assert len(found) >= 2
    bases = {stage[0].args.split()[0] for stage in found}
    (base,) = bases
    name, _, tag = base.partition(":")
    assert name == "python"
    assert re.fullmatch(r"3\.11\.\d+-slim-\w+", tag), base
    assert found[0][0].args.split()[-1] == "build"


def test_both_images_share_one_base() -> None:
    bases = {
        ins.args.split()[0]
        for path in DOCKERFILES.values()
        for ins in instructions(path)
        if ins.keyword == "FROM"
    }
    assert len(bases) == 1


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_final_stage_is_unprivileged_and_has_no_build_tools(kind: str) -> None:
    final = stages(DOCKERFILES[kind])[-1]
    users = [ins.args for ins in final if ins.keyword == "USER"]
    assert users, "the final stage runs as root"
    uid = users[-1].split(":")[0]
    assert uid not in {"0", "root"}
    for ins in final:
        if ins.keyword == "RUN":
            assert "apt-get install" not in ins.args and "apk add" not in ins.args
            assert not any(tool in ins.args for tool in BUILD_TOOLS), ins.args
    copies = [ins.args for ins in final if ins.keyword == "COPY"]
    assert any(c.startswith("--from=build /opt/venv") for c in copies)


@pytest.mark.parametrize(("kind", "extras"), [("functions", ["server"]), ("worker", ["worker"])])
def test_dependencies_are_a_layer_of_their_own(kind: str, extras: list[str]) -> None:
    """In the build stage the dependencies are installed from pyproject.toml and the lock
    alone, before any source is copied, so a code change reuses the cached dependency layer."""
    build = stages(DOCKERFILES[kind])[0]
    install = next(
        i for i, ins in enumerate(build) if ins.keyword == "RUN" and "requirements.py" in ins.args
    )
    before = [s for ins in build[:install] if ins.keyword == "COPY" for s in copy_sources(ins)]
    assert sorted(before) == ["infra/docker/requirements.py", "pyproject.toml", "requirements.lock"]
    after = [s for ins in build[install:] if ins.keyword == "COPY" for s in copy_sources(ins)]
    assert {"src/", "worker/"} <= set(after)
    # The extras it installs: [server] for the functions, [worker] (which brings [server])
    # for the worker; never [local] or [dev].
    run = build[install].args
    called = re.search(r"python requirements\.py([^>]*)>", run)
    assert called and called.group(1).split() == extras
    assert "--only-binary=:all:" in run
    # The project itself goes in last, without touching the dependencies.
    last = [ins.args for ins in build if ins.keyword == "RUN"][-1]
    assert "--no-deps ." in last


def test_dockerignore_sends_exactly_what_the_images_copy() -> None:
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "the build context is an allowlist"
    allowed = {line[1:] for line in lines if line.startswith("!")}
    copied = {
        src
        for path in DOCKERFILES.values()
        for ins in instructions(path)
        if ins.keyword == "COPY"
        for src in copy_sources(ins)
    }
    assert allowed == copied
    for src in copied:
        assert (REPO / src).exists(), src
    # Local state never reaches an image; containers are configured by QMILL_* alone.
    for local in ("config.toml", ".venv", ".git", ".qmill"):
        assert not any(fnmatch.fnmatch(local, a.rstrip("/")) for a in allowed), local


def test_functions_image_default_command_is_the_embedded_one() -> None:
    final = stages(DOCKERFILES["functions"])[-1]
    (cmd,) = [exec_form(ins) for ins in final if ins.keyword == "CMD"]
    (copy,) = [ins for ins in final if ins.keyword == "COPY" and copy_sources(ins)]
    dest = Path(shlex.split(copy.args)[-1])
    port = next(int(ins.args) for ins in final if ins.keyword == "EXPOSE")
    expected = embedded.function_command(
        "health", port, dest / "health" / "main.py", host="0.0.0.0"
    )
    assert cmd == [Path(expected[0]).name, *expected[1:]]
    assert copy_sources(copy) == ["functions/"]
    assert {p.parent.name for p in (REPO / "functions").glob("*/main.py")} == set(
        constants.FUNCTION_NAMES
    )


def test_worker_image_default_command_is_the_entry_point() -> None:
    final = stages(DOCKERFILES["worker"])[-1]
    (cmd,) = [exec_form(ins) for ins in final if ins.keyword == "CMD"]
    assert cmd == ["qmill-worker"]
    assert cmd[0] in PYPROJECT["project"]["scripts"]


def run_requirements(
    *args: str, lock: Path = REPO / "requirements.lock"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            str(REQUIREMENTS_SCRIPT),
            "--pyproject",
            str(REPO / "pyproject.toml"),
            "--lock",
            str(lock),
            *args,
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def test_requirements_come_from_pyproject_held_by_the_lock() -> None:
    project = PYPROJECT["project"]
    optional = project["optional-dependencies"]
    server = run_requirements("server")
    assert server.returncode == 0, server.stderr
    constraint, *reqs = server.stdout.splitlines()
    assert constraint == f"--constraint {REPO / 'requirements.lock'}"
    assert reqs == project["dependencies"] + optional["server"]
    # [worker] names qmill[server]: its requirements come along, the self-reference does not.
    worker = run_requirements("worker").stdout.splitlines()[1:]
    assert set(worker) == {*reqs, *(r for r in optional["worker"] if not r.startswith("qmill"))}


def test_the_lock_pins_every_requirement_of_every_extra() -> None:
    """`make install` and the images get exact versions only if the lock names them all."""
    extras = list(PYPROJECT["project"]["optional-dependencies"])
    done = run_requirements(*extras)
    assert done.returncode == 0, done.stderr


def test_requirements_refuse_unlocked_or_unknown(tmp_path: Path) -> None:
    lock = tmp_path / "requirements.lock"
    lock.write_text("# comment\nhttpx==0.28.1\n", encoding="utf-8")
    done = run_requirements("server", lock=lock)
    assert done.returncode == 2 and "no pinned version for" in done.stderr
    assert "starlette" in done.stderr and "httpx" not in done.stderr.split("for", 1)[1]
    unknown = run_requirements("no-such-extra")
    assert unknown.returncode == 2 and "no-such-extra" in unknown.stderr


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_the_build_fails_unless_the_venv_holds_exactly_the_locks_versions(kind: str) -> None:
    """The constraint pins only what the lock names; after the last install the build
    checks the virtualenv against the lock (`--verify`) and pip checks its requirements."""
    build = stages(DOCKERFILES[kind])[0]
    last = [ins.args for ins in build if ins.keyword == "RUN"][-1]
    steps = [step.strip() for step in last.split("&&")]
    assert steps[0].endswith("install --no-deps ."), steps
    assert "python requirements.py --verify /opt/venv" in steps[1:], steps
    assert "python -m pip --python /opt/venv/bin/python check" in steps[1:], steps


def fake_venv(root: Path, dists: dict[str, str]) -> Path:
    """A virtualenv's site-packages holding only these distributions' metadata."""
    site = root / "venv" / "lib" / "python3.11" / "site-packages"
    for name, version in dists.items():
        info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8"
        )
    return root / "venv"


def test_verify_refuses_what_the_lock_does_not_pin_or_pins_otherwise(tmp_path: Path) -> None:
    lock = tmp_path / "requirements.lock"
    lock.write_text("# comment\nhttpx==0.28.1\nH11==0.16.0\n", encoding="utf-8")
    exact = fake_venv(tmp_path / "exact", {"httpx": "0.28.1", "h11": "0.16.0", "qmill": "0.1.0"})
    done = run_requirements("--verify", str(exact), lock=lock)
    assert done.returncode == 0, done.stderr  # the project itself is not in the lock
    drifted = fake_venv(tmp_path / "drifted", {"httpx": "0.28.2", "anyio": "4.0.0"})
    done = run_requirements("--verify", str(drifted), lock=lock)
    assert done.returncode == 2
    assert "httpx 0.28.2 (the lock has 0.28.1)" in done.stderr
    assert "anyio 4.0.0 (not in the lock)" in done.stderr
    missing = run_requirements("--verify", str(tmp_path / "nowhere"), lock=lock)
    assert missing.returncode == 2 and "not a virtualenv" in missing.stderr


@pytest.mark.parametrize("extra", ["server", "worker"])
def test_the_locked_versions_meet_the_images_ranges(extra: str) -> None:
    """Each image's requirements, with the lock as constraints, have one solution: the
    lock's version of each is inside its range (else pip refuses the build)."""
    done = run_requirements(extra)
    pins = {
        canonicalize_name(name): version
        for name, version in (
            line.split("==", 1)
            for line in (REPO / "requirements.lock").read_text(encoding="utf-8").splitlines()
            if "==" in line and not line.startswith("#")
        )
    }
    for line in done.stdout.splitlines()[1:]:
        req = Requirement(line)
        pin = pins[canonicalize_name(req.name)]
        assert req.specifier.contains(pin, prereleases=True), (line, pin)
