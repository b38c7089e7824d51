"""The autoscalers' nats-jetstream trigger, as the modules render it, against a real
three-node JetStream cluster: KEDA's lookup (tests/infra/keda_nats.py) on /jsz and /varz.

The cluster is tests/clusters/nats.py's (the Cloud Run NATS VMs' template) with one change:
on Cloud Run each server advertises `<its own address>:4222` and serves monitoring on the
same address, port 8222; here the three share 127.0.0.1 on ports of their own, and KEDA,
which keeps only the host of each connect URL, could not tell them apart. So each server
advertises an address of the deployment's form (`ADDRESSES`, client port 4222, as the
module renders `client_advertise`), and `RESOLVER` says which loopback port answers each
name KEDA dials, as the deployment's DNS would:

* Cloud Run: `nats.<name_prefix>.internal` (Cloud DNS, every server) -> one server's
  monitoring port, each in turn; `<address i>:8222` -> server i's.
* Kubernetes: `<nats>-headless.<namespace>.svc.cluster.local` (the headless Service,
  every pod) -> one server's monitoring port, each in turn.

The Kubernetes cluster's servers run with the chart's `cluster { no_advertise: true }`, so
their /varz has no connect_urls and KEDA names each server from the route URLs instead
(`<pod>.<headless>:6222` -> `<pod>.<endpoint>`); loopback routes are IP addresses and
nats-server cannot resolve invented names, so that branch is checked on its URLs alone
(`test_kubernetes_lookup_dials_each_pod_through_the_headless_service`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from qmill.server import constants
from qmill.server.bus import Bus, Lane, stream_config
from qmill.server.config import Settings
from qmill.server.jetstream import ensure_stream
from qmill.server.models.requests import TaskMessage
from tests.clusters.nats import NODES, NatsCluster
from tests.conftest import wait_until
from tests.infra import hcl
from tests.infra.keda_nats import (
    KedaVersion,
    Metric,
    NatsJetStreamScaler,
    ScalerError,
    TriggerMetadata,
    desired_replicas,
)

# The Cloud Run module's compute addresses are assigned at apply time; any will do.
ADDRESSES = [f"10.128.0.{10 + index}" for index in range(NODES)]
NATS_CLIENT_PORT = 4222
# Tasks a function accepted before any worker ever ran, per lane.
QUEUED = {Lane.NORMAL: 5, Lane.BULK: 3}

# Locals Module.resolve cannot evaluate (a conditional, a function call), written out:
# the namespace resource is named var.namespace, and trimsuffix drops the zone's dot.
LOCAL_OVERRIDES = {
    "kubernetes": {"namespace": "${var.namespace}"},
    "cloudrun": {"nats_host": "nats.${var.name_prefix}.internal"},
}
TARGETS = tuple(LOCAL_OVERRIDES)
_PER_REPLICA = "${tostring(module.shared.tasks_per_replica)}"


@functools.cache
def _tasks_per_replica() -> str:
    """`tostring(module.shared.tasks_per_replica)` at the defaults, as Terraform computes
    it (the shared module has no provider, so `terraform console` evaluates it offline)."""
    binary = hcl.terraform()
    if binary is None:
        pytest.skip("terraform is not installed")
    out = subprocess.run(
        [
            binary,
            "console",
            "-var",
            f"api_key_hashes={json.dumps(hcl.BASE_VARIABLES['api_key_hashes'])}",
        ],
        input="tostring(local.tasks_per_replica)",
        capture_output=True,
        text=True,
        check=True,
        cwd=hcl.MODULES / "shared",
        env=hcl._env(Path("/nonexistent")),
        timeout=60,
    ).stdout
    return str(out.strip().strip('"'))


@functools.cache
def _shared_default(variable: str) -> Any:
    return hcl.module("shared").variables[variable]["default"]


def rendered_triggers(target: str) -> list[dict[str, str]]:
    """Each nats-jetstream trigger's metadata, every reference evaluated at the defaults."""
    mod = hcl.module(target)
    mod.locals.update(LOCAL_OVERRIDES[target])
    if target == "kubernetes":
        spec = mod.resource("kubernetes_manifest", "worker_scaledobject")["manifest"]["spec"]
        triggers = spec["triggers"]
    else:
        triggers = mod.locals["crema_config"]["spec"]["scaledObjects"][0]["spec"]["triggers"]
    per_replica = _tasks_per_replica()
    rendered = []
    for trigger in triggers:
        assert trigger["type"] == "nats-jetstream"
        meta = {}
        metadata = mod.resolve(trigger["metadata"])  # a map, or a local holding one
        assert isinstance(metadata, dict), metadata
        for key, value in metadata.items():
            value = str(mod.resolve(value))
            value = value.replace(_PER_REPLICA, per_replica)
            assert "${" not in value, (target, key, value)
            meta[key] = value
        rendered.append(meta)
    return rendered


