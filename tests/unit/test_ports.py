"""Test servers' ports come from outside the kernel's ephemeral range, where no client
socket can take one between the moment it is picked and the moment its server binds it."""

from __future__ import annotations

from qmill.server import ports


def test_ports_are_below_the_ephemeral_range_when_there_is_room() -> None:
    assert ports.port_range((32768, 60999)) == range(10000, 32768)


def test_ports_are_above_the_ephemeral_range_when_it_starts_low() -> None:
    assert ports.port_range((11000, 50000)) == range(50001, 65536)


def test_consecutive_free_ports_are_outside_the_ephemeral_range() -> None:
    low, high = map(int, ports.EPHEMERAL_RANGE_FILE.read_text().split())
    seen = set()
    for _ in range(20):
        base = ports.free_ports(3)
        run = {base, base + 1, base + 2}
        assert all(not low <= port <= high and ports.bindable(port) for port in run)
        assert not run & seen  # never handed out twice
        seen |= run
