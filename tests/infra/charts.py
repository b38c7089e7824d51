"""The Kubernetes module's chart values, evaluated by Terraform, and Helm run on them.

modules/kubernetes computes the NATS and Valkey chart values in its provider-free
submodule chart_values/. Here the arguments the module passes it are read from the HCL
(with the module's variable defaults), Terraform plans the submodule offline, and the
vendored charts (infra/charts, at the versions the module pins) are linted and rendered
with the planned values by Helm's own Go code (helm-python-sdk: no binary, no cluster).
"""

from __future__ import annotations

import functools
import json
import re
import tempfile
from pathlib import Path
from typing import Any

import helm_python
import yaml

from tests.infra.deployment import ROOT
from tests.infra.hcl import MODULES, Module, module, run

CHARTS = ROOT / "infra" / "charts"
CHART_VALUES = MODULES / "kubernetes" / "chart_values"
# The charts each module argument of this form names a Secret of the module.
_SECRET_NAME = re.compile(r"^\$\{kubernetes_secret_v1\.(\w+)\.metadata\[0\]\.name\}$")


def module_arguments(k8s: Module) -> dict[str, Any]:
    """What modules/kubernetes passes to chart_values, with its variables' defaults."""
    found: dict[str, Any] = {}
    for name, value in k8s.modules["chart_values"].items():
        if name == "source":
            continue
        secret = _SECRET_NAME.match(value) if isinstance(value, str) else None
        if secret:
            value = k8s.resource("kubernetes_secret_v1", secret.group(1))["metadata"][0]["name"]
        resolved = k8s.resolve(value)
        assert resolved is None or not (isinstance(resolved, str) and "${" in resolved), (
            name,
            resolved,
        )
        found[name] = resolved
    return found


@functools.cache
def kubernetes() -> Module:
    """modules/kubernetes, parsed once per process (python-hcl2 takes about a second)."""
    return module("kubernetes")


class ChartValues:
    """`terraform plan` of chart_values with the module's arguments (and overrides)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.k8s = kubernetes()
        self.arguments = module_arguments(self.k8s)
        done = run(["init", "-backend=false", "-input=false", "-no-color"], data_dir, CHART_VALUES)
        assert done.returncode == 0, done.stdout + done.stderr
        self._cache: dict[str, dict[str, Any]] = {}

    def outputs(self, **overrides: Any) -> dict[str, Any]:
        arguments = {**self.arguments, **overrides}
        key = json.dumps(arguments, sort_keys=True)
        if key not in self._cache:
            var_file = self.data_dir / "values.tfvars.json"
            var_file.write_text(json.dumps(arguments))
            plan = self.data_dir / "plan.out"
            args = ["plan", "-input=false", "-no-color", "-lock=false"]
            done = run(
                [*args, f"-var-file={var_file}", f"-out={plan}"], self.data_dir, CHART_VALUES
            )
            assert done.returncode == 0, done.stdout + done.stderr
            shown = run(["show", "-json", str(plan)], self.data_dir, CHART_VALUES)
            assert shown.returncode == 0, shown.stderr
            planned = json.loads(shown.stdout)["planned_values"]["outputs"]
            self._cache[key] = {name: out["value"] for name, out in planned.items()}
        return self._cache[key]


@functools.cache
def chart_values() -> ChartValues:
    """One initialised chart_values per process, its plans cached by arguments."""
    return ChartValues(Path(tempfile.mkdtemp(prefix="tf-chart-values-")))


def chart_version(chart: str) -> str:
    version: str = yaml.safe_load((CHARTS / chart / "Chart.yaml").read_text())["version"]
    return version


def lint(chart: str, values: dict[str, Any], namespace: str) -> dict[str, Any]:
    """`helm lint --strict` of a vendored chart with these values."""
    return helm_python.lint(CHARTS / chart, values, strict=True, namespace=namespace)


def validate_schema(chart: str, values: dict[str, Any]) -> None:
    """The chart's values.schema.json, as Helm applies it on install (raises on a miss)."""
    with helm_python.Chart.load(CHARTS / chart) as loaded:
        loaded.validate_schema(values)


def render(
    chart: str, values: dict[str, Any], release: str, namespace: str
) -> list[dict[str, Any]]:
    """`helm template`: every object the chart would install, parsed."""
    with helm_python.Chart.load(CHARTS / chart) as loaded:
        manifests = loaded.render(values, name=release, namespace=namespace, is_install=True)
    objects: list[dict[str, Any]] = []
    for path, text in sorted(manifests.items()):
        if "/tests/" in path or not path.endswith((".yaml", ".yml")):  # no test hooks, NOTES
            continue
        objects += [doc for doc in yaml.safe_load_all(text) if doc]
    return objects


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found
