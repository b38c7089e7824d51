"""Read Terraform modules with python-hcl2 into plain Python, and run the shared module
(which uses no provider) through a real, offline `terraform plan`."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hcl2

from tests.infra.deployment import ROOT

TERRAFORM_DIR = ROOT / "infra" / "terraform"
MODULES = TERRAFORM_DIR / "modules"

_PURE = re.compile(r"^\$\{(.*)\}$", re.S)
_REF = re.compile(r"\$\{(local|var)\.([A-Za-z_][A-Za-z0-9_]*)\}")


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        try:
            value: str = json.loads(text)
        except json.JSONDecodeError:
            value = text[1:-1]
        return value
    return text


def normalize(node: Any) -> Any:
    """python-hcl2 8.x output without quotes around keys and literals, or block markers."""
    if isinstance(node, dict):
        return {
            _unquote(key): normalize(value)
            for key, value in node.items()
            if not str(key).startswith("__")
        }
    if isinstance(node, list):
        return [normalize(item) for item in node]
    if isinstance(node, str):
        return _unquote(node)
    return node


def is_literal(value: Any) -> bool:
    return not (isinstance(value, str) and "${" in value)


@functools.cache
def _parsed(path: Path, mtime_ns: int) -> Any:
    with path.open() as f:
        return normalize(hcl2.load(f))


def load(path: Path) -> Any:
    """One .tf file, normalized; parsed once per test run (python-hcl2 is slow), and again
    if the file changed."""
    return _parsed(path.resolve(), path.stat().st_mtime_ns)


class Module:
    """Every block of one module directory (links such as shared_variables.tf included)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.variables: dict[str, dict[str, Any]] = {}
        self.locals: dict[str, Any] = {}
        self.outputs: dict[str, dict[str, Any]] = {}
        self.modules: dict[str, dict[str, Any]] = {}
        self.resources: dict[tuple[str, str], dict[str, Any]] = {}
        self.data: dict[tuple[str, str], dict[str, Any]] = {}
        for file in sorted(path.glob("*.tf")):
            doc = load(file)
            for block in doc.get("variable", []):
                self.variables.update(block)
            for block in doc.get("locals", []):
                self.locals.update(block)
            for block in doc.get("output", []):
                self.outputs.update(block)
            for block in doc.get("module", []):
                self.modules.update(block)
            for block in doc.get("resource", []):
                for kind, named in block.items():
                    for name, body in named.items():
                        self.resources[(kind, name)] = body
            for block in doc.get("data", []):
                for kind, named in block.items():
                    for name, body in named.items():
                        self.data[(kind, name)] = body

    def resource(self, kind: str, name: str) -> dict[str, Any]:
        return self.resources[(kind, name)]

    def of_kind(self, kind: str) -> dict[str, dict[str, Any]]:
        return {name: body for (k, name), body in self.resources.items() if k == kind}

    def resolve(self, value: Any, depth: int = 0) -> Any:
        """Replace ${local.x} and ${var.x} (with its default) where they are literal."""
        if depth > 20 or not isinstance(value, str):
            return value
        pure = _PURE.match(value)
        if pure and _REF.fullmatch(value):
            kind, name = _REF.fullmatch(value).groups()  # type: ignore[union-attr]
            target = self._lookup(kind, name)
            return value if target is _MISSING else self.resolve(target, depth + 1)

        def one(match: re.Match[str]) -> str:
            target = self._lookup(match.group(1), match.group(2))
            target = self.resolve(target, depth + 1) if target is not _MISSING else target
            if target is _MISSING or not is_literal(target) or isinstance(target, dict | list):
                return match.group(0)
            return str(target)

        return _REF.sub(one, value)

    def _lookup(self, kind: str, name: str) -> Any:
        if kind == "local":
            return self.locals.get(name, _MISSING)
        variable = self.variables.get(name)
        if variable is None or "default" not in variable:
            return _MISSING
        return variable["default"]


_MISSING = object()


def module(name: str) -> Module:
    return Module(MODULES / name)


def blocks(node: Any, key: str) -> Iterator[dict[str, Any]]:
    """Every block called `key` anywhere under node (dynamic ones not included)."""
    if isinstance(node, dict):
        for k, value in node.items():
            if k == key and isinstance(value, list):
                yield from (v for v in value if isinstance(v, dict))
            yield from blocks(value, key)
    elif isinstance(node, list):
        for item in node:
            yield from blocks(item, key)


def dynamic_blocks(node: Any, key: str) -> Iterator[dict[str, Any]]:
    """Every `dynamic "key"` block under node, as {"for_each": ..., "content": [...]}."""
    for dynamic in blocks(node, "dynamic"):
        if key in dynamic:
            yield dynamic[key]


# --- the shared module, evaluated by Terraform itself ----------------------------------


def terraform() -> str | None:
    return shutil.which("terraform")


def _env(data_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "TF_DATA_DIR": str(data_dir),
        "TF_CLI_CONFIG_FILE": os.devnull,
        "TF_IN_AUTOMATION": "1",
        "CHECKPOINT_DISABLE": "1",
    }


def run(args: list[str], data_dir: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    binary = terraform()
    assert binary is not None
    return subprocess.run(
        [binary, *args],
        cwd=cwd,
        env=_env(data_dir),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# Auth is on by default and then needs at least one key hash; every target says how many
# NATS servers it runs.
BASE_VARIABLES: dict[str, Any] = {
    "api_key_hashes": [hashlib.sha256(b"test key").hexdigest()],
    "nats_cluster_size": 3,
}


class SharedModule:
    """`terraform plan` of modules/shared, offline (it has no providers)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = MODULES / "shared"
        done = run(["init", "-backend=false", "-input=false", "-no-color"], data_dir, self.path)
        assert done.returncode == 0, done.stdout + done.stderr
        self._cache: dict[str, dict[str, Any]] = {}

    def plan(self, **variables: Any) -> subprocess.CompletedProcess[str]:
        args = ["plan", "-input=false", "-no-color", "-lock=false"]
        for name, value in sorted({**BASE_VARIABLES, **variables}.items()):
            encoded = value if isinstance(value, str) else json.dumps(value)
            args += ["-var", f"{name}={encoded}"]
        plan_file = self.data_dir / "plan.out"
        return run([*args, f"-out={plan_file}"], self.data_dir, self.path)

    def outputs(self, **variables: Any) -> dict[str, Any]:
        key = json.dumps(variables, sort_keys=True)
        if key not in self._cache:
            done = self.plan(**variables)
            assert done.returncode == 0, done.stdout + done.stderr
            shown = run(
                ["show", "-json", str(self.data_dir / "plan.out")], self.data_dir, self.path
            )
            assert shown.returncode == 0, shown.stderr
            planned = json.loads(shown.stdout)["planned_values"]["outputs"]
            self._cache[key] = {name: out["value"] for name, out in planned.items()}
        return self._cache[key]
