"""The Cloud Run module works on a fresh project and the first apply (read with python-hcl2;
the google providers cannot be downloaded here, tests/infra/test_provider_schemas.py checks
the argument names against their schemas).

Each test names the issue-16 defect it would have caught.
"""

from __future__ import annotations

import json
import re
from typing import Any

from qmill.server import routes
from tests.infra.hcl import TERRAFORM_DIR, Module, blocks, dynamic_blocks, module

ENABLEMENT = "google_project_service.apis"
_REFERENCE = re.compile(r"\b(data\.)?(google_[a-z0-9_]+|random_[a-z_]+)\.([a-z0-9_]+)\b")


def _nodes(mod: Module) -> dict[str, dict[str, Any]]:
    """Every resource and data block by address ("google_x.y", "data.google_x.y")."""
    nodes = {f"{kind}.{name}": body for (kind, name), body in mod.resources.items()}
    nodes.update({f"data.{kind}.{name}": body for (kind, name), body in mod.data.items()})
    return nodes


_LOCAL = re.compile(r"\blocal\.([a-z0-9_]+)")


def _references(body: Any, locals_: dict[str, Any], seen: frozenset[str] = frozenset()) -> set[str]:
    """Resources and data sources body refers to, through locals too."""
    text = str(body)
    found = set()
    for match in _REFERENCE.finditer(text):
        data, kind, name = match.groups()
        found.add(f"{'data.' if data else ''}{kind}.{name}")
    for name in set(_LOCAL.findall(text)) - seen:
        if name in locals_:
            found |= _references(locals_[name], locals_, seen | {name})
    return found


def test_every_google_api_call_waits_for_the_api_to_be_enabled() -> None:
    """Fresh project: data sources, service accounts and the global address were read or
    created before google_project_service enabled their APIs; the first plan failed."""
    cloudrun = module("cloudrun")
    nodes = _nodes(cloudrun)
    after: dict[str, bool] = {ENABLEMENT: True}

    def waits(address: str, seen: frozenset[str] = frozenset()) -> bool:
        if address in after:
            return after[address]
        if address in seen or address not in nodes:
            return False
        body = nodes[address]
        result = ENABLEMENT in str(body.get("depends_on", "")) or any(
            waits(ref, seen | {address}) for ref in _references(body, cloudrun.locals) - {address}
        )
        after[address] = result
        return result

    google = [a for a in nodes if "google_" in a and a != ENABLEMENT]
    assert len(google) > 30
    early = [a for a in google if not waits(a)]
    assert not early, f"not after {ENABLEMENT}: {early}"
    for data in ("data.google_compute_zones.available", "data.google_compute_image.cos"):
        assert ENABLEMENT in str(nodes[data]["depends_on"]), data


def test_a_cos_release_does_not_replace_every_nats_vm() -> None:
    cloudrun = module("cloudrun")
    vm = cloudrun.resource("google_compute_instance", "nats")
    (lifecycle,) = vm["lifecycle"]
    assert "${boot_disk[0].initialize_params[0].image}" in str(lifecycle["ignore_changes"])
    assert vm["boot_disk"][0]["initialize_params"][0]["image"] == (
        "${data.google_compute_image.cos.self_link}"
    )


def test_each_nats_server_advertises_its_own_address() -> None:
    """KEDA and clients follow /varz connect_urls; every interface's address was listed."""
    vm = module("cloudrun").resource("google_compute_instance", "nats")
    user_data = vm["metadata"]["user-data"]
    assert "google_compute_address.nats[count.index].address}:${local.nats_client_port}" in (
        user_data
    )
    assert "client_advertise" in user_data


def test_nats_clients_authenticate() -> None:
    """The servers had no authentication; anyone on the VPC could read or delete tasks."""
    cloudrun = module("cloudrun")
    vm = cloudrun.resource("google_compute_instance", "nats")
    user_data = vm["metadata"]["user-data"]
    assert "random_password.nats.bcrypt_hash" in user_data
    assert "random_password.nats.result" not in user_data  # the VM gets only the hash
    init = (cloudrun.path / "templates" / "nats-cloud-init.yaml.tftpl").read_text()
    assert "include ./auth.conf" in init and "authorization {" in init
    url = cloudrun.resource("google_secret_manager_secret_version", "nats_url")["secret_data"]
    assert "random_password.nats.result" in url and "range(var.nats_nodes)" in url


def test_the_autoscaler_runs_a_current_crema_release() -> None:
    cloudrun = module("cloudrun")
    image = cloudrun.variables["autoscaler_image"]["default"]
    assert image.startswith("us-central1-docker.pkg.dev/cloud-run-oss-images/crema-v1/autoscaler:")
    assert image.rsplit(":", 1)[1] not in {"1.0", "1.1", "latest"}, image