@pytest.fixture(scope="module")
def triggers() -> dict[str, list[TriggerMetadata]]:
    return {
        target: [TriggerMetadata.parse(m) for m in rendered_triggers(target)] for target in TARGETS
    }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    root = tmp_path_factory.mktemp("keda-nats")
    started = NatsCluster(root)
    for node, address in zip(started.nodes, ADDRESSES, strict=True):
        conf = root / f"{node.name}.conf"
        text, count = re.subn(
            r'client_advertise: "127\.0\.0\.1:\d+"',
            f'client_advertise: "{address}:{NATS_CLIENT_PORT}"',
            conf.read_text(),
        )
        assert count == 1
        conf.write_text(text)
    try:
        started.start()
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def queued(cluster: NatsCluster) -> NatsCluster:
    """The cluster after a function queued `QUEUED` tasks, with no worker ever started."""
    queue_without_consumers(cluster)
    return cluster


def settings_for(cluster: NatsCluster) -> Settings:
    return Settings.model_validate(
        {"nats": {"url": cluster.nodes[0].url, "stream_replicas": NODES}, "log": {"format": "text"}}
    )


def bus_run(cluster: NatsCluster, *, create_consumers: bool, publish: bool) -> None:
    """What a deployment's processes do to NATS: the functions connect (which creates the
    stream) and queue tasks; `qmill-setup` / the functions at startup create the consumers."""

    async def run() -> None:
        bus = Bus(settings_for(cluster), name="keda-test")
        try:
            await bus.connect()
            # An R3 stream takes a moment to elect its leader; a publish before it
            # would be refused (a 503 the client retries).
            await asyncio.to_thread(wait_until, lambda: _has(cluster.stream_leader), 30)
            if create_consumers:
                await bus.ensure_consumer()
            if publish:
                for lane, count in QUEUED.items():
                    for index in range(count):
                        await bus.publish(f"keda-{lane}-{index}", lane=lane)
        finally:
            await bus.close()

    asyncio.run(run())


def queue_without_consumers(cluster: NatsCluster) -> None:
    """What NATS held before the fix, when only a running worker created the consumers:
    the stream, with tasks, and no consumer. A `Bus` now creates the consumers when it
    connects, so this makes the stream and publishes with a bare client."""

    async def run() -> None:
        settings = settings_for(cluster)
        client = await nats.connect(servers=[node.url for node in cluster.nodes])
        try:
            js = client.jetstream()
            await ensure_stream(js, stream_config(settings))
            await asyncio.to_thread(wait_until, lambda: _has(cluster.stream_leader), 30)
            for lane, count in QUEUED.items():
                for index in range(count):
                    message = TaskMessage(task_id=f"keda-{lane}-{index}", state_bytes=0)
                    await js.publish(lane.subject, message.model_dump_json().encode())
        finally:
            await client.close()

    asyncio.run(run())


def _has(lookup: Callable[[], object]) -> bool:
    try:
        lookup()
    except (LookupError, OSError, ValueError):
        return False
    return True


def resolver(
    target: str, meta: TriggerMetadata, cluster: NatsCluster, entry: int
) -> dict[str, str]:
    """The deployment's DNS, for KEDA's dials, with the endpoint's name on server `entry`."""
    monitors = [f"127.0.0.1:{node.monitor_port}" for node in cluster.nodes]
    names = {meta.endpoint: monitors[entry]}
    if target == "cloudrun":
        port = meta.endpoint.rsplit(":", 1)[1]
        names.update({f"{address}:{port}": monitors[i] for i, address in enumerate(ADDRESSES)})
    return names


