"""The Terraform deployment agrees with the code and with compose.

Names come from the code (qmill.server.constants, .config, .bus), never copied here.
The shared module uses no provider, so Terraform itself evaluates it offline (init,
validate, plan); the kubernetes and cloudrun modules need provider schemas the build
machines cannot download, so they are parsed with python-hcl2.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from qmill.server import bus, constants, gateway
from qmill.server.config import (
    PROCESS_OVERHEAD_BYTES,
    LimitsSettings,
    NatsSettings,
    Settings,
    WorkerSettings,
    env_names,
)
from tests.conftest import require_binary
from tests.infra import deployment
from tests.infra.conftest import sample_path
from tests.infra.hcl import (
    MODULES,
    TERRAFORM_DIR,
    Module,
    SharedModule,
    blocks,
    dynamic_blocks,
    is_literal,
    load,
    module,
    run,
)

TARGETS = ("kubernetes", "cloudrun")
# Environment variables that are not qmill settings but are read by what runs qmill.
NON_QMILL_ENV = {
    "WORKERS",  # functions-framework's server processes
    "CREMA_CONFIG",  # the Cloud Run autoscaler's own settings
    "OUTPUT_SCALER_METRICS",
}

TERRAFORM_WHY = "evaluates the provider-free shared module (the HCL checks run without it)"


@pytest.fixture(scope="module")
def needs_terraform() -> str:
    return require_binary("terraform", TERRAFORM_WHY)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, needs_terraform: str) -> SharedModule:
    return SharedModule(tmp_path_factory.mktemp("tf-shared"))


@pytest.fixture(scope="module")
def defaults(shared: SharedModule) -> dict[str, Any]:
    return shared.outputs()


@pytest.fixture(scope="module", params=TARGETS)
def target(request: pytest.FixtureRequest) -> Module:
    name: str = request.param
    return module(name)


def settings_for(concurrency: int, qubits: int, budget_mb: int) -> Settings:
    return Settings(
        worker=WorkerSettings(max_concurrent_tasks=concurrency, memory_budget_mb=budget_mb),
        limits=LimitsSettings(max_qubits=qubits),
    )


def worker_settings(outputs: dict[str, Any]) -> Settings:
    """The Settings a worker container gets from the shared module's environment."""
    env = outputs["worker_env"]
    return settings_for(
        int(env["QMILL_WORKER__MAX_CONCURRENT_TASKS"]),
        int(env["QMILL_LIMITS__MAX_QUBITS"]),
        int(env["QMILL_WORKER__MEMORY_BUDGET_MB"]),
    )


def qmill_containers(mod: Module) -> Iterator[tuple[str, dict[str, Any]]]:
    """(resource, container) for every container that runs a qmill image."""
    for (kind, name), body in mod.resources.items():
        for key in ("container", "containers"):
            for container in blocks(body, key):
                image = str(container.get("image", ""))
                if (
                    "module.shared.functions_image" in image
                    or "module.shared.worker_image" in image
                ):
                    yield f"{kind}.{name}", container


def is_setup(container: dict[str, Any]) -> bool:
    """The qmill-setup job's container (stream and consumers), not a function."""
    return "qmill-setup" in " ".join(container.get("command", []))