def test_memorystore_never_evicts_task_state() -> None:
    """Every task record has a TTL: volatile-lru (the default) would evict pending tasks."""
    redis = module("cloudrun").resource("google_redis_instance", "qmill")
    assert redis["redis_configs"]["maxmemory-policy"] == "noeviction"
    persistence = redis["persistence_config"][0]
    assert persistence["persistence_mode"] == "RDB"
    assert persistence["rdb_snapshot_period"] == "ONE_HOUR"  # Memorystore's shortest
    assert redis["tier"] == "${var.redis_tier}"
    assert module("cloudrun").variables["redis_tier"]["default"] == "STANDARD_HA"


def test_function_memory_is_the_measured_need() -> None:
    cloudrun = module("cloudrun")
    assert "function_memory" not in cloudrun.variables
    service = cloudrun.resource("google_cloud_run_v2_service", "function")
    (container,) = service["template"][0]["containers"]
    limits = container["resources"][0]["limits"]
    assert limits["memory"] == "${module.shared.function_memory_mib}Mi"
    (lifecycle,) = service["lifecycle"]
    assert "module.shared.function_min_cpu" in lifecycle["precondition"][0]["condition"]


def test_the_worker_pool_follows_cloud_runs_cpu_per_memory_rule() -> None:
    cloudrun = module("cloudrun")
    rule = cloudrun.locals["cloud_run_min_cpu_over_mib"]
    assert rule == {"4096": 2, "8192": 4, "16384": 6, "24576": 8}
    call = cloudrun.modules["shared"]
    assert call["platform_min_cpu_over_mib"] == "${local.cloud_run_min_cpu_over_mib}"


def test_the_setup_job_runs_before_any_worker_or_autoscaler() -> None:
    """Workers never started on a fresh install: the consumer existed only once a worker
    ran, and the autoscaler cannot scale from zero on a consumer that does not exist."""
    cloudrun = module("cloudrun")
    job = cloudrun.resource("google_cloud_run_v2_job", "setup")
    assert job["provider"] == "google-beta"  # run_execution_token is a beta argument
    assert "run_execution_token" in job  # apply waits for a successful execution
    (container,) = list(blocks(job, "containers"))
    assert container["command"] == ["/bin/sh", "-c", "until qmill-setup; do sleep 5; done"]
    assert job["template"][0]["template"][0]["timeout"] == "${var.setup_timeout_seconds}s"
    assert container["image"] == "${module.shared.functions_image}"
    (dynamic_env,) = [d["env"] for d in container["dynamic"]]
    assert dynamic_env["for_each"] == "${module.shared.function_env}"
    for kind, name in (
        ("google_cloud_run_v2_worker_pool", "worker"),
        ("google_cloud_run_v2_service", "autoscaler"),
    ):
        depends = cloudrun.resource(kind, name)["depends_on"]
        assert "${google_cloud_run_v2_job.setup}" in depends, (kind, name)
    assert "${google_compute_instance.nats}" in job["depends_on"]


def test_worker_replicas_agree_between_the_pool_and_the_autoscaler() -> None:
    cloudrun = module("cloudrun")
    pool = cloudrun.resource("google_cloud_run_v2_worker_pool", "worker")
    count = pool["scaling"][0]["manual_instance_count"]
    assert "var.autoscaler_enabled ? var.worker_min_replicas" in count
    assert "max(var.worker_min_replicas, 1)" in count  # no autoscaler: never zero workers
    crema = cloudrun.locals["crema_config"]["spec"]["scaledObjects"][0]["spec"]
    assert crema["minReplicaCount"] == "${var.worker_min_replicas}"
    assert "activationLagThreshold" in str(crema["triggers"])


def test_the_example_keeps_its_state_in_a_bucket() -> None:
    """The state holds the Redis AUTH string and the NATS password."""
    text = (TERRAFORM_DIR / "examples" / "cloudrun" / "main.tf").read_text()
    assert re.search(r'^\s*backend "gcs" \{', text, re.M), "no GCS backend in the example"
    assert "secret" in text.lower()


# --- metrics (Managed Service for Prometheus sidecar) and probes -----------------------

SIDECAR_HOSTS = {
    "functions": ("google_cloud_run_v2_service", "function"),
    "worker": ("google_cloud_run_v2_worker_pool", "worker"),
}