def poll(scaler: NatsJetStreamScaler) -> Metric | ScalerError:
    try:
        return scaler.poll()
    except ScalerError as exc:
        return exc


# --- the modules' triggers ----------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_module_triggers_parse_as_keda_parses_them(
    target: str, triggers: dict[str, list[TriggerMetadata]]
) -> None:
    # tasks_per_replica: worker_tasks_per_replica (null) or the worker's slots.
    slots = _shared_default("worker_max_concurrent_tasks")
    parsed = triggers[target]
    assert sorted(m.consumer for m in parsed) == sorted(lane.consumer for lane in Lane)
    for meta in parsed:
        assert meta.stream == constants.STREAM_NAME
        assert meta.account == meta.account_id == "$G"  # no accounts: the global account
        assert meta.use_https is False  # the servers' monitoring port is plain HTTP
        assert meta.lag_threshold == slots
        assert meta.activation_lag_threshold == 0
        assert meta.endpoint.endswith(":8222")
    endpoint = {m.endpoint for m in parsed}
    expected = {
        "kubernetes": {"qmill-nats-headless.qmill.svc.cluster.local:8222"},
        "cloudrun": {"nats.qmill.internal:8222"},
    }
    assert endpoint == expected[target]


# --- (a) on main: no consumer until a worker runs, so never a worker ----------------------


@pytest.mark.parametrize("version", list(KedaVersion))
def test_without_the_consumer_keda_errors_and_nothing_scales_from_zero(
    queued: NatsCluster, triggers: dict[str, list[TriggerMetadata]], version: KedaVersion
) -> None:
    """The stream exists and holds tasks (a function queued them) but no worker ever
    created the durable consumers: every poll, from whichever server the endpoint
    resolves to, ends in KEDA's error, and the workers stay at zero."""
    cluster = queued
    for entry in range(NODES):
        results = []
        for meta in triggers["cloudrun"]:
            scaler = NatsJetStreamScaler(meta, version, resolver("cloudrun", meta, cluster, entry))
            result = poll(scaler)
            assert isinstance(result, ScalerError), result
            assert str(result) == f"leader node not found for consumer {meta.consumer}"
            results.append(result)
        lag_threshold = triggers["cloudrun"][0].lag_threshold
        assert (
            desired_replicas(results, lag_threshold=lag_threshold, min_replicas=0, max_replicas=10)
            == 0
        )


# --- (b) the consumers created at deploy time: scale from zero --------------------------


def consumer_leaders(cluster: NatsCluster) -> dict[str, str]:
    jsz = cluster.nodes[0].monitor("/jsz?acc=$G&consumers=true&config=true")
    leaders: dict[str, str] = {}
    for account in jsz.get("account_details", []):
        for stream in account.get("stream_detail", []):
            for consumer in stream.get("consumer_detail", []):
                leaders[consumer["name"]] = consumer.get("cluster", {}).get("leader", "")
    return leaders


@pytest.mark.parametrize("version", list(KedaVersion))
def test_with_the_consumers_created_at_deploy_keda_activates_with_no_worker_ever_run(
    queued: NatsCluster, triggers: dict[str, list[TriggerMetadata]], version: KedaVersion
) -> None:
    cluster = queued
    bus_run(cluster, create_consumers=True, publish=False)  # qmill-setup / functions' startup
    # Each consumer (R3, as its stream) elects a leader of its own; until then /jsz names
    # none and KEDA's lookup, like any client, has no one to ask.
    wait_until(lambda: len([n for n in consumer_leaders(cluster).values() if n]) == len(Lane), 30)
    leaders = consumer_leaders(cluster)
    assert set(leaders) == {lane.consumer for lane in Lane}
    expected_lag = {lane.consumer: count for lane, count in QUEUED.items()}
    for entry in range(NODES):
        results: list[Metric | ScalerError] = []
        for meta in triggers["cloudrun"]:
            scaler = NatsJetStreamScaler(meta, version, resolver("cloudrun", meta, cluster, entry))
            result = poll(scaler)
            assert result == Metric(lag=expected_lag[meta.consumer], active=True), (entry, result)
            # It found the consumer's leader (server i at ADDRESSES[i]) and keeps asking it.
            leader = cluster.node(leaders[meta.consumer]).index
            assert scaler.monitoring_leader_url.startswith(f"http://{ADDRESSES[leader]}:8222/jsz?")
            scaler.dialed.clear()
            assert poll(scaler) == result
            assert scaler.dialed == [scaler.monitoring_leader_url]
            results.append(result)
        threshold = triggers["cloudrun"][0].lag_threshold
        want = math.ceil(max(QUEUED.values()) / threshold)
        got = desired_replicas(results, lag_threshold=threshold, min_replicas=0, max_replicas=10)
        assert got == want >= 1


