"""The Grafana dashboard's metric names against what a process really exports.

`dashboard_metrics` reads infra/grafana/qmill-dashboard.json (every panel's query);
`exported_names` parses a real ``/metrics`` answer (Prometheus text format) into every
name a query may use: each family, and each sample (``_total``, ``_bucket``, ...).
"""

from __future__ import annotations

import json
import re

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REPO

DASHBOARD = REPO / "infra/grafana/qmill-dashboard.json"


def dashboard_metrics() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {m for e in exprs for m in re.findall(r"\bqmill_[a-z_]+", e)}
    assert used, "the dashboard queries nothing"
    return used


def exported_names(exposition: str) -> set[str]:
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        # A family without samples yet (a labelled counter nobody incremented) is still
        # exported, by its HELP and TYPE lines: its samples will carry these suffixes.
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + s for s in ("_bucket", "_count", "_sum"))
    return names