def test_functions_and_workers_are_scraped_by_the_gmp_sidecar() -> None:
    """Cloud Run scraped nothing: no worker or function metric left an instance."""
    cloudrun = module("cloudrun")
    assert cloudrun.variables["metrics_sidecar"]["default"] is True
    image = cloudrun.variables["metrics_sidecar_image"]["default"]
    assert image.startswith("us-docker.pkg.dev/cloud-ops-agents-artifacts/cloud-run-gmp-sidecar/")
    assert re.fullmatch(r"\d+\.\d+\.\d+", image.rsplit(":", 1)[1]), image  # pinned
    ports = {"functions": "function_port", "worker": "worker_metrics_port"}
    for target, (kind, name) in SIDECAR_HOSTS.items():
        config = cloudrun.locals["gmp_configs"][target]
        assert (config["apiVersion"], config["kind"]) == (
            "monitoring.googleapis.com/v1beta",
            "RunMonitoring",
        )
        (endpoint,) = config["spec"]["endpoints"]
        assert endpoint["port"] == f"${{tostring(local.{ports[target]})}}", target
        assert cloudrun.resolve(endpoint["path"]) == routes.METRICS_PATH
        template = cloudrun.resource(kind, name)["template"][0]
        (main,) = template["containers"]  # the qmill container, always there
        (sidecar,) = list(dynamic_blocks(template, "containers"))
        assert sidecar["for_each"] == f'${{var.metrics_sidecar ? ["{target}"] : []}}'
        (content,) = sidecar["content"]
        assert content["image"] == "${var.metrics_sidecar_image}"
        assert "ports" not in content  # the qmill container stays the ingress container
        assert content["depends_on"] == [main["name"]], target
        (mount,) = content["volume_mounts"]
        assert cloudrun.resolve(mount["mount_path"]) == "/etc/rungmp"  # entrypoint.go
        (volume,) = list(dynamic_blocks(template, "volumes"))
        (secret,) = volume["content"][0]["secret"]
        assert secret["secret"] == (
            "${google_secret_manager_secret.gmp_config[volumes.value].secret_id}"
        )
        assert cloudrun.resolve(secret["items"][0]["path"]) == "config.yaml"
        assert volume["content"][0]["name"] == mount["name"]
        depends = str(cloudrun.resource(kind, name)["depends_on"])
        assert "google_secret_manager_secret_version.gmp_config" in depends
        assert "google_secret_manager_secret_iam_member.gmp_config" in depends
    # The scraped ports are the ones the processes listen on.
    assert cloudrun.resolve("${local.function_port}") == 8080
    assert cloudrun.resolve("${local.worker_metrics_port}") == 9100
    (functions,) = cloudrun.resource("google_cloud_run_v2_service", "function")["template"][0][
        "containers"
    ]
    assert functions["ports"][0]["container_port"] == "${local.function_port}"


def test_the_sidecars_may_write_metrics_and_read_their_config() -> None:
    cloudrun = module("cloudrun")
    writer = cloudrun.resource("google_project_iam_member", "metric_writer")
    assert writer["role"] == "roles/monitoring.metricWriter"
    assert writer["for_each"] == "${local.gmp_targets}"
    accounts = cloudrun.locals["gmp_service_accounts"]
    assert accounts == {
        "functions": "${google_service_account.functions.email}",
        "worker": "${google_service_account.worker.email}",
    }
    reader = cloudrun.resource("google_secret_manager_secret_iam_member", "gmp_config")
    assert reader["role"] == "roles/secretmanager.secretAccessor"
    assert reader["member"] == writer["member"]
    assert "metrics_sidecar" in cloudrun.locals["gmp_targets"]
    version = cloudrun.resource("google_secret_manager_secret_version", "gmp_config")
    assert version["secret_data"] == "${yamlencode(each.value)}"
    apis = str(cloudrun.resource("google_project_service", "apis")["for_each"])
    assert "monitoring.googleapis.com" in apis


def test_function_liveness_probe_is_livez_on_the_function_port() -> None:
    cloudrun = module("cloudrun")
    service = cloudrun.resource("google_cloud_run_v2_service", "function")
    (container,) = service["template"][0]["containers"]
    (probe,) = container["liveness_probe"]
    (http,) = probe["http_get"]
    assert cloudrun.resolve(http["path"]) == routes.LIVEZ_PATH
    assert http["port"] == "${local.function_port}"
    # A function whose NATS or Redis is down still starts (and answers 503).
    assert container["startup_probe"][0]["tcp_socket"][0]["port"] == "${local.function_port}"


def test_the_worker_pool_has_no_probe_because_the_provider_has_none() -> None:
    """google-beta 6.50 has no probes on worker pool containers; once a bump brings
    liveness_probe, this fails: probe GET /livez on the worker's metrics port then."""
    schema = json.loads((TERRAFORM_DIR / "schemas" / "google-beta.json").read_text())
    pool = schema["resource"]["google_cloud_run_v2_worker_pool"]
    containers = pool["blocks"]["template"]["blocks"]["containers"]
    assert "liveness_probe" not in containers["blocks"], "add the worker's /livez probe"
    assert "depends_on" in containers["arguments"]  # several containers: the sidecar fits
    readme = (module("cloudrun").path / "README.md").read_text()
    assert "liveness_probe" in readme
