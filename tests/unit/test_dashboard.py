"""The Grafana dashboard queries only metrics qmill defines."""

from __future__ import annotations

import json
import re

from prometheus_client import REGISTRY

import qmill.server.metrics  # noqa: F401  (registers the metrics)
from tests.conftest import REPO


def test_dashboard_metrics_exist() -> None:
    dashboard = json.loads((REPO / "infra/grafana/qmill-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\bqmill_[a-z_]+", e)}
    known = {
        sample.name
        for metric in REGISTRY.collect()
        for sample in metric.samples
        if sample.name.startswith("qmill_")
    } | {m.name for m in REGISTRY.collect() if m.name.startswith("qmill_")}
    # Counters are exposed with a _total suffix; histograms as _bucket/_count/_sum.
    known |= {f"{name}_total" for name in known} | {f"{name}_bucket" for name in known}
    assert used, "the dashboard queries nothing"
    assert used <= known, used - known
