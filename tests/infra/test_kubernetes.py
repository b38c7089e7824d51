"""modules/kubernetes, read as an operator would (parsed with python-hcl2; the shared
module it calls evaluated by Terraform): what runs before the workers, what the pods
are told, who may reach whom, and how Prometheus finds the metrics."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import require_binary
from tests.infra.charts import chart_values, kubernetes, one, render
from tests.infra.hcl import Module, SharedModule, blocks, dynamic_blocks, module

NAMESPACE = "qmill"


@pytest.fixture(scope="module")
def k8s() -> Module:
    return kubernetes()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> SharedModule:
    require_binary("terraform", "evaluates the provider-free shared module")
    return SharedModule(tmp_path_factory.mktemp("tf-shared-k8s"))


def pod_spec(k8s: Module, kind: str, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = k8s.resource(kind, name)["spec"][0]["template"][0]["spec"][0]
    return spec


def pod_labels(k8s: Module, kind: str, name: str) -> dict[str, str]:
    meta = k8s.resource(kind, name)["spec"][0]["template"][0]["metadata"][0]
    labels: dict[str, str] = {}
    # merge(local.labels, {...}): the literal map is the part a selector may use.
    text = meta["labels"]
    assert text.startswith("${merge(local.labels, {"), text
    for pair in text[len("${merge(local.labels, {") : -len("})}")].split(","):
        key, value = (part.strip().strip('"') for part in pair.split("="))
        labels[key] = value
    labels["app.kubernetes.io/part-of"] = k8s.locals["labels"]["app.kubernetes.io/part-of"]
    return labels


def env_names(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {env["name"]: env for env in container.get("env", [])}


# --- scale from zero: the stream and the consumers exist before any worker ------------


def test_setup_job_runs_qmill_setup_from_the_worker_image_and_is_waited_for(k8s: Module) -> None:
    job = k8s.resource("kubernetes_job_v1", "setup")
    assert job["wait_for_completion"] is True
    spec = pod_spec(k8s, "kubernetes_job_v1", "setup")
    assert spec["restart_policy"] == "Never"
    (container,) = spec["container"]
    assert container["command"] == ["qmill-setup"]
    assert container["image"] == "${module.shared.worker_image}"
    # The workers' own settings: the consumers are created as the workers bind them.
    (dynamic,) = dynamic_blocks(container, "env")
    assert dynamic["for_each"] == "${module.shared.worker_env}"
    env = env_names(container)
    assert env["QMILL_NATS__URL"]["value_from"][0]["secret_key_ref"][0]["key"] == (
        "${local.nats_url_secret_key}"
    )
    assert "helm_release.nats" in str(job["depends_on"])


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("kubernetes_deployment_v1", "worker"),
        ("kubernetes_deployment_v1", "function"),
        ("kubernetes_manifest", "worker_scaledobject"),
    ],
)
def test_workers_functions_and_scaler_come_after_the_setup_job(
    k8s: Module, kind: str, name: str
) -> None:
    assert "kubernetes_job_v1.setup" in str(k8s.resource(kind, name)["depends_on"])


def test_keda_triggers_are_readable_locals(k8s: Module) -> None:
    triggers = k8s.resource("kubernetes_manifest", "worker_scaledobject")["manifest"]["spec"][
        "triggers"
    ]
    assert [t["metadata"] for t in triggers] == [
        "${local.keda_normal_lane}",
        "${local.keda_bulk_lane}",
    ]
    for lane in ("keda_normal_lane", "keda_bulk_lane"):
        meta = k8s.locals[lane]
        assert meta["natsServerMonitoringEndpoint"] == "${local.nats_monitoring_endpoint}"
        assert meta["activationLagThreshold"] == "0"
    # The headless Service: <server name>.<this host> resolves to one server.
    assert k8s.locals["nats_monitoring_endpoint"] == (
        "${local.nats_headless_host}:${local.nats_monitor_port}"
    )


# --- what the shared module is given, and what is taken from it ----------------------


def test_shared_gets_the_cluster_size_and_labels_take_its_version_label(k8s: Module) -> None:
    call = k8s.modules["shared"]
    assert call["nats_cluster_size"] == "${var.nats_replicas}"
    assert k8s.locals["labels"]["app.kubernetes.io/version"] == "${module.shared.version_label}"
    for name in ("function", "worker"):
        (container,) = pod_spec(k8s, "kubernetes_deployment_v1", name)["container"]
        if name == "function":
            memory = container["resources"][0]["limits"]["memory"]
            assert memory == "${module.shared.function_memory_mib}Mi"
            assert container["resources"][0]["requests"]["memory"] == memory


def test_shared_clamps_stream_replicas_and_makes_a_digest_tag_a_label(
    shared: SharedModule,
) -> None:
    """These fixes live in modules/shared (the gcp helper's): this module passes
    nats_cluster_size and uses version_label and function_memory_mib; here they are
    checked as Kubernetes needs them."""
    digest = "0.1.0@sha256:" + "a" * 64
    out = shared.outputs(nats_cluster_size=1, image_tag=digest)
    assert out["nats_stream_replicas"] == 1
    assert out["worker_env"]["QMILL_NATS__STREAM_REPLICAS"] == "1"
    assert out["function_env"]["QMILL_NATS__STREAM_REPLICAS"] == "1"
    label = out["version_label"]
    assert label == "0.1.0" and len(label) <= 63
    # Functions: the worker's memory budget, room for their processes, two replicas.
    defaults = shared.outputs()
    budget = defaults["worker_env"]["QMILL_WORKER__MEMORY_BUDGET_MB"]
    assert defaults["function_env"]["QMILL_WORKER__MEMORY_BUDGET_MB"] == budget
    workers = defaults["function_workers"]
    assert defaults["function_memory_mib"] >= 60 + 335 * workers
    assert defaults["function_replicas"]["min"] == 2


def test_worker_grace_covers_a_whole_simulation(k8s: Module, shared: SharedModule) -> None:
    """Scale-in never interrupts a running simulation: by default the worker waits
    max_execution_seconds for it, and the kubelet waits longer than the worker."""
    assert module("shared").variables["worker_grace_period_seconds"]["default"] is None
    assert k8s.modules["shared"]["worker_grace_period_seconds"] == (
        "${var.worker_grace_period_seconds}"
    )
    assert "platform_stop_seconds" not in k8s.modules["shared"]
    out = shared.outputs()
    max_execution = float(out["worker_env"]["QMILL_LIMITS__MAX_EXECUTION_SECONDS"])
    grace = float(out["worker_env"]["QMILL_WORKER__GRACE_PERIOD_SECONDS"])
    assert grace >= max_execution
    assert out["termination_grace_period_seconds"] >= grace + 10
    spec = pod_spec(k8s, "kubernetes_deployment_v1", "worker")
    assert spec["termination_grace_period_seconds"] == (
        "${module.shared.termination_grace_period_seconds}"
    )


# --- probes and metrics ------------------------------------------------------------


def test_worker_probes_livez_and_readyz_on_its_metrics_port(
    k8s: Module, shared: SharedModule
) -> None:
    (container,) = pod_spec(k8s, "kubernetes_deployment_v1", "worker")["container"]
    (port,) = container["port"]
    assert port["name"] == "metrics"
    assert port["container_port"] == "${local.worker_metrics_port}"
    # The port the probes use is the one the shared settings give the worker (a reserved
    # key, so extra_env cannot move it away from them).
    assert shared.outputs()["worker_env"]["QMILL_WORKER__METRICS_PORT"] == "9100"
    assert "QMILL_WORKER__METRICS_PORT" not in env_names(container)
    paths = {
        probe: container[probe][0]["http_get"][0]
        for probe in ("startup_probe", "liveness_probe", "readiness_probe")
    }
    assert paths["startup_probe"]["path"] == "/livez"
    assert paths["liveness_probe"]["path"] == "/livez"
    assert paths["readiness_probe"]["path"] == "/readyz"
    assert {p["port"] for p in paths.values()} == {"metrics"}


def test_function_probes_livez_so_a_503_still_reaches_the_client(k8s: Module) -> None:
    (container,) = pod_spec(k8s, "kubernetes_deployment_v1", "function")["container"]
    for probe in ("startup_probe", "liveness_probe", "readiness_probe"):
        get = container[probe][0]["http_get"][0]
        assert (get["path"], get["port"]) == ("/livez", "http"), probe


@pytest.mark.parametrize(
    ("name", "port"), [("worker", "worker_metrics_port"), ("function", "function_port")]
)
def test_pods_carry_prometheus_scrape_annotations(k8s: Module, name: str, port: str) -> None:
    meta = k8s.resource("kubernetes_deployment_v1", name)["spec"][0]["template"][0]["metadata"][0]
    assert meta["annotations"] == f"${{local.scrape_annotations.{name}}}"
    annotations = k8s.locals["scrape_annotations"][name]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert annotations["prometheus.io/port"] == f"${{tostring(local.{port})}}"


def test_service_monitor_is_optional_and_selects_both_metrics_ports(k8s: Module) -> None:
    monitor = k8s.resource("kubernetes_manifest", "service_monitor")
    assert monitor["count"] == "${var.service_monitor ? 1 : 0}"
    assert k8s.variables["service_monitor"]["default"] is False
    spec = monitor["manifest"]["spec"]
    assert {e["port"] for e in spec["endpoints"]} == {"http", "metrics"}
    assert {e["path"] for e in spec["endpoints"]} == {"/metrics"}
    service = k8s.resource("kubernetes_service_v1", "worker_metrics")["spec"][0]
    assert service["port"][0]["name"] == "metrics"
    assert service["selector"] == {
        "app.kubernetes.io/part-of": "qmill",
        "app.kubernetes.io/name": "worker",
    }
    selector = spec["selector"]["matchLabels"]
    assert selector.items() <= {**k8s.locals["labels"]}.items()


# --- NetworkPolicy: only qmill pods reach NATS and Valkey; ingress only to functions --


def policy(k8s: Module, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = k8s.resource("kubernetes_network_policy_v1", name)["spec"][0]
    return spec


def test_default_deny_closes_the_namespace(k8s: Module) -> None:
    deny = policy(k8s, "default_deny")
    assert deny["pod_selector"] == [{}]
    assert deny["policy_types"] == ["Ingress"]
    assert "ingress" not in deny


def test_only_qmill_pods_reach_nats_and_valkey(k8s: Module) -> None:
    require_binary("terraform", "evaluates the provider-free chart values module")
    values = chart_values()
    outputs = values.outputs()
    clients = k8s.locals["client_components"]
    components = {
        name: pod_labels(k8s, kind, name)["app.kubernetes.io/component"]
        for kind, name in [
            ("kubernetes_deployment_v1", "worker"),
            ("kubernetes_deployment_v1", "function"),
            ("kubernetes_job_v1", "setup"),
        ]
    }
    assert sorted(components.values()) == sorted(clients)
    for chart, release, pods, port in [
        ("nats", values.arguments["nats_name"], "nats_pods", "nats_client_port"),
        ("valkey", values.arguments["redis_name"], "valkey_pods", "redis_port"),
    ]:
        spec = policy(k8s, chart)
        # The policy selects the chart's pods, as Helm renders them.
        objects = render(chart, outputs[chart], release, NAMESPACE)
        kind = "StatefulSet" if chart == "nats" else "Deployment"
        rendered = one(objects, kind)["spec"]["template"]["metadata"]["labels"]
        selector = k8s.resolve(k8s.locals[pods]["app.kubernetes.io/instance"])
        assert spec["pod_selector"][0]["match_labels"] == f"${{local.{pods}}}"
        assert rendered["app.kubernetes.io/instance"] == selector
        # Clients: qmill pods of the client components, on the client port only.
        client_rule = spec["ingress"][0]
        peer = client_rule["from"][0]["pod_selector"][0]
        assert peer["match_labels"] == {"app.kubernetes.io/part-of": "qmill"}
        (expression,) = peer["match_expressions"]
        assert expression["key"] == "app.kubernetes.io/component"
        assert expression["values"] == "${local.client_components}"
        assert client_rule["ports"][0]["port"] == f"${{tostring(local.{port})}}"
        assert "namespace_selector" not in client_rule["from"][0]
    # NATS: routes from its own servers, monitoring from KEDA's namespace only.
    nats = policy(k8s, "nats")
    assert len(nats["ingress"]) == 3
    routes, monitor = nats["ingress"][1], nats["ingress"][2]
    assert routes["from"][0]["pod_selector"][0]["match_labels"] == "${local.nats_pods}"
    assert routes["ports"][0]["port"] == "${tostring(local.nats_cluster_port)}"
    namespace = monitor["from"][0]["namespace_selector"][0]["match_labels"]
    assert namespace == {"kubernetes.io/metadata.name": "${var.keda_namespace}"}
    assert monitor["ports"][0]["port"] == "${tostring(local.nats_monitor_port)}"
    assert len(policy(k8s, "valkey")["ingress"]) == 1


def test_only_the_functions_take_outside_connections(k8s: Module) -> None:
    functions = policy(k8s, "functions")
    assert functions["pod_selector"][0]["match_labels"]["app.kubernetes.io/component"] == "function"
    (rule,) = functions["ingress"]
    assert "from" not in rule  # the Ingress controller, wherever it runs
    assert rule["ports"][0]["port"] == "${tostring(local.function_port)}"
    workers = policy(k8s, "worker_metrics")
    (rule,) = workers["ingress"]
    assert rule["ports"][0]["port"] == "${tostring(local.worker_metrics_port)}"
    # Every policy is an ingress policy: egress is not restricted.
    for name in k8s.of_kind("kubernetes_network_policy_v1"):
        assert policy(k8s, name)["policy_types"] == ["Ingress"], name
    assert list(blocks(k8s.of_kind("kubernetes_network_policy_v1"), "egress")) == []
