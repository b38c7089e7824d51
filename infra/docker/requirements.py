"""Print what an image installs: pyproject.toml's requirements for the named extras, held to
the exact versions of requirements.lock.

The images install these in a layer built from pyproject.toml and requirements.lock alone,
before any source is copied, so editing the code does not reinstall qiskit. The output is a
pip requirements file: a ``--constraint`` line naming the lock, then the ranges of the
runtime dependencies and of each extra (an extra that names ``qmill[...]`` brings those
extras' requirements too). A requirement the lock does not pin is refused: an image must
contain what the tests ran against.

The constraint pins every package the lock names, transitive ones included, but it cannot
pin one the lock does not name (a dependency added without `make lock`): pip would take
its newest version. So after installing, the images run ``--verify VENV``, which fails
the build unless every distribution in the virtualenv (but the project itself) is in the
lock at exactly the lock's version.

    python requirements.py [--pyproject PATH] [--lock PATH] [EXTRA ...]
    python requirements.py [--pyproject PATH] [--lock PATH] --verify VENV
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")


def canonical(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def locked(lock: Path) -> dict[str, str]:
    """``name -> version`` of every ``name==version`` line of the lock file."""
    pins: dict[str, str] = {}
    for line in lock.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[canonical(name)] = version.strip()
    return pins


def requirements(pyproject: Path, extras: Sequence[str] = ()) -> list[str]:
    """The runtime dependencies and those of ``extras``, self-references expanded."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    found: list[str] = []
    pending, seen = list(extras), set()
    for req in project["dependencies"]:
        found.append(req)
    while pending:
        extra = pending.pop(0)
        if extra in seen:
            continue
        seen.add(extra)
        if extra not in optional:
            raise ValueError(f"{pyproject}: no extra {extra!r} (have {', '.join(optional)})")
        for req in optional[extra]:
            match = _NAME.match(req)
            if match and canonical(match.group(1)) == canonical(project["name"]):
                pending += [e.strip() for e in (match.group(2) or "").split(",") if e.strip()]
            elif req not in found:
                found.append(req)
    return found


def check_locked(reqs: Sequence[str], pins: dict[str, str], lock: Path) -> None:
    """ValueError naming every requirement that the lock does not pin."""
    missing = []
    for req in reqs:
        match = _NAME.match(req)
        if match is None or canonical(match.group(1)) not in pins:
            missing.append(req)
    if missing:
        raise ValueError(f"{lock}: no pinned version for {', '.join(missing)}")


def installed(venv: Path) -> dict[str, str]:
    """``name -> version`` of every distribution in the virtualenv ``venv``."""
    found: dict[str, str] = {}
    sites = sorted(venv.glob("lib/python*/site-packages"))
    if not sites:
        raise ValueError(f"{venv}: not a virtualenv (no lib/python*/site-packages)")
    for dist in metadata.distributions(path=[str(s) for s in sites]):
        found[canonical(dist.metadata["Name"])] = dist.version
    return found


def verify(venv: Path, pins: dict[str, str], lock: Path, project: str) -> None:
    """ValueError naming every distribution in ``venv`` that is not the lock's: unpinned,
    or at another version. ``project`` (qmill itself) is not in the lock."""
    wrong = []
    for name, version in sorted(installed(venv).items()):
        if name == canonical(project):
            continue
        if name not in pins:
            wrong.append(f"{name} {version} (not in the lock)")
        elif pins[name] != version:
            wrong.append(f"{name} {version} (the lock has {pins[name]})")
    if wrong:
        raise ValueError(f"{venv} does not hold {lock}'s versions: {', '.join(wrong)}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"))
    parser.add_argument("--lock", type=Path, default=Path("requirements.lock"))
    parser.add_argument("extras", nargs="*", help="optional-dependency groups to add")
    parser.add_argument(
        "--verify",
        type=Path,
        metavar="VENV",
        help="check that VENV holds exactly the lock's versions (and nothing else)",
    )
    args = parser.parse_args(argv)
    try:
        if args.verify is not None:
            project = tomllib.loads(args.pyproject.read_text(encoding="utf-8"))["project"]
            verify(args.verify, locked(args.lock), args.lock, project["name"])
            return 0
        lines = requirements(args.pyproject, args.extras)
        check_locked(lines, locked(args.lock), args.lock)
    except (OSError, ValueError) as exc:
        print(f"requirements.py: {exc}", file=sys.stderr)
        return 2
    print("\n".join([f"--constraint {args.lock}", *lines]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
