"""A three-node NATS JetStream cluster on loopback, configured as the deployment's servers.

Each server's config file is rendered by Terraform itself (``terraform console``
evaluating ``templatefile``) from ``infra/terraform/modules/cloudrun/templates/nats.conf.tftpl``,
the template the Cloud Run module renders for its NATS VMs; only the addresses, ports and
directories differ. The servers reach each other through `RouteProxies`, TCP proxies on
loopback that a test can cut to partition one server from the others (its routes stop;
its clients still reach it) and heal again.

A server may be SIGKILLed and started again on the same ports and store directory, as
the fault tests do to the stream's leader.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qmill.server import constants
from qmill.server.embedded import binary
from qmill.server.ports import free_port
from qmill.server.processes import Process
from tests.conftest import REPO

TEMPLATE = REPO / "infra/terraform/modules/cloudrun/templates/nats.conf.tftpl"
NODES = 3
CLUSTER_NAME = "qmill-test-nats"
READY_TIMEOUT_SECONDS = 30.0


def render(template: Path, values: dict[str, Any]) -> str:
    """``templatefile(template, values)`` as Terraform evaluates it."""
    expression = f"templatefile({json.dumps(str(template))}, {json.dumps(values)})"
    env = {
        **os.environ,
        "TF_CLI_CONFIG_FILE": "/dev/null",
        "CHECKPOINT_DISABLE": "1",
        "TF_IN_AUTOMATION": "1",
    }
    out = subprocess.run(
        ["terraform", "console"],
        input=expression,
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=template.parent,
        timeout=60,
    ).stdout
    # A multi-line string prints as a heredoc: <<EOT ... EOT.
    lines = out.strip().splitlines()
    if not lines or not lines[0].startswith("<<") or lines[-1].strip() != lines[0][2:]:
        raise ValueError(f"unexpected terraform console output: {out[:200]!r}")
    return "\n".join(lines[1:-1]) + "\n"


# --- route proxies ----------------------------------------------------------------------------
@dataclass
class _Proxy:
    port: int
    target: int
    blocked: bool = False
    writers: set[asyncio.StreamWriter] = field(default_factory=set)


class RouteProxies:
    """TCP proxies on loopback, one per (from, to) server pair, on an event loop of their own.

    ``cut(i)`` refuses and closes every connection to or from server ``i``: a network
    partition of that server's routes. ``heal(i)`` lets them connect again.
    """

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._proxies: dict[tuple[int, int], _Proxy] = {}
        self._servers: list[asyncio.AbstractServer] = []

    def add(self, source: int, target: int, target_port: int) -> int:
        """A proxy for server ``source``'s route to server ``target``; returns its port."""
        proxy = _Proxy(free_port(), target_port)
        self._proxies[(source, target)] = proxy
        self._call(self._listen(proxy))
        return proxy.port

    def cut(self, node: int) -> None:
        self._call(self._set(node, blocked=True))

    def heal(self, node: int) -> None:
        self._call(self._set(node, blocked=False))

    def close(self) -> None:
        for node in {pair[0] for pair in self._proxies}:
            self.cut(node)
        for server in self._servers:
            self._loop.call_soon_threadsafe(server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _set(self, node: int, *, blocked: bool) -> None:
        for (source, target), proxy in self._proxies.items():
            if node in (source, target):
                proxy.blocked = blocked
                if blocked:
                    for writer in list(proxy.writers):
                        writer.close()

    async def _listen(self, proxy: _Proxy) -> None:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if proxy.blocked:
                writer.close()
                return
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", proxy.target)
            except OSError:
                writer.close()
                return
            proxy.writers.update((writer, up_writer))
            try:
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            finally:
                proxy.writers.difference_update((writer, up_writer))
                writer.close()
                up_writer.close()

        self._servers.append(await asyncio.start_server(serve, "127.0.0.1", proxy.port))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


# --- the cluster ------------------------------------------------------------------------------
@dataclass
class Node:
    index: int
    name: str
    client_port: int
    monitor_port: int
    cluster_port: int
    process: Process
    conf: Path

    @property
    def advertised(self) -> str:
        """The client address its config advertises (a test may rewrite the config)."""
        match = re.search(r'^client_advertise: "([^"]+)"', self.conf.read_text(), re.M)
        assert match is not None, f"no client_advertise in {self.conf}"
        return match.group(1)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    def monitor(self, path: str) -> dict[str, Any]:
        """A monitoring endpoint's JSON (``/varz``, ``/jsz?...``, ``/routez``)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor_port}{path}", timeout=5) as r:
            body: dict[str, Any] = json.load(r)
            return body


class NatsCluster:
    """Three nats-server processes with JetStream, clustered over `RouteProxies`."""

    def __init__(self, root: Path, *, env: dict[str, str] | None = None) -> None:
        self.root = root
        self.proxies = RouteProxies()
        ports = [(free_port(), free_port(), free_port()) for _ in range(NODES)]
        self.dead_port = free_port()
        self.nodes: list[Node] = []
        for index, (client, monitor, cluster) in enumerate(ports):
            name = f"nats-{index}"
            routes = [
                f"nats-route://127.0.0.1:{self.proxies.add(index, other, ports[other][2])}"
                for other in range(NODES)
                if other != index
            ]
            conf = root / f"{name}.conf"
            conf.write_text(
                render(
                    TEMPLATE,
                    {
                        "server_name": name,
                        "host": "127.0.0.1",
                        "client_port": client,
                        "monitor_port": monitor,
                        "client_advertise": f"127.0.0.1:{client}",
                        "store_dir": str(root / name / "jetstream"),
                        "sync_interval": constants.NATS_SYNC_INTERVAL,
                        "cluster_name": CLUSTER_NAME,
                        "cluster_port": cluster,
                        # Gossip would let a partitioned server route around its
                        # proxies to another's real cluster port; the servers already
                        # list each other (a full mesh of explicit routes), so what they
                        # advertise for gossip is an address nothing listens on.
                        "cluster_advertise": f"127.0.0.1:{self.dead_port}",
                        "routes": routes,
                    },
                )
            )
            process = Process(
                name,
                [binary("nats-server"), "--config", str(conf)],
                port=client,
                env=env,
                log=root / f"{name}.log",
            )
            self.nodes.append(Node(index, name, client, monitor, cluster, process, conf))

    @property
    def url(self) -> str:
        """Every server, comma-separated: what ``[nats] url`` takes."""
        return ",".join(node.url for node in self.nodes)

    def start(self) -> None:
        for node in self.nodes:
            node.process.spawn()
        for node in self.nodes:
            node.process.wait_ready()
        self.wait_meta_leader()
        self.wait_gossip()

    def stop(self) -> None:
        for node in self.nodes:
            node.process.stop()
        self.proxies.close()

    def node(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    def alive(self) -> list[Node]:
        return [node for node in self.nodes if node.process.alive()]

    def kill(self, node: Node) -> None:
        node.process.kill()

    def restart(self, node: Node) -> None:
        node.process.start()

    def partition(self, node: Node) -> None:
        """Cut every route to and from ``node``; its clients still reach it."""
        self.proxies.cut(node.index)

    def heal(self, node: Node) -> None:
        self.proxies.heal(node.index)

    def wait_meta_leader(self, timeout: float = READY_TIMEOUT_SECONDS) -> str:
        """Until the live servers agree on a JetStream meta leader with all of them
        as peers; returns its name."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError, ValueError, KeyError):
                metas = [node.monitor("/jsz").get("meta_cluster", {}) for node in self.alive()]
                leaders = {meta.get("leader") for meta in metas}
                if len(leaders) == 1 and None not in leaders and "" not in leaders:
                    sizes = {meta.get("cluster_size") for meta in metas}
                    if sizes == {NODES}:
                        return str(leaders.pop())
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no JetStream meta leader after {timeout} s")
            time.sleep(0.1)

    def wait_gossip(self, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        """Until every live server tells its clients about every live server
        (``connect_urls``), which follows the routes by a moment."""
        deadline = time.monotonic() + timeout
        while True:
            live = self.alive()
            wanted = {node.advertised for node in live}
            with contextlib.suppress(OSError, ValueError, KeyError):
                told = [
                    set(node.monitor("/varz").get("connect_urls") or []) | {node.advertised}
                    for node in live
                ]
                if all(urls >= wanted for urls in told):
                    return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"servers not told of each other after {timeout} s")
            time.sleep(0.1)

    def stream_leader(self, stream: str = constants.STREAM_NAME) -> Node:
        """The server that leads ``stream`` now, as the live servers report it."""
        for node in self.alive():
            with contextlib.suppress(OSError, ValueError):
                info = node.monitor("/jsz?streams=true&accounts=true")
                for account in info.get("account_details", []):
                    for detail in account.get("stream_detail", []):
                        if detail.get("name") == stream:
                            leader = detail.get("cluster", {}).get("leader")
                            if leader:
                                return self.node(leader)
        raise LookupError(f"no leader of stream {stream}")


@contextlib.contextmanager
def nats_cluster(root: Path, *, env: dict[str, str] | None = None) -> Iterator[NatsCluster]:
    """A started cluster, stopped (and its proxies closed) on exit."""
    root.mkdir(parents=True, exist_ok=True)
    cluster = NatsCluster(root, env=env)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
