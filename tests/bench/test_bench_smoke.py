"""The benchmark harness still runs: quick mode, one strategy, 2 Bell and 2 tiny circuits.

Only the shape of the JSON is checked, never a timing: timings belong to `make bench`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

ROW_KEYS = {
    "strategy",
    "workload",
    "tasks",
    "wall_seconds",
    "tasks_per_second",
    "cpu_seconds",
    "cpu_utilisation_cores",
    "worst_stall_ms",
    "peak_rss_mib",
    "vs_floor",
    "foreign_cpu_cores",
    "wrong_results",
}


def test_quick_strategy_table_writes_results(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QMILL_")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.run",
            "--quick",
            "--skip-e2e",
            "--no-chart",
            "--strategies",
            "qmill-process",
            "--small-tasks",
            "2",
            "--out-dir",
            str(tmp_path),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((tmp_path / "latest.json").read_text())
    assert result["mode"] == "quick"
    assert result["machine"]["usable_cores"] >= 1
    assert {"small", "heavy"} <= set(result["strategies"])
    for wname, part in result["strategies"].items():
        rows = part["rows"]
        assert [r["strategy"] for r in rows] == ["qmill-process"], wname
        (row,) = rows
        assert "error" not in row, row
        assert set(row) >= ROW_KEYS, ROW_KEYS - set(row)
        assert row["wrong_results"] == 0
        assert row["tasks"] == 2
        assert isinstance(row["worst_stall_ms"], float)  # an executor row runs an event loop
        assert part["floor"] is None and row["vs_floor"] is None  # no raw row, no floor
    assert result["e2e"] == []
    assert any(g["id"] == "event-loop" for g in result["goals"])
    assert (tmp_path / "latest.md").read_text().startswith("Run ")
    assert list(tmp_path.glob("run-*.json"))
