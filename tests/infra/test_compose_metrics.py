"""infra/compose.yaml's Prometheus and Grafana against the services and the code.

Prometheus must scrape every qmill process where it serves ``/metrics`` (each function on
its own port, each worker on ``[worker] metrics_port``), Grafana must show the qmill
dashboard on that Prometheus. Each test reads the model Compose v2 resolves and the
files it mounts; nothing copies a port or a name from them. That the dashboard's
queries name metrics a running worker really exports is checked where a worker runs:
tests/integration/test_worker.py (``test_worker_metrics``).
"""

from __future__ import annotations

import configparser
import json
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from qmill.server import constants, routes
from tests.infra.conftest import REPO, SettingsFrom, qmill_services

DASHBOARD = REPO / "infra" / "grafana" / "qmill-dashboard.json"


def mounted(compose: Mapping[str, Any], service: str) -> dict[str, Path]:
    """A service's compose configs: where each is mounted -> the file it comes from."""
    sources = compose["configs"]
    return {
        c["target"]: Path(sources[c["source"]]["file"])
        for c in compose["services"][service].get("configs", [])
    }


def flag(argv: list[str], name: str) -> str:
    (value,) = [a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}=")]
    return value


@pytest.fixture(scope="module")
def scrape(compose: dict[str, Any]) -> dict[str, Any]:
    argv = compose["services"]["prometheus"]["command"]
    source = mounted(compose, "prometheus")[flag(argv, "config.file")]
    assert source == REPO / "infra" / "prometheus" / "prometheus.yml"
    config: dict[str, Any] = yaml.safe_load(source.read_text(encoding="utf-8"))
    return config


def targets(scrape: Mapping[str, Any]) -> dict[str, tuple[str, int]]:
    """Each compose service scraped -> (its job, the port scraped)."""
    found: dict[str, tuple[str, int]] = {}
    for job in scrape["scrape_configs"]:
        for sd in job["dns_sd_configs"]:
            assert sd["type"] == "A"  # every replica's address, as Docker's DNS gives them
            for name in sd["names"]:
                assert name not in found, f"{name} scraped twice"
                found[name] = (job["job_name"], int(sd["port"]))
    return found


def test_every_qmill_process_is_scraped_where_it_serves_metrics(
    services: dict[str, Any], scrape: dict[str, Any], settings_from: SettingsFrom
) -> None:
    found = targets(scrape)
    assert set(found) == set(qmill_services(services))
    for job in scrape["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") == routes.METRICS_PATH
    for name in constants.FUNCTION_NAMES:  # a function serves /metrics on its own port
        (port,) = services[name]["expose"]
        assert found[name][1] == int(port), name
    worker = services["worker"]
    env = {k: str(v) for k, v in worker["environment"].items()}
    port = settings_from(env).worker.metrics_port
    assert port and found["worker"][1] == port
    assert str(port) in worker["expose"]


def test_prometheus_is_the_dashboards_datasource(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    files = mounted(compose, "grafana")
    sources = [
        yaml.safe_load(path.read_text(encoding="utf-8"))
        for target, path in files.items()
        if PurePosixPath(target).parent == PurePosixPath("/etc/grafana/provisioning/datasources")
    ]
    (datasource,) = [d for s in sources for d in s["datasources"]]
    assert datasource["type"] == "prometheus" and datasource["isDefault"]
    url = urlsplit(datasource["url"])
    assert url.hostname == "prometheus" and url.hostname in services
    listen = flag(services["prometheus"]["command"], "web.listen-address")
    assert url.port == int(listen.rsplit(":", 1)[1])
    # The dashboard picks its datasource by type: the provisioned one is the default.
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["query"] == datasource["type"]


def test_grafana_provisions_the_dashboard(compose: dict[str, Any]) -> None:
    files = mounted(compose, "grafana")
    dashboards = {t for t, path in files.items() if path == DASHBOARD}
    assert len(dashboards) == 1
    (dashboard,) = dashboards
    providers = [
        p
        for target, path in files.items()
        if PurePosixPath(target).parent == PurePosixPath("/etc/grafana/provisioning/dashboards")
        for p in yaml.safe_load(path.read_text(encoding="utf-8"))["providers"]
    ]
    (provider,) = providers
    assert PurePosixPath(dashboard).parent == PurePosixPath(provider["options"]["path"])
    ini = configparser.ConfigParser()
    ini.read_string(files["/etc/grafana/grafana.ini"].read_text(encoding="utf-8"))
    assert ini["dashboards"]["default_home_dashboard_path"] == dashboard
    # Only on loopback, so anonymous viewing is only for who is on the host.
    assert ini["auth.anonymous"]["org_role"] == "Viewer"
    published = compose["services"]["grafana"]["ports"]
    assert {p["host_ip"] for p in published} == {"127.0.0.1"}
