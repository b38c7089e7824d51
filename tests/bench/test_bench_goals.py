"""Issue 15's goals and the growth section, judged from a run's JSON (pure logic: no run)."""

from __future__ import annotations

from typing import Any

from bench import goals, growth, growth_raw, report


def _workload(tps: float, per: dict[str, float], p50: float = 10.0) -> dict[str, Any]:
    return {
        "tasks_per_second": tps,
        "errors": 0,
        "poll_interval_ms": 10.0,
        "latency_ms": {"p50": p50, "p99": p50 * 2},
        "system": {"cpu_ms_per_task_by_process": per},
        "load_generator": {"cpu_ms_per_task": 0.9, "client_cpu_ms_per_task": 0.6},
    }


def _result(mode: str = "full", batch_tasks: int = 1000) -> dict[str, Any]:
    before = _workload(100.0, {"gateway": 2.0, "function:submit": 1.0, "worker:simulator": 1.8})
    shipped = _workload(400.0, {"api": 1.2, "worker:simulator": 0.7}, p50=3.5)
    return {
        "mode": mode,
        "e2e": [
            {"config": "before", "workloads": {"bell32": before}},
            {"config": "shipped", "workloads": {"bell32": shipped, "longpoll1": shipped}},
        ],
        "growth": {
            "batch": {
                "tasks": batch_tasks,
                "ratio": 0.5,
                "e2e_tasks_per_second": 400.0,
                "raw_tasks_per_second": 800.0,
            }
        },
    }


def test_issue_15_goals_are_judged_on_shipped() -> None:
    by_id = {g["id"]: g for g in goals.evaluate_goals(_result()) if g["issue"] == 15}
    assert by_id["cpu-per-task"]["met"] is True and by_id["cpu-per-task"]["config"] == "shipped"
    assert by_id["cpu-per-task"]["measured"].startswith("1.90 ms")
    assert by_id["bell32-vs-original"]["met"] is True  # 400 >= 2.5 x 141.6
    assert by_id["latency-longpoll-4ms"]["met"] is True
    assert by_id["batch-vs-raw"]["met"] is False  # 0.5 < 0.7
    assert "0.50x" in by_id["batch-vs-raw"]["measured"]


def test_quick_runs_are_not_judged_against_references() -> None:
    by_id = {g["id"]: g for g in goals.evaluate_goals(_result("quick", 50)) if g["issue"] == 15}
    assert by_id["bell32-vs-original"]["met"] is None
    assert by_id["batch-vs-raw"]["met"] is None


def test_cpu_table_shows_each_config_against_the_first() -> None:
    table = report.cpu_breakdown_table(_result()["e2e"])
    before, shipped = table.splitlines()[2:]
    assert before.startswith("| before |") and "| 4.80 | 1.00 |" in before
    assert shipped.startswith("| shipped | 0.00 | 1.20 |") and "| 1.90 | 0.40 |" in shipped


def test_growth_points_and_markdown() -> None:
    plan = growth.GrowthPlan.quick()
    pts = growth.points(plan)
    assert [p.series for p in pts].count("shots") == len(plan.shots)
    assert growth.ghz(3).count("cx") == 2 and growth.random_layers(26) < growth.random_layers(8)
    row = {"x": 2, "raw_ms": 3.0, "raw_cpu_ms": 3.0, "e2e_ms": 6.0, "ratio": 2.0, "repeats": 7}
    g = {
        "plan": {"shots_qubits": plan.shots_qubits},
        "layers": {"2": 10},
        "series": {"ghz": [row], "random": [row], "shots": [row]},
        "batch": {
            "tasks": 50,
            "e2e_seconds": 0.5,
            "e2e_tasks_per_second": 100.0,
            "raw_seconds": 0.05,
            "raw_cpu_seconds": 0.05,
            "raw_tasks_per_second": 1000.0,
            "ratio": 0.1,
        },
        "seconds": 20.0,
        "foreign_cpu_cores": {"raw": 0.1, "system": 0.2},
        "skipped": ["ghz 26"],
    }
    text = growth.growth_markdown(g)
    assert "| 2 | 3.0 | 3.0 | ? | 6.0 | 2.00 | 7 |" in text and "ratio 0.10" in text
    assert "Left out" in text and "ghz 26" in text


def test_a_series_stops_growing_where_raw_aer_would_take_too_long() -> None:
    big = growth_raw.Point("ghz", 26, 26, 1024, "statevector", "", 1)
    assert growth_raw.predicted(big, None) == 0.0
    assert growth_raw.predicted(big, (24, 1.0)) == 4.0  # a statevector doubles per qubit
    assert growth_raw.predicted(big, (24, 6.0)) > growth_raw.POINT_LIMIT_SECONDS
    shots = growth_raw.Point("shots", 100_000, 10, 100_000, "statevector", "", 5)
    assert growth_raw.predicted(shots, (10_000, 30.0)) == 0.0
