"""Regenerate the provider schema extracts in this directory from the npm CDKTF bindings.

The provider registry is not reachable from the build machines, so `terraform validate`
cannot check the kubernetes and cloudrun modules. The prebuilt CDKTF providers on npm
(@cdktf/provider-google, ...) are generated from each provider's schema and carry, for
every resource and data source, the Terraform name of every argument and nested block
(the `...ToHclTerraform` functions of their JavaScript). This script packs them with
`npm pack`, reads those names for the types the modules use (plus the few in EXTRA_TYPES
that are about to be used), and writes one JSON file per provider. tests/infra/
test_provider_schemas.py then walks every resource and data block of every module
against them, offline.

    python infra/terraform/schemas/generate.py           # needs npm and the npm registry

Bump a PROVIDERS entry (the binding's version; its package.json names the provider
version it was built from) together with the module's versions.tf.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import hcl2

HERE = Path(__file__).resolve().parent
TERRAFORM_DIR = HERE.parent

# Provider local name -> the npm binding built from the provider version versions.tf
# pins. @cdktf/provider-google 16.12.1 is built from hashicorp/google 6.50.0, and so on
# (its package.json, "cdktf.provider").
PROVIDERS: dict[str, tuple[str, str]] = {
    "google": ("@cdktf/provider-google", "16.12.1"),
    "google-beta": ("@cdktf/provider-google-beta", "16.12.1"),
    "kubernetes": ("@cdktf/provider-kubernetes", "12.1.1"),
    "helm": ("@cdktf/provider-helm", "12.1.2"),
    "random": ("@cdktf/provider-random", "12.0.1"),
}

# Types a module is about to use (a Job, a NetworkPolicy), kept so that adding one does
# not need npm; the modules' own types are always included.
EXTRA_TYPES: dict[str, set[str]] = {
    "resource": {
        "kubernetes_config_map_v1",
        "kubernetes_job_v1",
        "kubernetes_network_policy_v1",
        "kubernetes_service_account_v1",
    },
    "data": set(),
}

_FUNCTION = re.compile(r"^function (\w+)ToHclTerraform\(struct\) \{$", re.M)
_ENTRY = re.compile(
    r"^\s+(\w+): \{\s*value: (.*?),\s*isBlock: (true|false),\s*type: \"(\w+)\",",
    re.M | re.S,
)
_CALLS = re.compile(r"(\w+)ToHclTerraform\b")
_TYPE = re.compile(r"\.tfResourceType = \"([a-z0-9_]+)\";")


def provider_of(kind: str, type_name: str, body: dict[str, Any]) -> str:
    """The provider a block uses: its `provider` meta-argument, or its type's prefix."""
    alias = str(body.get("provider", "")).strip("${}")
    if alias:
        return alias.split(".")[0]
    return type_name.split("_")[0]


def used_types() -> dict[str, dict[str, set[str]]]:
    """provider -> {"resource": {...}, "data": {...}} over every module and example."""
    found: dict[str, dict[str, set[str]]] = {}
    for file in sorted(TERRAFORM_DIR.glob("*/*/*.tf")):
        with file.open() as f:
            doc = hcl2.load(f)
        for kind in ("resource", "data"):
            for block in doc.get(kind, []):
                for type_name, named in block.items():
                    type_name = type_name.strip('"')
                    for body in named.values():
                        provider = provider_of(kind, type_name, body)
                        found.setdefault(provider, {"resource": set(), "data": set()})
                        found[provider][kind].add(type_name)
    for kind, names in EXTRA_TYPES.items():
        for type_name in names:
            provider = type_name.split("_")[0]
            found.setdefault(provider, {"resource": set(), "data": set()})[kind].add(type_name)
    return found