# --- (c) connect_urls: only the advertised, reachable addresses ---------------------------


def test_connect_urls_are_only_the_advertised_addresses(
    cluster: NatsCluster, triggers: dict[str, list[TriggerMetadata]]
) -> None:
    """KEDA dials `<host of each connect URL>:8222` and gives up at the first it cannot
    reach: every server lists exactly the three advertised addresses, and a lookup
    dials nothing else."""
    advertised = {f"{address}:{NATS_CLIENT_PORT}" for address in ADDRESSES}
    for node in cluster.nodes:
        assert set(node.monitor("/varz")["connect_urls"]) == advertised
    meta = triggers["cloudrun"][0]
    scaler = NatsJetStreamScaler(meta, KedaVersion.V2_17, resolver("cloudrun", meta, cluster, 0))
    poll(scaler)
    hosts = {re.sub(r"^https?://([^/]+)/.*$", r"\1", url) for url in scaler.dialed}
    assert hosts <= {meta.endpoint} | {f"{address}:8222" for address in ADDRESSES}


def test_one_unreachable_connect_url_fails_the_whole_poll(
    cluster: NatsCluster, triggers: dict[str, list[TriggerMetadata]]
) -> None:
    """Why the servers must advertise: a server that lists an address KEDA cannot reach
    (docker0's, a link-local IPv6 one) ends every poll that meets it, leader or not."""
    meta = triggers["cloudrun"][0]
    names = resolver("cloudrun", meta, cluster, 0)
    unreachable = f"{ADDRESSES[0]}:8222"
    names[unreachable] = f"127.0.0.1:{cluster.dead_port}"
    result = poll(NatsJetStreamScaler(meta, KedaVersion.V2_17, names))
    assert isinstance(result, ScalerError)
    assert f"http://{unreachable}/varz" in str(result)


# --- Kubernetes: the chart's no_advertise, servers named from the route URLs --------------


def test_kubernetes_lookup_dials_each_pod_through_the_headless_service(
    triggers: dict[str, list[TriggerMetadata]],
) -> None:
    """With no connect_urls KEDA names a server by its route URL's first label and asks
    `<name>.<endpoint>`: with the chart's routes (`<release>-<i>.<headless>:6222`, the pod
    name, which the chart also makes the server_name) that is the pod's own DNS name under
    the headless Service, on the monitoring port."""
    meta = triggers["kubernetes"][0]
    scaler = NatsJetStreamScaler(meta, KedaVersion.V2_17)
    routes = [f"qmill-nats-{i}.qmill-nats-headless:6222" for i in range(NODES)]
    for i, route in enumerate(routes):
        node = route.split(".")[0]
        assert node == f"qmill-nats-{i}"
        assert scaler._node_url_by_node(node) == (
            f"http://qmill-nats-{i}.qmill-nats-headless.qmill.svc.cluster.local:8222"
            "/jsz?acc=$G&consumers=true&config=true"
        )


def test_metadata_errors_are_keda_s() -> None:
    base: dict[str, Any] = {
        "natsServerMonitoringEndpoint": "nats:8222",
        "stream": "S",
        "consumer": "c",
    }
    with pytest.raises(ScalerError, match="no account name or id given"):
        TriggerMetadata.parse(base)
    with pytest.raises(ScalerError, match='missing required parameter "consumer"'):
        TriggerMetadata.parse({**base, "account": "$G", "consumer": " "})
    with pytest.raises(ScalerError, match=re.escape('"lagThreshold" value "1.5"')):
        TriggerMetadata.parse({**base, "account": "$G", "lagThreshold": "1.5"})
