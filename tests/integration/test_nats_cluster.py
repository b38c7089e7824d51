"""The three-node cluster the fault tests use, configured from the deployment's template.

It checks what the Cloud Run NATS VMs rely on: every server advertises the one address
clients should use (KEDA and clients read /varz ``connect_urls``), the servers form one
JetStream cluster, and a partitioned server loses its routes and gets them back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from tests.clusters.nats import NODES, NatsCluster, nats_cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    with nats_cluster(tmp_path_factory.mktemp("nats-cluster")) as started:
        yield started


def until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


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
        until(lambda: routes(cluster)[2] == 0)
        # The other two still route to each other; clients still reach the cut server.
        assert all(count > 0 for count in routes(cluster)[:2])
        assert node.monitor("/varz")["server_name"] == "nats-2"
    finally:
        cluster.heal(node)
    until(lambda: all(count > 0 for count in routes(cluster)))
    cluster.wait_meta_leader()
