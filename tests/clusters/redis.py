"""A replicated Redis on loopback: a primary, one replica and three Sentinels (quorum 2).

The production topology of the store (a replicated Valkey/Redis behind Sentinel), run
here from the pip-installed ``redis-server`` binary, which is also a Sentinel
(``redis-server sentinel.conf --sentinel``). Each data node runs the embedded run's
command (`qmill.server.embedded.redis_command`: append-only file, ``appendfsync``,
``maxmemory`` with ``noeviction``), the replica with ``--replicaof`` the primary.

Failover is kept fast for tests: a node unanswering for `DOWN_AFTER_MS` is down, and
a failover that stalls is retried after `FAILOVER_TIMEOUT_MS`. `kill_primary` SIGKILLs
the current primary (asked of a Sentinel, not assumed), `wait_failover` waits until
the Sentinels name another one and it answers as a primary, and `revive` starts a
killed node again on its own data (the Sentinels then make it a replica of the new
primary).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import redis

from qmill.server import embedded
from qmill.server.ports import free_ports
from qmill.server.processes import Process, Server

MASTER = "qmill"
QUORUM = 2
# How long a node must not answer before a Sentinel sees it down (Sentinel's default is
# 30 s): short, so a failover takes a few seconds, long enough that a busy 2-core
# machine does not fail over a primary that is merely slow.
DOWN_AFTER_MS = 1500
# After a failover attempt that stalls, when a Sentinel may try again (default 3 min).
FAILOVER_TIMEOUT_MS = 4000
Address = tuple[str, int]


class RedisCluster:
    """Two data nodes and three Sentinels under ``root``; `start` returns when the
    Sentinels agree on the primary and know the replica and each other."""

    def __init__(self, root: Path, *, max_memory_mb: int = 64, master: str = MASTER) -> None:
        self.root = root
        self.master = master
        base = free_ports(5)
        primary, replica = base, base + 1
        self.sentinel_ports = [base + 2 + i for i in range(3)]
        self.nodes: list[Server] = []
        for name, port, follow in (("redis-a", primary, None), ("redis-b", replica, primary)):
            argv = embedded.redis_command(port, root / name, max_memory_mb=max_memory_mb)
            if follow is not None:
                argv += ["--replicaof", "127.0.0.1", str(follow)]
            self.nodes.append(Server(name, port, root / name, log=root / f"{name}.log", argv=argv))
        self.sentinels: list[Process] = []
        for index, port in enumerate(self.sentinel_ports):
            conf = self._sentinel_conf(index, port, primary)
            argv = [embedded.binary("redis-server"), str(conf), "--sentinel"]
            log = root / f"sentinel-{index}.log"
            self.sentinels.append(Process(f"sentinel-{index}", argv, port=port, log=log))

    def _sentinel_conf(self, index: int, port: int, primary: int) -> Path:
        """A Sentinel rewrites its config file (it records what it learns), so each has
        its own, in its own directory."""
        directory = self.root / f"sentinel-{index}"
        directory.mkdir(parents=True, exist_ok=True)
        conf = directory / "sentinel.conf"
        conf.write_text(
            f"port {port}\n"
            "bind 127.0.0.1\n"
            "protected-mode no\n"
            f'dir "{directory}"\n'
            f"sentinel monitor {self.master} 127.0.0.1 {primary} {QUORUM}\n"
            f"sentinel down-after-milliseconds {self.master} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {self.master} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {self.master} 1\n"
        )
        return conf

    # --- settings for qmill ------------------------------------------------------------
    @property
    def sentinels_setting(self) -> str:
        """``[redis] sentinels``: every Sentinel as host:port, comma-separated."""
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    @property
    def url(self) -> str:
        """``[redis] url``: with Sentinels only its password and db are used; it names
        the first primary so that a client without Sentinel still finds it."""
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def settings(self) -> dict[str, object]:
        """The ``[redis]`` section that connects qmill through these Sentinels."""
        return {
            "url": self.url,
            "sentinels": self.sentinels_setting,
            "sentinel_master": self.master,
        }

    # --- start and stop -----------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> None:
        for node in self.nodes:
            node.start()
        for sentinel in self.sentinels:
            sentinel.start()
        self.wait_settled(timeout)

    def wait_settled(self, timeout: float = 30.0) -> Address:
        """Until every Sentinel names the same live primary, knows another Sentinel or
        more, and sees a replica in sync: only then can a failover happen."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(redis.RedisError, OSError):
                seen = {self._ask(port) for port in self.sentinel_ports}
                if len(seen) == 1:
                    (state,) = seen
                    if state is not None and state[1] >= QUORUM - 1 and state[2] >= 1:
                        address = state[0]
                        if self._role(address) == "master" and self._replica_synced(address):
                            return address
            if time.monotonic() >= deadline:
                raise TimeoutError(f"the Redis Sentinels did not settle; see {self.root}")
            time.sleep(0.1)

    def _ask(self, port: int) -> tuple[Address, int, int] | None:
        """One Sentinel's view: the primary, the other Sentinels and replicas it knows."""
        with redis.Redis(port=port, socket_timeout=1, decode_responses=True) as sentinel:
            state = sentinel.sentinel_master(self.master)
            if state.get("is_sdown") or state.get("is_odown") or not state.get("is_master"):
                return None
            replicas = [
                r
                for r in sentinel.sentinel_slaves(self.master)
                if not (r.get("is_sdown") or r.get("is_odown"))
            ]
        address = (str(state["ip"]), int(state["port"]))
        return address, int(state["num-other-sentinels"]), len(replicas)

    def _role(self, address: Address) -> str:
        with redis.Redis(*address, socket_timeout=1, decode_responses=True) as node:
            return str(node.role()[0])

    def _replica_synced(self, address: Address) -> bool:
        with redis.Redis(*address, socket_timeout=1, decode_responses=True) as node:
            info = node.info("replication")
        return any(
            isinstance(v, dict) and v.get("state") == "online"
            for k, v in info.items()
            if k.startswith("slave")
        )

    def stop(self) -> list[str]:
        """Stop every process (Sentinels first, so none fails over a primary being
        stopped); the names of any still running afterwards."""
        for process in [*self.sentinels, *self.nodes]:
            process.stop()
        return [p.name for p in [*self.sentinels, *self.nodes] if p.alive()]

    # --- faults ---------------------------------------------------------------------------
    def primary(self) -> Address:
        """The primary as the first Sentinel that answers names it."""
        for port in self.sentinel_ports:
            with (
                contextlib.suppress(redis.RedisError, OSError),
                redis.Redis(port=port, socket_timeout=1, decode_responses=True) as sentinel,
            ):
                host, node_port = sentinel.sentinel_get_master_addr_by_name(self.master)
                return str(host), int(node_port)
        raise ConnectionError("no Sentinel answers")

    def node(self, address: Address) -> Server:
        return next(n for n in self.nodes if n.port == address[1])

    def kill_primary(self) -> Server:
        """SIGKILL the current primary; returns its process (`revive` starts it again)."""
        victim = self.node(self.primary())
        victim.kill()
        return victim

    def wait_failover(self, old: Address, timeout: float = 30.0) -> Address:
        """Until the Sentinels name a primary other than ``old`` and it answers as one;
        returns it."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(redis.RedisError, OSError, ConnectionError):
                now = self.primary()
                if now != old and self._role(now) == "master":
                    return now
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no failover from {old} in {timeout:g} s; see {self.root}")
            time.sleep(0.05)

    def revive(self, node: Server, timeout: float = 30.0) -> None:
        """Start a killed node on its data as a replica of the current primary, as a
        deployment's Redis pod does when it restarts (asking the Sentinels first; left
        to the Sentinels, a returning old primary is turned into a replica only at
        their next INFO, up to 10 s later). Returns once it replicates."""
        primary = self.primary()
        base = (
            node.argv[: node.argv.index("--replicaof")] if "--replicaof" in node.argv else node.argv
        )
        node.argv = [*base, "--replicaof", primary[0], str(primary[1])]
        node.start()
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(redis.RedisError, OSError, ConnectionError):
                primary = self.primary()
                if primary[1] != node.port and self._replica_synced(primary):
                    return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{node.name} did not rejoin as a replica; see {self.root}")
            time.sleep(0.1)
