"""Loopback ports for servers that tests, the fault campaign and the benchmark start.

Every launched server gets its port from `free_ports`, never from ``bind(0)``: a port
the kernel hands out for ``bind(0)`` comes from the ephemeral range, where any outgoing
connection of any process can take it between the moment it is picked and the moment
the server binds it (seen: `qmill up` failing at start because a function's port had
become some client's local port). These ports come from outside that range.
"""

from __future__ import annotations

import itertools
import random
import socket
import time
from pathlib import Path

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
# Linux's default ephemeral range, for a machine that does not say.
DEFAULT_EPHEMERAL = (32768, 60999)
LOWEST_PORT = 10000
MIN_PORTS = 2000


def port_range(ephemeral: tuple[int, int] | None = None) -> range:
    """Ports outside the kernel's ephemeral range: below it if there is room, else above."""
    if ephemeral is None:
        try:
            low, high = map(int, EPHEMERAL_RANGE_FILE.read_text().split())
        except (OSError, ValueError):
            low, high = DEFAULT_EPHEMERAL
    else:
        low, high = ephemeral
    if low - LOWEST_PORT >= MIN_PORTS:
        return range(LOWEST_PORT, low)
    return range(high + 1, 65536)


PORTS = port_range()
# Handed out in order from a random start, so the servers of one process never pick the
# same port, and two processes on one machine rarely start near each other.
_next_port = itertools.count(random.randrange(len(PORTS)))


def bindable(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive ports that nothing holds now."""
    for _ in range(len(PORTS)):
        base = PORTS[next(_next_port) % (len(PORTS) - count)]
        if all(bindable(base + i) for i in range(count)):
            for _ in range(count - 1):
                next(_next_port)
            return base
    raise RuntimeError(f"no {count} consecutive free ports in {PORTS}")


def free_port() -> int:
    return free_ports(1)


def wait_port(port: int, timeout: float = 20.0, host: str = "127.0.0.1") -> None:
    """Block until something accepts connections on ``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on port {port}")
