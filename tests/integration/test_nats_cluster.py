"""The three-node cluster the fault tests use, configured from the deployment's template.

It checks what the Cloud Run NATS VMs rely on: every server advertises the one address
clients should use (KEDA and clients read /varz ``connect_urls``), the servers form one
JetStream cluster, and a partitioned server loses its routes and gets them back.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from qmill.server import constants, jetstream, setup
from qmill.server.bus import Bus, Lane
from qmill.server.config import Settings
from qmill.server.errors import DependencyUnavailable
from tests.clusters.nats import NODES, NatsCluster, nats_cluster
from tests.conftest import wait_until


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    with nats_cluster(tmp_path_factory.mktemp("nats-cluster")) as started:
        yield started


def test_rendered_from_the_deployment_template(cluster: NatsCluster) -> None:
    conf = (cluster.root / "nats-0.conf").read_text()
    assert 'server_name: "nats-0"' in conf
    assert f'client_advertise: "127.0.0.1:{cluster.nodes[0].client_port}"' in conf
    assert 'sync_interval: "always"' in conf
    assert "routes: [" in conf


def test_clients_are_told_only_the_advertised_addresses(cluster: NatsCluster) -> None:
    advertised = {f"127.0.0.1:{node.client_port}" for node in cluster.nodes}
    for node in cluster.nodes:
        varz = node.monitor("/varz")
        assert set(varz["connect_urls"]) | {f"127.0.0.1:{node.client_port}"} == advertised
        assert varz["cluster"]["name"] == "qmill-test-nats"


def test_one_jetstream_cluster(cluster: NatsCluster) -> None:
    leader = cluster.wait_meta_leader()
    assert leader in {node.name for node in cluster.nodes}
    assert cluster.nodes[0].monitor("/jsz")["meta_cluster"]["cluster_size"] == NODES


def routes(cluster: NatsCluster) -> list[int]:
    return [len(node.monitor("/routez")["routes"]) for node in cluster.nodes]


def test_partition_cuts_a_servers_routes_and_heal_restores_them(cluster: NatsCluster) -> None:
    node = cluster.nodes[2]
    cluster.partition(node)
    try:
        wait_until(lambda: routes(cluster)[2] == 0, 20)
        # The other two still route to each other; clients still reach the cut server.
        assert all(count > 0 for count in routes(cluster)[:2])
        assert node.monitor("/varz")["server_name"] == "nats-2"
    finally:
        cluster.heal(node)
    wait_until(lambda: all(count > 0 for count in routes(cluster)), 20)
    cluster.wait_meta_leader()


# --- the task stream on the cluster (issue 16: nats.stream_replicas, qmill-setup) ---------
def cluster_settings(cluster: NatsCluster, replicas: int) -> Settings:
    return Settings.model_validate(
        {
            "nats": {"url": cluster.url, "stream_replicas": replicas},
            "embedded": {"start_nats": False},
        }
    )


async def test_qmill_setup_places_the_stream_and_consumers_on_three_servers(
    cluster: NatsCluster,
) -> None:
    settings = cluster_settings(cluster, 3)
    assert await setup.apply(settings, wait=10) == []
    probe = Bus(settings, name="test-probe")
    try:
        js = await probe.connect()
        placed = await jetstream.placement(js, constants.STREAM_NAME, 3)
        assert placed.complete, placed
        for lane in Lane:
            info = await js.consumer_info(constants.STREAM_NAME, lane.consumer)
            assert info.cluster is not None and len(info.cluster.replicas or []) == NODES - 1
    finally:
        await probe.close()


async def test_more_replicas_than_servers_is_a_named_error_not_a_500(
    cluster: NatsCluster,
) -> None:
    five = cluster_settings(cluster, 5)
    with pytest.raises(jetstream.PlacementRefused, match=r"stream_replicas = 5 .*at most"):
        await setup.apply(five, wait=10)
    # A function connecting with it answers 503 with the same reason, not a 500.
    with pytest.raises(DependencyUnavailable, match=r"stream_replicas = 5") as raised:
        await Bus(five, name="test-five").connect()
    assert raised.value.status_code == 503


async def test_an_existing_stream_with_other_replicas_is_updated(cluster: NatsCluster) -> None:
    three = cluster_settings(cluster, 3)
    assert await setup.apply(three, wait=10) == []
    one = cluster_settings(cluster, 1)
    assert await setup.apply(one, wait=10) == []
    probe = Bus(one, name="test-probe")
    try:
        js = await probe.connect()
        info = await js.stream_info(constants.STREAM_NAME)
        assert info.config.num_replicas == 1
    finally:
        await probe.close()