def _entries(text: str) -> dict[str, dict[str, Any]]:
    """name -> {"block": bool, "nested": function name or None} of one attrs literal."""
    out: dict[str, dict[str, Any]] = {}
    for match in _ENTRY.finditer(text):
        name, value, is_block, _kind = match.groups()
        calls = [c for c in _CALLS.findall(value) if not c[0].isupper() and c != "cdktf"]
        nested = next((c for c in calls if not c.startswith(("string", "number", "boolean"))), None)
        out[name] = {"block": is_block == "true", "nested": nested}
    return out


def _functions(sources: list[str]) -> dict[str, str]:
    """Function name -> its body, for every ...ToHclTerraform function in a directory."""
    bodies: dict[str, str] = {}
    for text in sources:
        starts = [(m.start(), m.group(1)) for m in _FUNCTION.finditer(text)]
        for index, (start, name) in enumerate(starts):
            end = starts[index + 1][0] if index + 1 < len(starts) else len(text)
            body = text[start:end]
            cut = re.search(r"^(class |exports\.|function )", body[1:], re.M)
            bodies[name] = body if cut is None else body[: cut.start() + 1]
    return bodies


def _schema(entries: dict[str, dict[str, Any]], functions: dict[str, str], depth: int = 0) -> Any:
    arguments: list[str] = []
    blocks: dict[str, Any] = {}
    for name, entry in sorted(entries.items()):
        nested = entry["nested"]
        if nested and nested in functions and depth < 12:
            blocks[name] = _schema(_entries(functions[nested]), functions, depth + 1)
        else:
            arguments.append(name)
    return {"arguments": arguments, "blocks": blocks}


def extract(package_dir: Path, wanted: dict[str, set[str]]) -> dict[str, Any]:
    lib = package_dir / "lib"
    schemas: dict[str, dict[str, Any]] = {"resource": {}, "data": {}}
    for directory in sorted(p for p in lib.iterdir() if p.is_dir()):
        index = directory / "index.js"
        if not index.exists():
            continue
        text = index.read_text()
        match = _TYPE.search(text)
        if match is None:
            continue
        tf_type = match.group(1)
        kind = "data" if directory.name.startswith("data-") else "resource"
        if tf_type not in wanted[kind]:
            continue
        sources = [text] + [p.read_text() for p in sorted(directory.glob("index-structs/*.js"))]
        functions = _functions(sources)
        top = re.search(r"synthesizeHclAttributes\(\) \{(.*?)\n    \}\n", text, re.S)
        assert top is not None, directory
        schemas[kind][tf_type] = _schema(_entries(top.group(1)), functions)
    missing = {
        k: sorted(wanted[k] - set(schemas[k])) for k in schemas if wanted[k] - set(schemas[k])
    }
    if missing:
        sys.exit(f"{package_dir}: no binding for {missing}")
    return schemas


def main() -> None:
    wanted = used_types()
    unknown = set(wanted) - set(PROVIDERS)
    if unknown:
        sys.exit(f"no npm binding configured for providers {sorted(unknown)} (PROVIDERS)")
    with tempfile.TemporaryDirectory() as tmp:
        for provider, (package, version) in PROVIDERS.items():
            if provider not in wanted:
                continue
            spec = f"{package}@{version}"
            packed = subprocess.run(
                ["npm", "pack", "--silent", spec],
                cwd=tmp,
                check=True,
                capture_output=True,
                text=True,
            ).stdout.split()[-1]
            target = Path(tmp) / provider
            with tarfile.open(Path(tmp) / packed) as tar:
                tar.extractall(target, filter="data")
            meta = json.loads((target / "package" / "package.json").read_text())["cdktf"][
                "provider"
            ]
            schemas = extract(target / "package", wanted[provider])
            document = {
                "provider": meta["name"],
                "version": meta["version"],
                "generated_from": spec,
                "generated_by": "infra/terraform/schemas/generate.py",
                **schemas,
            }
            out = HERE / f"{provider}.json"
            out.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
            print(
                f"{out.relative_to(TERRAFORM_DIR)}: {meta['name']} {meta['version']}, "
                f"{len(schemas['resource'])} resources, {len(schemas['data'])} data sources"
            )


if __name__ == "__main__":
    main()
