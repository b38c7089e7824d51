"""The NATS and Valkey charts with the Kubernetes module's values, checked offline.

Each test reads what Helm would install: Terraform evaluates the module's chart values
(its provider-free chart_values/), and Helm's Go code lints, schema-checks and renders
the charts vendored in infra/charts at the versions the module pins (tests/infra/charts.py).
The rendered nats.conf is also read by nats-server itself (`-t`).
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
from pathlib import Path
from typing import Any

import helm_python
import httpx
import nats
import pytest
import yaml

from qmill.server import constants
from qmill.server.embedded import binary
from qmill.server.ports import free_ports, wait_port
from tests.conftest import require_binary
from tests.infra import deployment
from tests.infra.charts import (
    CHARTS,
    ChartValues,
    chart_version,
    kubernetes,
    lint,
    one,
    render,
    validate_schema,
)
from tests.infra.charts import chart_values as shared_chart_values

NAMESPACE = "qmill"


@pytest.fixture(scope="module")
def chart_values() -> ChartValues:
    require_binary("terraform", "evaluates the provider-free chart values module")
    return shared_chart_values()


def nats_objects(chart_values: ChartValues, **overrides: Any) -> list[dict[str, Any]]:
    values = chart_values.outputs(**overrides)["nats"]
    return render("nats", values, chart_values.arguments["nats_name"], NAMESPACE)


def valkey_objects(chart_values: ChartValues, **overrides: Any) -> list[dict[str, Any]]:
    values = chart_values.outputs(**overrides)["valkey"]
    return render("valkey", values, chart_values.arguments["redis_name"], NAMESPACE)


def nats_conf(objects: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """The rendered nats.conf, as text and parsed (the chart writes JSON in which
    variables and sizes stand unquoted: quote them to read it)."""
    text: str = one(objects, "ConfigMap")["data"]["nats.conf"]
    quoted = re.sub(r":\s*(\$\w+|\d+[KMGT]i?B?)(\s*,?\s*)$", r': "\1"\2', text, flags=re.M)
    parsed: dict[str, Any] = json.loads(quoted)
    return text, parsed


def nats_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    pod = one(objects, "StatefulSet")["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "nats"]
    return container


def mib(quantity: str) -> int:
    assert quantity.endswith("Mi"), quantity
    return int(quantity[:-2])


# --- the vendored charts are the pinned ones -------------------------------------------


def test_vendored_charts_are_the_pinned_versions() -> None:
    k8s = kubernetes()
    assert chart_version("nats") == k8s.variables["nats_chart_version"]["default"]
    assert chart_version("valkey") == k8s.variables["valkey_chart_version"]["default"]
    assert k8s.resource("helm_release", "nats")["version"] == "${var.nats_chart_version}"
    assert k8s.resource("helm_release", "valkey")["version"] == "${var.valkey_chart_version}"
    assert k8s.resource("helm_release", "nats")["values"] == [
        "${yamlencode(module.chart_values.nats)}"
    ]
    assert k8s.resource("helm_release", "valkey")["values"] == [
        "${yamlencode(module.chart_values.valkey)}"
    ]


# --- helm lint and values.schema.json --------------------------------------------------


@pytest.mark.parametrize("overrides", [{}, {"nats_replicas": 1, "spread_across_zones": True}])
def test_helm_lint_passes_with_the_modules_values(
    chart_values: ChartValues, overrides: dict[str, Any]
) -> None:
    outputs = chart_values.outputs(**overrides)
    for chart in ("nats", "valkey"):
        report = lint(chart, outputs[chart], NAMESPACE)
        assert report["errors"] == [] and report["messages"] == [], (chart, report)


def test_valkey_values_pass_the_charts_schema(chart_values: ChartValues) -> None:
    values = chart_values.outputs()["valkey"]
    validate_schema("valkey", values)
    # The check is real: a value outside the schema is refused, as `helm install` would.
    with pytest.raises(helm_python.HelmValuesError, match="deploymentStrategy"):
        validate_schema("valkey", {**values, "deploymentStrategy": "Rolling"})


def test_nats_chart_has_no_schema_so_its_keys_are_checked_against_its_defaults(
    chart_values: ChartValues,
) -> None:
    """NATS 1.2.6 ships no values.schema.json, and its templates ignore unknown keys:
    every key the module sets must be one of the chart's own values.yaml (or a merge
    block, which the chart passes on verbatim)."""
    defaults = yaml.safe_load((CHARTS / "nats" / "values.yaml").read_text())

    def walk(ours: dict[str, Any], theirs: dict[str, Any], path: str) -> None:
        for key, value in ours.items():
            assert key in theirs, f"{path}{key} is not a value of the nats chart"
            if key in ("merge", "env", "topologySpreadConstraints") or not isinstance(value, dict):
                continue
            assert isinstance(theirs[key], dict), f"{path}{key}"
            walk(value, theirs[key], f"{path}{key}.")

    walk(chart_values.outputs()["nats"], defaults, "")


# --- NATS: the rendered nats.conf and StatefulSet ------------------------------------


@pytest.mark.parametrize("replicas", [3, 1])
def test_rendered_nats_conf_has_cluster_jetstream_auth_and_advertise(
    chart_values: ChartValues, replicas: int, tmp_path: Path
) -> None:
    objects = nats_objects(chart_values, nats_replicas=replicas)
    text, conf = nats_conf(objects)
    expected = deployment.expected()
    name = chart_values.arguments["nats_name"]
    headless = f"{name}-headless"

    assert conf["port"] == expected.nats_client_port
    assert conf["http_port"] == expected.nats_monitor_port
    # JetStream on the volume, every write fsynced before the publish is acknowledged.
    jetstream = conf["jetstream"]
    assert jetstream["store_dir"] == "/data"
    assert jetstream["sync_interval"] == constants.NATS_SYNC_INTERVAL
    assert jetstream["max_memory_store"] == 0
    # Clients log in as the module's user, with the password from the environment.
    assert conf["authorization"] == {"user": "qmill", "password": "$NATS_PASSWORD"}
    assert '"password": $NATS_PASSWORD' in text  # a variable, not the string "$NATS..."
    # The server's name is its pod's: KEDA finds a consumer's leader by that name.
    assert conf["server_name"] == "$SERVER_NAME"
    if replicas == 1:
        assert "cluster" not in conf
    else:
        cluster = conf["cluster"]
        assert cluster["port"] == 6222
        # Servers advertise no client URLs (/varz connect_urls stays empty, which sends
        # KEDA to the route hosts below: <pod>.<headless Service>, each resolvable).
        assert cluster["no_advertise"] is True
        assert cluster["routes"] == [f"nats://{name}-{i}.{headless}:6222" for i in range(replicas)]

    # nats-server itself accepts the file (with the variables the pod sets).
    conf_file = tmp_path / "nats.conf"
    conf_file.write_text(text)
    env = {"NATS_PASSWORD": "p4ssw0rd", "SERVER_NAME": f"{name}-0", "PATH": "/usr/bin:/bin"}
    checked = subprocess.run(
        [binary("nats-server"), "-t", "-c", str(conf_file)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_nats_server_names_resolve_as_keda_asks_for_them(chart_values: ChartValues) -> None:
    """KEDA asks the consumer's leader at <server name>.<natsServerMonitoringEndpoint>:
    the server name is the pod's, and the endpoint is the headless Service that gives
    every pod a DNS name."""
    objects = nats_objects(chart_values)
    container = nats_container(objects)
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["SERVER_NAME"]["value"] == "$(POD_NAME)"
    statefulset = one(objects, "StatefulSet")
    headless = [
        o for o in objects if o["kind"] == "Service" and o["spec"].get("clusterIP") == "None"
    ]
    (service,) = headless
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    k8s = kubernetes()
    # local.namespace is var.namespace (or the namespace made from it).
    assert k8s.variables["namespace"]["default"] == NAMESPACE
    endpoint = str(k8s.locals["keda_normal_lane"]["natsServerMonitoringEndpoint"])
    for _ in range(5):
        endpoint = re.sub(
            r"\$\{local\.(\w+)\}",
            lambda m: NAMESPACE if m[1] == "namespace" else str(k8s.resolve(k8s.locals[m[1]])),
            endpoint,
        )
    host, port = str(endpoint).rsplit(":", 1)
    assert host == f"{service['metadata']['name']}.{NAMESPACE}.svc.cluster.local"
    assert int(port) == deployment.expected().nats_monitor_port


@pytest.mark.parametrize("zones", [False, True])
def test_nats_servers_spread_over_nodes_and_zones(chart_values: ChartValues, zones: bool) -> None:
    objects = nats_objects(chart_values, spread_across_zones=zones)
    pod = one(objects, "StatefulSet")["spec"]["template"]
    spread = {c["topologyKey"]: c for c in pod["spec"]["topologySpreadConstraints"]}
    assert spread["kubernetes.io/hostname"]["whenUnsatisfiable"] == "DoNotSchedule"
    zone = spread["topology.kubernetes.io/zone"]["whenUnsatisfiable"]
    assert zone == ("DoNotSchedule" if zones else "ScheduleAnyway")
    for constraint in spread.values():
        assert constraint["maxSkew"] == 1
        selector = constraint["labelSelector"]["matchLabels"]
        assert selector.items() <= pod["metadata"]["labels"].items()


def test_nats_container_has_gomemlimit_below_its_limit_and_the_password_secret(
    chart_values: ChartValues,
) -> None:
    container = nats_container(nats_objects(chart_values))
    env = {e["name"]: e for e in container["env"]}
    limit = mib(container["resources"]["limits"]["memory"])
    assert (
        container["resources"]["requests"]["memory"] == container["resources"]["limits"]["memory"]
    )
    gomemlimit = env["GOMEMLIMIT"]["value"]
    assert gomemlimit.endswith("MiB")
    assert 0.8 * limit <= int(gomemlimit[:-3]) < limit
    ref = env["NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    k8s = kubernetes()
    secret = k8s.resource("kubernetes_secret_v1", "nats_auth")
    assert ref["name"] == k8s.resolve(secret["metadata"][0]["name"])
    assert ref["key"] in secret["data"]
    assert secret["data"][ref["key"]] == "${random_password.nats.result}"


# --- Valkey: the rendered Deployment and valkey.conf ---------------------------------


def test_valkey_never_runs_two_pods_on_its_volume(chart_values: ChartValues) -> None:
    objects = valkey_objects(chart_values)
    deployment_ = one(objects, "Deployment")
    assert deployment_["spec"]["replicas"] == 1
    assert deployment_["spec"]["strategy"]["type"] == "Recreate"
    claim = one(objects, "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    volumes = deployment_["spec"]["template"]["spec"]["volumes"]
    claims = [
        v["persistentVolumeClaim"]["claimName"] for v in volumes if "persistentVolumeClaim" in v
    ]
    assert claims == [claim["metadata"]["name"]]


def test_valkey_conf_has_aof_maxmemory_noeviction_below_the_limit(
    chart_values: ChartValues,
) -> None:
    objects = valkey_objects(chart_values)
    configs = [
        o for o in objects if o["kind"] == "ConfigMap" and "valkey.conf" in o.get("data", {})
    ]
    (config,) = configs
    lines = config["data"]["valkey.conf"].splitlines()
    assert "appendonly yes" in lines
    assert f"appendfsync {constants.REDIS_APPENDFSYNC}" in lines
    assert "maxmemory-policy noeviction" in lines
    (maxmemory,) = [line.split()[1] for line in lines if line.startswith("maxmemory ")]
    assert maxmemory.endswith("mb")
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    (valkey,) = [c for c in pod["containers"] if c["command"] == ["valkey-server"]]
    limit = mib(valkey["resources"]["limits"]["memory"])
    assert int(maxmemory[:-2]) <= 0.8 * limit  # room for the AOF rewrite's fork
    assert valkey["resources"]["requests"]["memory"] == valkey["resources"]["limits"]["memory"]


def test_rendered_nats_conf_runs_takes_the_modules_url_and_keeps_account_g(
    chart_values: ChartValues, tmp_path: Path
) -> None:
    """One nats-server on the rendered file (ports and store moved to this machine):
    the module's URL form logs in, a client without the password is refused, and the
    stream lands in "$G", the account KEDA's trigger names."""
    _, conf = nats_conf(nats_objects(chart_values, nats_replicas=1))
    client_port = free_ports(2)
    monitor_port = client_port + 1
    conf.update(port=client_port, http_port=monitor_port, pid_file=str(tmp_path / "nats.pid"))
    conf["jetstream"] = {**conf["jetstream"], "store_dir": str(tmp_path / "js")}
    conf["jetstream"]["max_file_store"] = "<<1GB>>"
    text = json.dumps(conf, indent=2)
    # Back to what the chart writes: variables and sizes unquoted.
    text = re.sub(r'"(\$\w+|<<\d+GB>>)"', lambda m: m[1].strip("<>"), text)
    conf_file = tmp_path / "nats.conf"
    conf_file.write_text(text)
    password = "p4ssw0rd0123456789"
    env = {"NATS_PASSWORD": password, "SERVER_NAME": "qmill-nats-0", "PATH": "/usr/bin:/bin"}
    server = subprocess.Popen(
        [binary("nats-server"), "-c", str(conf_file)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(client_port)
        wait_port(monitor_port)
        k8s = kubernetes()
        url = str(k8s.locals["nats_url"])
        for ref, value in {
            "${local.nats_user}": "qmill",
            "${random_password.nats.result}": password,
            "${local.nats_host}": "127.0.0.1",
            "${local.nats_client_port}": str(client_port),
        }.items():
            url = url.replace(ref, value)
        assert url == f"nats://qmill:{password}@127.0.0.1:{client_port}"
        _anonymous_refused(client_port)
        asyncio.run(_stream_as(url))
        jsz = httpx.get(
            f"http://127.0.0.1:{monitor_port}/jsz",
            params={"acc": "$G", "consumers": "true", "config": "true"},
            timeout=10,
        ).json()
        (account,) = jsz["account_details"]
        assert account["name"] == k8s.resolve(k8s.locals["keda_normal_lane"]["account"])
        assert [s["name"] for s in account["stream_detail"]] == ["K8S_CHART_CHECK"]
    finally:
        server.terminate()
        server.wait(timeout=10)


def _anonymous_refused(port: int) -> None:
    """A client that sends no user and password gets nats-server's refusal."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.settimeout(5)
        assert conn.recv(4096).startswith(b"INFO ")
        conn.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\nPING\r\n')
        reply = b""
        while b"\r\n" not in reply:
            chunk = conn.recv(4096)
            if not chunk:
                break
            reply += chunk
    assert reply.startswith(b"-ERR 'Authorization Violation'"), reply


async def _stream_as(url: str) -> None:
    client = await nats.connect(url, allow_reconnect=False, connect_timeout=5)
    try:
        await client.jetstream().add_stream(name="K8S_CHART_CHECK", subjects=["k8s.check"])
    finally:
        await client.close()
