"""Print qmill's pinned requirements from pyproject.toml: the runtime dependencies plus the
extras named on the command line, one per line.

The images install these in a layer built from pyproject.toml alone, before any source is
copied, so editing the code does not reinstall qiskit; and pyproject.toml stays the only
list of dependencies (no requirements file to keep in step by hand). A requirement that is
not pinned with ``==`` is refused: an image must contain what the tests ran against.

    python requirements.py [--pyproject PATH] [EXTRA ...]
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path


def requirements(pyproject: Path, extras: Sequence[str] = ()) -> list[str]:
    """The runtime dependencies and those of ``extras``; ValueError if one is unpinned."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    found = list(project["dependencies"])
    for extra in extras:
        if extra not in optional:
            raise ValueError(f"{pyproject}: no extra {extra!r} (have {', '.join(optional)})")
        found += optional[extra]
    unpinned = [req for req in found if "==" not in req]
    if unpinned:
        raise ValueError(f"{pyproject}: not pinned with ==: {', '.join(unpinned)}")
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"))
    parser.add_argument("extras", nargs="*", help="optional-dependency groups to add")
    args = parser.parse_args(argv)
    try:
        lines = requirements(args.pyproject, args.extras)
    except (OSError, ValueError) as exc:
        print(f"requirements.py: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
