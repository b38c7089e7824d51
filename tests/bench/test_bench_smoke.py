"""The benchmark harness still runs: quick mode, one strategy, 2 Bell and 2 tiny circuits;
and the sweep benchmark against `qmill up`, with 8 points.

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
            "--skip-sweep",
            "--skip-growth",
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


def test_quick_sweep_writes_results(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QMILL_")}
    points = 8
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.run",
            "--quick",
            "--skip-strategies",
            "--skip-e2e",
            "--skip-growth",
            "--no-chart",
            "--sweep-points",
            str(points),
            "--out-dir",
            str(tmp_path),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((tmp_path / "latest.json").read_text())
    sweep = result["sweep"]
    assert "error" not in sweep, sweep.get("error")
    assert sweep["leftover_processes"] == []
    assert sweep["plan"]["points"] == points and sweep["plan"]["repeat"] == 1
    assert set(sweep["raw"]) == {"raw-runtime-1t", "raw-default-1t", "raw-runtime", "raw-default"}
    assert sweep["reference"] in sweep["raw"]
    for part in (*sweep["raw"].values(), sweep["sweep"], sweep["plain"]):
        assert part["median_seconds"] > 0 and part["vs_reference"] > 0
        assert all(t["wrong_results"] == 0 for t in part["tries"])
    (sweep_try,) = sweep["sweep"]["tries"]
    (plain_try,) = sweep["plain"]["tries"]
    assert sweep_try["completed"] == plain_try["completed"] == points
    assert plain_try["errors"] == []
    # Raw Aer, the sweep task and the plain tasks (seeded as Aer seeded each point) agree.
    assert sweep["counts_agree"] is True
    assert sweep["sweep_speedup_over_plain"] > 0
    goals = {g["id"]: g for g in result["goals"]}
    assert {"sweep-vs-raw", "sweep-vs-plain"} <= set(goals)
    assert goals["sweep-vs-raw"]["met"] is None  # judged only at 1000 points
    markdown = (tmp_path / "latest.md").read_text()
    assert "#### Sweep: 8-point sweep" in markdown and "Goals of issue 11" in markdown
