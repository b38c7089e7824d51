"""Every argument and nested block of every resource and data block in infra/terraform
exists in its provider's schema.

The provider registry is not reachable here, so `terraform validate` cannot read the
kubernetes and cloudrun modules. infra/terraform/schemas/*.json are extracts of the
provider schemas (argument and block names, from the npm CDKTF bindings of the provider
versions versions.tf pins; `python infra/terraform/schemas/generate.py` rebuilds them).
A misspelt or removed argument, which `terraform plan` would refuse on first apply, fails
here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.infra.hcl import TERRAFORM_DIR, load

SCHEMAS = TERRAFORM_DIR / "schemas"
REGENERATE = "python infra/terraform/schemas/generate.py"
# Terraform's own arguments, valid on every resource (data blocks take the same but
# connection and provisioner).
META_ARGUMENTS = {"count", "for_each", "provider", "depends_on", "lifecycle"}
RESOURCE_META = {"connection", "provisioner"}


@dataclass(frozen=True)
class Block:
    file: Path
    kind: str  # "resource" or "data"
    type: str
    name: str
    body: dict[str, Any]

    @property
    def provider(self) -> str:
        alias = str(self.body.get("provider", "")).removeprefix("${").removesuffix("}")
        return alias.split(".")[0] if alias else self.type.split("_")[0]

    def __str__(self) -> str:
        prefix = "data." if self.kind == "data" else ""
        return f"{self.file.relative_to(TERRAFORM_DIR)}: {prefix}{self.type}.{self.name}"


def terraform_files() -> list[Path]:
    """Every .tf file of every module and example (a linked file once, where it lives)."""
    files = {p.resolve() for p in TERRAFORM_DIR.glob("*/*/*.tf")}
    return sorted(files)


def all_blocks() -> Iterator[Block]:
    for file in terraform_files():
        doc = load(file)
        for kind in ("resource", "data"):
            for block in doc.get(kind, []):
                for type_name, named in block.items():
                    for name, body in named.items():
                        yield Block(file, kind, type_name, name, body)


def load_schemas() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(SCHEMAS.glob("*.json"))}


def unknown_names(body: dict[str, Any], schema: dict[str, Any], path: str) -> Iterator[str]:
    """Every key of body (and of its nested blocks) that schema does not have."""
    for key, value in body.items():
        if key == "dynamic":
            for dynamic in value:
                for name, spec in dynamic.items():
                    if name not in schema["blocks"]:
                        yield f"{path}.dynamic.{name}"
                        continue
                    for content in spec.get("content", []):
                        yield from unknown_names(content, schema["blocks"][name], f"{path}.{name}")
        elif key in schema["blocks"]:
            items = value if isinstance(value, list) else [value]
            for item in items:
                if isinstance(item, dict):
                    yield from unknown_names(item, schema["blocks"][key], f"{path}.{key}")
        elif key not in schema["arguments"]:
            yield f"{path}.{key}"


def check(block: Block, schemas: dict[str, dict[str, Any]]) -> list[str]:
    provider = schemas.get(block.provider)
    if provider is None:
        return [f"{block}: no schema of provider {block.provider!r} ({REGENERATE})"]
    schema = provider[block.kind].get(block.type)
    if schema is None:
        return [f"{block}: {block.type} is not in schemas/{block.provider}.json ({REGENERATE})"]
    meta = META_ARGUMENTS | (RESOURCE_META if block.kind == "resource" else set())
    body = {k: v for k, v in block.body.items() if k not in meta}
    return [f"{block}: {name} is not an argument" for name in unknown_names(body, schema, "")]


def test_every_argument_is_in_the_provider_schema() -> None:
    schemas = load_schemas()
    found = list(all_blocks())
    assert {b.type for b in found} >= {"google_compute_instance", "kubernetes_deployment_v1"}
    problems = [problem for block in found for problem in check(block, schemas)]
    assert not problems, "\n".join(problems)


def _pins(file: Path) -> dict[str, str]:
    text = file.read_text()
    pins: dict[str, str] = {}
    for match in re.finditer(
        r"(\S+)\s*=\s*\{\s*source\s*=\s*\"hashicorp/(\S+)\"\s*version\s*=\s*\"([^\"]+)\"", text
    ):
        pins[match.group(1)] = match.group(3)
    return pins


def _admits(constraint: str, version: str) -> bool:
    """Terraform's version constraint (the `~>`, `>=`, `<`, `=` forms) holds for version."""

    def parts(text: str) -> tuple[int, ...]:
        return tuple(int(x) for x in text.strip().split("."))

    have = parts(version)
    for clause in constraint.split(","):
        op, wanted = re.fullmatch(r"\s*(~>|>=|<=|>|<|=|!=)?\s*([\d.]+)\s*", clause).groups()  # type: ignore[union-attr]
        want = parts(wanted)
        padded = have[: len(want)]
        if op == "~>":
            upper = (*want[:-2], want[-2] + 1) if len(want) > 1 else (want[0] + 1,)
            if not (have >= want and have[: len(upper)] < upper):
                return False
        elif (
            (op == ">=" and have < want)
            or (op == ">" and have <= want)
            or (op == "<" and padded >= want)
            or (op == "<=" and padded > want)
            or (op in (None, "=") and padded != want)
            or (op == "!=" and padded == want)
        ):
            return False
    return True


PINNING_FILES = sorted(
    p for p in TERRAFORM_DIR.glob("*/*/*.tf") if "required_providers" in p.read_text()
)


@pytest.mark.parametrize(
    "versions_tf", PINNING_FILES, ids=lambda p: str(p.relative_to(TERRAFORM_DIR))
)
def test_the_pinned_provider_versions_are_the_ones_checked(versions_tf: Path) -> None:
    """versions.tf admits the schema's provider version, and no next major (which may
    remove or rename arguments the extract still lists)."""
    schemas = load_schemas()
    for provider, constraint in _pins(versions_tf).items():
        version = schemas[provider]["version"]
        assert _admits(constraint, version), (versions_tf, provider, constraint, version)
        major = int(version.split(".")[0])
        assert not _admits(constraint, f"{major + 1}.0.0"), (versions_tf, provider, constraint)


def test_the_version_check_reads_constraints() -> None:
    assert _admits("~> 6.50", "6.50.0") and _admits("~> 6.50", "6.99.1")
    assert not _admits("~> 6.50", "7.0.0") and not _admits("~> 6.50", "6.49.0")
    assert _admits(">= 6.50, < 8.0", "7.3.0") and not _admits("~> 2.36.0", "2.37.0")


def test_a_misspelt_argument_is_found() -> None:
    schemas = load_schemas()
    body = {
        "name": "x",
        "boot_disk": [{"initialize_params": [{"imagee": "cos"}]}],
        "dynamic": [{"network_interfac": {"for_each": "${x}", "content": [{}]}}],
    }
    block = Block(TERRAFORM_DIR / "x.tf", "resource", "google_compute_instance", "x", body)
    problems = check(block, schemas)
    assert any("boot_disk.initialize_params.imagee" in p for p in problems), problems
    assert any("dynamic.network_interfac" in p for p in problems), problems
