"""Fixtures of the fault campaign: one fresh `Cluster` per scenario, and the summary table.

`make test` runs every scenario small; `make faults` (``FAULTS_SCALE=full``) runs them
with larger counts. Either way the session ends with a table of the scenarios' summary
lines, headed by the machine they ran on (also written to ``$FAULTS_SUMMARY_FILE``).
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.faults.harness import FULL, SUMMARIES, Cluster

# Per scenario; generous, since this machine is shared and its speed varies.
TIMEOUT_SECONDS = 900 if FULL else 300


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "faults: a scenario of the fault campaign (tests/faults)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.faults)
            item.add_marker(pytest.mark.timeout(TIMEOUT_SECONDS))


@pytest.fixture
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    """An unstarted cluster named after the scenario; everything it started is stopped
    afterwards, and the test errors if anything was left running."""
    name = request.node.name.removeprefix("test_").replace("_", "-")
    system = Cluster(tmp_path, name)
    try:
        yield system
    finally:
        left = system.shutdown()
        assert not left, f"processes left running: {left}"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = psutil.virtual_memory().total / 2**30
    return (
        f"machine: {cpu}, {os.cpu_count()} cores, {memory:.0f} GiB, "
        f"Linux {platform.release()}, Python {platform.python_version()}, "
        f"load average now {os.getloadavg()[0]:.1f}"
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not SUMMARIES:
        return
    scale = "full" if FULL else "fast"
    lines = [machine(), *SUMMARIES]
    terminalreporter.section(f"fault campaign ({scale})")
    for line in lines:
        terminalreporter.write_line(line)
    target = os.environ.get("FAULTS_SUMMARY_FILE")
    if target:
        Path(target).write_text("\n".join(lines) + "\n")