def env_of(container: dict[str, Any], shared_outputs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Name -> env block, the dynamic ones expanded from the shared module's outputs."""
    found: dict[str, dict[str, Any]] = {}
    for env in container.get("env", []):
        name = env["name"]
        assert is_literal(name), f"env name {name!r} should be a literal"
        found[name] = env
    for dynamic in dynamic_blocks(container, "env"):
        source = dynamic["for_each"]
        assert source.startswith("${module.shared.") and source.endswith("}"), source
        output = source[len("${module.shared.") : -1]
        for name, value in shared_outputs[output].items():
            found[name] = {"name": name, "value": value}
    return found


# --- the shared module, offline ------------------------------------------------------


@pytest.mark.usefixtures("needs_terraform")
def test_terraform_fmt() -> None:
    done = run(
        ["fmt", "-check", "-recursive", "-diff", "-no-color", str(TERRAFORM_DIR)],
        Path(os.devnull),
        TERRAFORM_DIR,
    )
    assert done.returncode == 0, f"terraform fmt would change:\n{done.stdout}{done.stderr}"


def test_shared_module_validates(shared: SharedModule) -> None:
    done = run(["validate", "-no-color"], shared.data_dir, shared.path)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(("concurrency", "qubits"), [(2, 26), (1, 20), (4, 28), (8, 10), (3, 1)])
def test_worker_memory_is_settings_worker_memory_bytes(
    shared: SharedModule, concurrency: int, qubits: int
) -> None:
    out = shared.outputs(worker_max_concurrent_tasks=concurrency, max_qubits=qubits)
    settings = worker_settings(out)
    assert settings.worker.concurrency == concurrency
    assert settings.limits.max_qubits == qubits
    # The budget holds every slot at full width, so the widest circuit is accepted ...
    assert settings.memory_budget_bytes >= concurrency * 16 * 2**qubits
    assert settings.statevector_qubit_limit == qubits
    # ... and the container's limit covers what the code says that worker needs.
    assert out["worker_memory_bytes"] == settings.worker_memory_bytes
    assert out["worker_memory_mib"] * 1024 * 1024 >= settings.worker_memory_bytes
    assert out["function_env"]["QMILL_LIMITS__MAX_QUBITS"] == str(qubits)


def test_default_worker_memory_fits_default_settings(defaults: dict[str, Any]) -> None:
    settings = worker_settings(defaults)
    assert defaults["worker_memory_mib"] * 2**20 >= settings.worker_memory_bytes
    # The default budget is the code's default for the default sizes.
    assert settings.worker.memory_budget_mb == WorkerSettings().memory_budget_mb


@pytest.mark.parametrize("grace", [0, 20, 45.5])
def test_termination_grace_is_longer_than_the_workers(shared: SharedModule, grace: float) -> None:
    out = shared.outputs(worker_grace_period_seconds=grace)
    worker_grace = float(out["worker_env"]["QMILL_WORKER__GRACE_PERIOD_SECONDS"])
    assert worker_grace == grace
    assert out["termination_grace_period_seconds"] > worker_grace


def test_platform_stop_timeout_caps_the_workers_grace(shared: SharedModule) -> None:
    out = shared.outputs(platform_stop_seconds=10, worker_grace_period_seconds=20)
    worker_grace = float(out["worker_env"]["QMILL_WORKER__GRACE_PERIOD_SECONDS"])
    assert worker_grace < 10 == out["termination_grace_period_seconds"]
    assert WorkerSettings().grace_period_seconds > worker_grace  # the cap did something


def test_platform_memory_bound_refuses_a_worker_that_does_not_fit(shared: SharedModule) -> None:
    fits = settings_for(2, 30, 2 * 16 * 2**30 // 2**20).worker_memory_bytes <= 32768 * 2**20
    done = shared.plan(platform_max_memory_mib=32768, max_qubits=30)
    assert (done.returncode == 0) == fits
    assert shared.plan(platform_max_memory_mib=32768, max_qubits=26).returncode == 0


@pytest.mark.parametrize(
    ("variable", "model", "field"),
    [
        ("max_qubits", LimitsSettings, "max_qubits"),
        ("worker_max_concurrent_tasks", WorkerSettings, "max_concurrent_tasks"),
        ("worker_max_attempts", WorkerSettings, "max_attempts"),
        ("nats_stream_replicas", NatsSettings, "stream_replicas"),
    ],
)
def test_variable_upper_bounds_follow_settings(
    shared: SharedModule, variable: str, model: type[BaseModel], field: str
) -> None:
    uppers = [m.le for m in model.model_fields[field].metadata if hasattr(m, "le")]
    assert len(uppers) == 1, model.model_fields[field].metadata
    upper = uppers[0]
    assert shared.plan(**{variable: upper}).returncode == 0
    rejected = shared.plan(**{variable: upper + 1})
    assert rejected.returncode != 0 and "Invalid value for variable" in rejected.stderr


def test_zero_concurrency_is_refused(shared: SharedModule) -> None:
    # 0 means os.cpu_count(), which in a container counts the node's cores.
    assert shared.plan(worker_max_concurrent_tasks=0).returncode != 0


def test_extra_env_accepts_only_settings_the_code_reads(shared: SharedModule) -> None:
    readable = sorted(env_names() - {"QMILL_CONFIG"})
    name = next(n for n in readable if n.startswith("QMILL_SERVER__MAX_WAIT"))
    out = shared.outputs(extra_env={name: "60"})
    assert out["worker_env"][name] == "60" and out["function_env"][name] == "60"
    unknown = shared.plan(extra_env={"QMILL_WORKER__NO_SUCH_KEY": "1"})
    assert unknown.returncode != 0 and "QMILL_WORKER__NO_SUCH_KEY" in unknown.stderr
    secret = shared.plan(extra_env={"QMILL_REDIS__URL": "redis://x"})
    assert secret.returncode != 0


def test_auth_needs_a_key_hash(shared: SharedModule) -> None:
    assert shared.plan(api_key_hashes=[]).returncode != 0
    assert shared.plan(api_key_hashes=[], auth_enabled=False).returncode == 0
    assert shared.plan(api_key_hashes=["not-a-digest"]).returncode != 0


# --- names, routes, ports: the code's own --------------------------------------------


def test_constants_are_the_codes() -> None:
    shared = module("shared")
    c = shared.locals
    described = bus.describe(Settings())
    assert c["nats_stream"] == constants.STREAM_NAME == described["stream"]
    assert c["worker_consumer"] == constants.WORKER_CONSUMER == described["consumer"]
    assert c["worker_bulk_consumer"] == constants.BULK_WORKER_CONSUMER == described["bulk_consumer"]
    assert c["nats_sync_interval"] == constants.NATS_SYNC_INTERVAL
    assert c["redis_appendfsync"] == constants.REDIS_APPENDFSYNC
    assert tuple(c["function_names"]) == constants.FUNCTION_NAMES
    assert [(r["method"], r["path"], r["function"]) for r in c["routes"]] == list(constants.ROUTES)
    assert c["process_overhead_bytes"] == PROCESS_OVERHEAD_BYTES
    assert set(c["known_env"]) <= env_names()
    assert set(c["reserved_env"]) <= set(c["known_env"])
    assert len(c["known_env"]) == len(set(c["known_env"]))


def test_shared_outputs_follow_the_routes(defaults: dict[str, Any]) -> None:
    routes = [(r["method"], r["path"], r["function"]) for r in defaults["routes"]]
    assert routes == list(constants.ROUTES)
    # Each routed path, matched as the Ingress / URL map matches it, reaches the function
    # the gateway picks.
    for path in defaults["http_paths"]:
        probe = path["path"] + ("3f2c" if path["match"] == "prefix" else "")
        assert gateway.route(probe) == path["function"], path
    expected = {(p, f) for _, p, f in constants.ROUTES if "{id}" not in p}
    assert {(p["path"], p["function"]) for p in defaults["http_paths"]} == expected
    # A route with an {id} segment has no path of its own: the prefix path above it (an
    # Ingress Prefix, a URL map "/tasks/*") covers it and must reach the same function.
    for _, pattern, function in constants.ROUTES:
        if "{id}" in pattern:
            probe = sample_path(pattern)
            covering = [
                p["function"]
                for p in defaults["http_paths"]
                if p["match"] == "prefix" and probe.startswith(p["path"])
            ]
            assert covering and set(covering) == {function} == {gateway.route(probe)}, pattern


def test_targets_link_the_shared_variables_and_constants(target: Module) -> None:
    for name in ("variables.tf", "constants.tf"):
        link = target.path / f"shared_{name}"
        assert link.is_symlink() and link.resolve() == (MODULES / "shared" / name).resolve()


def platform_variables() -> set[str]:
    """The shared module's inputs a target sets itself (platform.tf), not its users."""
    doc = load(MODULES / "shared" / "platform.tf")
    return {name for block in doc.get("variable", []) for name in block}


def test_targets_pass_every_shared_variable_on(target: Module) -> None:
    shared = module("shared")
    call = target.modules["shared"]
    assert call["source"] == "../shared"
    user_facing = set(shared.variables) - platform_variables()
    for name in user_facing:
        assert name in call, f"{target.path.name} does not pass {name} to the shared module"
        assert f"var.{name}" in call[name], (name, call[name])


# Each target's NATS server count, which the task stream's replicas are clamped to.
CLUSTER_SIZE = {"kubernetes": "var.nats_replicas", "cloudrun": "var.nats_nodes"}


def test_targets_pass_their_nats_cluster_size(target: Module) -> None:
    """R3 on a one-server cluster is refused by JetStream: every submit would fail."""
    call = target.modules["shared"]
    if target.path.name == "kubernetes" and "nats_cluster_size" not in call:
        pytest.xfail("modules/kubernetes passes var.nats_replicas once k8s lands it (contract 2)")
    assert call["nats_cluster_size"] == "${" + CLUSTER_SIZE[target.path.name] + "}"
    assert call["nats_stream_replicas"] == "${var.nats_stream_replicas}"
    required = {name for name, v in module("shared").variables.items() if "default" not in v}
    assert required <= set(call), sorted(required - set(call))


# --- KEDA / CREMA: the nats-jetstream trigger ----------------------------------------


def _triggers(mod: Module) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for body in mod.of_kind("kubernetes_manifest").values():
        spec = body["manifest"]["spec"]
        # Kubernetes keeps each lane's metadata in a local (keda.tf).
        found += [{**t, "metadata": mod.resolve(t["metadata"])} for t in spec.get("triggers", [])]
    if "crema_config" in mod.locals:
        for scaled in mod.locals["crema_config"]["spec"]["scaledObjects"]:
            found += scaled["spec"]["triggers"]
    return [t for t in found if t["type"] == "nats-jetstream"]


def test_autoscaler_triggers_name_the_stream_and_both_lanes_consumers(target: Module) -> None:
    """One trigger per consumer the workers read: with only bulk work queued, a trigger
    on the normal lane alone would see no lag and scale the workers to zero."""
    described = bus.describe(Settings())
    triggers = _triggers(target)
    consumers = [target.resolve(t["metadata"]["consumer"]) for t in triggers]
    assert sorted(consumers) == sorted([described["consumer"], described["bulk_consumer"]])
    assert len({t["name"] for t in triggers}) == len(triggers)
    monitor_port = deployment.expected().nats_monitor_port
    for trigger in triggers:
        meta = trigger["metadata"]
        assert target.resolve(meta["stream"]) == described["stream"]
        assert target.resolve(meta["account"]) == "$G"
        endpoint = target.resolve(meta["natsServerMonitoringEndpoint"])
        assert str(endpoint).endswith(f":{monitor_port}"), endpoint
        lag = target.resolve(meta["lagThreshold"])
        assert lag == "${tostring(module.shared.tasks_per_replica)}"
        assert meta["activationLagThreshold"] == "0"


def test_scaled_object_bounds_are_the_replica_variables() -> None:
    k8s = module("kubernetes")
    scaled = k8s.resource("kubernetes_manifest", "worker_scaledobject")["manifest"]
    spec = scaled["spec"]
    assert scaled["kind"] == "ScaledObject"
    assert spec["minReplicaCount"] == "${var.worker_min_replicas}"
    assert spec["maxReplicaCount"] == "${var.worker_max_replicas}"
    assert "kubernetes_deployment_v1.worker" in spec["scaleTargetRef"]["name"]
    crema = module("cloudrun").locals["crema_config"]["spec"]["scaledObjects"][0]["spec"]
    assert crema["minReplicaCount"] == "${var.worker_min_replicas}"
    assert crema["maxReplicaCount"] == "${var.worker_max_replicas}"
    assert "google_cloud_run_v2_worker_pool.worker.name" in crema["scaleTargetRef"]["name"]


def test_tasks_per_replica_defaults_to_the_workers_slots(defaults: dict[str, Any]) -> None:
    slots = int(defaults["worker_env"]["QMILL_WORKER__MAX_CONCURRENT_TASKS"])
    assert defaults["tasks_per_replica"] == slots


# --- containers: env, images, memory, probes ------------------------------------------


def test_every_qmill_env_var_is_a_setting_the_code_reads(
    target: Module, defaults: dict[str, Any]
) -> None:
    containers = list(qmill_containers(target))
    assert len(containers) >= 2, "expected the function and worker containers"
    readable = env_names()
    for where, container in containers:
        env = env_of(container, defaults)
        qmill = {name for name in env if name.startswith("QMILL_")}
        assert qmill <= readable, (where, sorted(qmill - readable))
        assert set(env) - qmill <= NON_QMILL_ENV, (where, sorted(set(env) - qmill))
        # Every container can reach NATS and Redis (qmill-setup, which creates the stream
        # and consumers, only NATS); the Redis URL (it holds the password) only ever from
        # a secret, and on Cloud Run the NATS URL too (it holds the NATS password).
        needs = (
            {"QMILL_NATS__URL"} if is_setup(container) else {"QMILL_NATS__URL", "QMILL_REDIS__URL"}
        )
        assert needs <= qmill, where
        secret_urls = ["QMILL_REDIS__URL"] if "QMILL_REDIS__URL" in needs else []
        if target.path.name == "cloudrun":
            secret_urls.append("QMILL_NATS__URL")
        for name in secret_urls:
            url = env[name]
            assert "value" not in url, (where, name)
            assert "secret_key_ref" in str(url.get("value_from") or url.get("value_source")), where
        if "functions_image" in container["image"] and not is_setup(container):
            # API key hashes, from a secret too; auth on by default.
            hashes = env["QMILL_AUTH__API_KEY_HASHES"]
            assert "value" not in hashes, where
            assert "secret_key_ref" in str(hashes.get("value_from") or hashes.get("value_source"))
            assert env["QMILL_AUTH__ENABLED"]["value"] == "true"


def test_secret_keys_are_settings_the_code_reads() -> None:
    k8s = module("kubernetes")
    data = k8s.resource("kubernetes_secret_v1", "qmill")["data"]
    keys = {k8s.resolve(key.replace("${(", "${").replace(")}", "}")) for key in data}
    expected = {"QMILL_NATS__URL", "QMILL_REDIS__URL", "QMILL_AUTH__API_KEY_HASHES"}
    assert keys == expected and keys <= env_names()
    # Every secret-sourced env var reads the key of its own name.
    for _, container in qmill_containers(k8s):
        for env in container["env"]:
            if "value_from" in env:
                key = env["value_from"][0]["secret_key_ref"][0]["key"]
                assert k8s.resolve(key) == env["name"] and env["name"] in keys


def test_function_containers_run_the_function_entry_points(
    target: Module, defaults: dict[str, Any]
) -> None:
    functions = {
        name: container
        for name, container in qmill_containers(target)
        if "functions_image" in container["image"] and not is_setup(container)
    }
    assert len(functions) == 1  # one resource with for_each over the function names
    (container,) = functions.values()
    assert container["command"] == ["functions-framework"]
    args = container["args"]
    assert args[0] == "--asgi"
    pairs = dict(zip(args[1::2], args[2::2], strict=True))
    assert pairs["--target"] == "${each.key}"
    assert pairs["--source"] == "/app/functions/${each.key}/main.py"
    assert pairs["--host"] == "0.0.0.0"
    assert pairs["--port"] == "${tostring(local.function_port)}"
    assert target.resolve("${local.function_port}") == deployment.expected().function_port
    for name in constants.FUNCTION_NAMES:
        source = deployment.ROOT / "functions" / name / "main.py"
        assert f"from qmill.server.functions.{name} import {name}\n" in source.read_text()
    assert "WORKERS" in env_of(container, defaults)


def test_worker_container(target: Module, defaults: dict[str, Any]) -> None:
    workers = [c for _, c in qmill_containers(target) if c.get("command") == ["qmill-worker"]]
    assert len(workers) == 1
    (worker,) = workers
    assert worker["command"] == ["qmill-worker"]
    limits = worker["resources"][0]["limits"]
    assert limits["memory"] == "${module.shared.worker_memory_mib}Mi"
    assert limits["cpu"] == "${tostring(module.shared.worker_cpu)}"
    if target.path.name == "kubernetes":
        requests = worker["resources"][0]["requests"]
        assert requests == limits  # memory requested in full: no overcommitted statevectors


def test_kubernetes_worker_grace_and_heartbeat(defaults: dict[str, Any]) -> None:
    k8s = module("kubernetes")
    pod = k8s.resource("kubernetes_deployment_v1", "worker")["spec"][0]["template"][0]["spec"][0]
    assert pod["termination_grace_period_seconds"] == (
        "${module.shared.termination_grace_period_seconds}"
    )
    assert defaults["termination_grace_period_seconds"] > float(
        defaults["worker_env"]["QMILL_WORKER__GRACE_PERIOD_SECONDS"]
    )
    (container,) = pod["container"]
    heartbeat = defaults["worker_env"]["QMILL_WORKER__HEARTBEAT_FILE"]
    assert heartbeat == "/tmp/qmill-worker.alive"
    # The root filesystem is read-only: the heartbeat must be on a writable volume.
    assert container["security_context"][0]["read_only_root_filesystem"] is True
    mounts = {m["mount_path"] for m in container["volume_mount"]}
    assert any(heartbeat.startswith(path.rstrip("/") + "/") for path in mounts), mounts


def test_cloudrun_worker_grace_fits_cloud_runs_stop_timeout() -> None:
    cloudrun = module("cloudrun")
    call = cloudrun.modules["shared"]
    assert cloudrun.resolve(call["platform_stop_seconds"]) == 10
    assert cloudrun.resolve(call["platform_max_memory_mib"]) == 32768


def test_kubernetes_pdbs_select_their_deployments() -> None:
    k8s = module("kubernetes")
    deployments = k8s.of_kind("kubernetes_deployment_v1")
    pdbs = k8s.of_kind("kubernetes_pod_disruption_budget_v1")
    assert set(pdbs) == set(deployments) == {"worker", "function"}
    for name, pdb in pdbs.items():
        selector = pdb["spec"][0]["selector"][0]["match_labels"]
        assert selector == deployments[name]["spec"][0]["selector"][0]["match_labels"]


# --- routing ---------------------------------------------------------------------------


def test_kubernetes_ingress_routes_the_seed_paths() -> None:
    k8s = module("kubernetes")
    ingress = k8s.resource("kubernetes_ingress_v1", "api")
    (paths,) = list(dynamic_blocks(ingress, "path"))
    assert paths["for_each"] == "${module.shared.http_paths}"
    (content,) = paths["content"]
    assert content["path"] == "${path.value.path}"
    assert "Exact" in content["path_type"] and "Prefix" in content["path_type"]
    service = content["backend"][0]["service"][0]
    assert "kubernetes_service_v1.function[path.value.function]" in service["name"]
    port = service["port"][0]["number"]
    assert k8s.resolve(port) == deployment.expected().function_port


def test_cloudrun_url_map_routes_the_seed_paths() -> None:
    cloudrun = module("cloudrun")
    url_map = cloudrun.resource("google_compute_url_map", "api")
    (rules,) = list(dynamic_blocks(url_map, "path_rule"))
    assert rules["for_each"] == "${module.shared.http_paths}"
    (content,) = rules["content"]
    assert "google_compute_backend_service.function[path_rule.value.function]" in content["service"]
    assert '"exact"' in content["paths"][0] and "*" in content["paths"][0]


# --- compose parity: images and ports ------------------------------------------------


def test_images_agree_with_compose(defaults: dict[str, Any]) -> None:
    facts = deployment.expected()
    images = {deployment.split_image(defaults[k]) for k in ("functions_image", "worker_image")}
    assert images == set(facts.images.items()), facts.source
    assert set(facts.images.values()) == {deployment.project_version()}, facts.source


def test_ports_agree_with_compose() -> None:
    facts = deployment.expected()
    c = module("shared").locals
    ours = {
        "function": c["function_port"],
        "nats": c["nats_client_port"],
        "redis": c["redis_port"],
    }
    assert ours == {
        "function": facts.function_port,
        "nats": facts.nats_client_port,
        "redis": facts.redis_port,
    }, facts.source
    assert c["nats_monitor_port"] == facts.nats_monitor_port, facts.source
    # Where compose states a role's ports, ours are among them.
    for role, port in ours.items():
        declared = facts.declared.get(role, set())
        assert not declared or port in declared, (role, port, declared, facts.source)
    declared_nats = facts.declared.get("nats", set())
    assert not declared_nats or c["nats_monitor_port"] in declared_nats


def test_compose_agrees_with_the_agreed_values() -> None:
    compose = deployment.load_compose()
    assert compose is not None, "infra/compose.yaml is missing"
    facts = deployment.from_compose(compose)
    assert facts.images == deployment.AGREED.images


def test_compose_reader_understands_the_usual_forms() -> None:
    facts = deployment.from_compose(
        {
            "services": {
                "submit": {
                    "image": "${QMILL_REGISTRY:-}qmill-functions:${QMILL_VERSION:-0.1.0}",
                    "command": ["functions-framework", "--target", "submit", "--port", "8080"],
                },
                "worker": {"image": "ghcr.io/acme/qmill-worker:0.1.0"},
                "nats": {
                    "image": "nats:2.15.1-alpine",
                    "ports": ["127.0.0.1:4222:4222"],
                    "expose": ["8222"],
                },
                "redis": {"image": "valkey/valkey:8", "ports": [{"target": 6379}]},
            }
        }
    )
    assert facts.images == {"qmill-functions": "0.1.0", "qmill-worker": "0.1.0"}
    assert facts.declared["function"] == {8080}
    assert facts.declared["nats"] == {4222, 8222}
    assert facts.declared["redis"] == {6379}


# --- charts and secrets ---------------------------------------------------------------


# The charts' values: tests/infra/test_charts.py (rendered by Helm).


def test_secrets_are_sensitive_variables_or_secret_stores() -> None:
    k8s = module("kubernetes")
    assert k8s.variables["redis_password"]["sensitive"] is True
    assert "default" not in k8s.variables["redis_password"]
    assert k8s.variables["api_key_hashes"]["sensitive"] is True
    assert module("shared").outputs["api_key_hashes_json"]["sensitive"] is True
    for name, secret in k8s.of_kind("kubernetes_secret_v1").items():
        for value in secret["data"].values():
            assert not is_literal(value), f"kubernetes_secret_v1.{name} holds a literal"
    cloudrun = module("cloudrun")
    version = cloudrun.resource("google_secret_manager_secret_version", "redis_url")
    assert "google_redis_instance.qmill.auth_string" in version["secret_data"]
    redis = cloudrun.resource("google_redis_instance", "qmill")
    assert redis["auth_enabled"] is True


def test_examples_use_the_modules() -> None:
    for name in TARGETS:
        example = Module(TERRAFORM_DIR / "examples" / name)
        assert example.modules["qmill"]["source"] == f"../../modules/{name}"
        assert example.variables["api_key_hashes"]["sensitive"] is True
        if name == "kubernetes":
            assert example.variables["redis_password"]["sensitive"] is True


def test_function_memory_is_composes_measured_limit(defaults: dict[str, Any]) -> None:
    """compose sized submit from a measurement (arbiter + 335 MiB per parse process); the
    shared module's function memory for the same WORKERS is that limit, not less."""
    compose = deployment.load_compose()
    assert compose is not None
    submit = compose["services"]["submit"]
    workers = int(submit["environment"]["WORKERS"])
    limit = str(submit["deploy"]["resources"]["limits"]["memory"])
    assert limit.endswith("M"), limit
    assert workers == defaults["function_workers"]
    assert defaults["function_memory_mib"] >= int(limit[:-1])
    assert (
        defaults["function_env"]["QMILL_WORKER__MEMORY_BUDGET_MB"]
        == (defaults["worker_env"]["QMILL_WORKER__MEMORY_BUDGET_MB"])
    )
