"""The printed tables of a run, all from one run's JSON (goals: `bench.goals`; charts:
`bench.chart`)."""

from __future__ import annotations

from typing import Any

from bench.goals import REFERENCE, REFERENCE_15, judged_config
from bench.growth import growth_markdown

# --- tables ---------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def strategy_table(part: dict[str, Any]) -> str:
    headers = [
        "strategy",
        "configuration",
        "wall s",
        "tasks/s",
        "CPU s",
        "cores busy",
        "worst loop stall ms",
        "peak RSS MiB",
        "x floor",
        "other load (cores)",
        "all tries: wall s",
    ]
    rows = []
    for r in part["rows"]:
        if "error" in r:
            rows.append([r["strategy"], r.get("label", ""), "ERROR: " + r["error"][:60]] + [""] * 8)
            continue
        tries = r.get("tries_wall_seconds") or [r["wall_seconds"]]
        name = r["strategy"] + (" **(floor)**" if r.get("is_floor") else "")
        if not r.get("same_work", True):
            name += " (not same work)"
        label = r["label"] + (" OVERSUBSCRIBED" if r.get("oversubscribed") else "")
        rows.append(
            [
                name,
                label,
                _fmt(r["wall_seconds"], 2),
                _fmt(r["tasks_per_second"], 1),
                _fmt(r["cpu_seconds"], 1),
                _fmt(r["cpu_utilisation_cores"], 2),
                "n/a (no loop)"
                if r.get("worst_stall_ms") is None
                else _fmt(r["worst_stall_ms"], 1),
                _fmt(r["peak_rss_mib"], 0),
                _fmt(r.get("vs_floor"), 2),
                _load(r.get("foreign_cpu_cores")),
                " / ".join(_fmt(t, 2) for t in tries),
            ]
        )
    return md_table(headers, rows)


DISTURBED_CORES = 0.3


def _load(value: float | None) -> str:
    """Other tenants' CPU during a measurement; marked when it was enough to matter."""
    if value is None:
        return "-"
    return f"{value:.2f}" + (" (!)" if value > DISTURBED_CORES else "")


def e2e_table(configs: list[dict[str, Any]]) -> str:
    headers = [
        "config",
        "workload",
        "tasks",
        "wall s",
        "tasks/s",
        "p50 ms",
        "p99 ms",
        "POST p50 ms",
        "server p50 ms",
        "system CPU s",
        "system cores busy",
        "system peak RSS MiB",
        "load-gen CPU ms/task",
        "other load (cores)",
    ]
    rows = []
    for cfg in configs:
        if "error" in cfg and not cfg.get("workloads"):
            rows.append([cfg["config"], "ERROR: " + cfg["error"][:80]] + [""] * 12)
            continue
        for name, w in cfg.get("workloads", {}).items():
            rows.append(
                [
                    cfg["config"],
                    name,
                    f"{w['completed']}/{w['tasks']}",
                    _fmt(w["wall_seconds"], 2),
                    _fmt(w["tasks_per_second"], 1),
                    _fmt(w["latency_ms"]["p50"], 1),
                    _fmt(w["latency_ms"]["p99"], 1),
                    _fmt(w.get("post_ms", {}).get("p50"), 1),
                    _fmt(w["server_ms"].get("created_to_completed_p50"), 1),
                    _fmt(w["system"]["cpu_seconds"], 1),
                    _fmt(w["system"]["cpu_utilisation_cores"], 2),
                    _fmt(w["system"]["peak_rss_mib"], 0),
                    _fmt(w["load_generator"]["cpu_ms_per_task"], 2),
                    _load(w["foreign_cpu_cores"]),
                ]
            )
    return md_table(headers, rows)


CPU_PARTS = (
    "gateway",
    "api",
    "function:submit",
    "function:result",
    "nats",
    "redis",
    "worker:event-loop",
    "worker:simulator",
)


def cpu_breakdown_table(configs: list[dict[str, Any]], workload: str = "bell32") -> str:
    """CPU milliseconds per task by process: where the end-to-end path spends the cores,
    one row per configuration (issue 15: before and after each change), and each total
    over the first row's."""
    headers = [
        "config",
        *CPU_PARTS,
        "other system",
        "system total",
        "x first row",
        "load generator (its loop)",
    ]
    rows = []
    first: float | None = None
    for cfg in configs:
        w = cfg.get("workloads", {}).get(workload)
        if not w:
            continue
        per = w["system"]["cpu_ms_per_task_by_process"]
        other = sum(v for k, v in per.items() if k not in CPU_PARTS)
        total = sum(per.values())
        first = total if first is None else first
        lg = w["load_generator"]
        rows.append(
            [
                cfg["config"],
                *[_fmt(per.get(p, 0.0), 2) for p in CPU_PARTS],
                _fmt(other, 2),
                _fmt(total, 2),
                _fmt(total / first if first else None, 2),
                f"{_fmt(lg['cpu_ms_per_task'], 2)} ({_fmt(lg.get('client_cpu_ms_per_task'), 2)})",
            ]
        )
    return md_table(headers, rows)


def request_cost_table(configs: list[dict[str, Any]]) -> str:
    """CPU per HTTP request of the gateway and the functions ("functions stay cheap")."""
    headers = [
        "config",
        "workload",
        "GETs per task",
        "api ms/request",
        "gateway ms/request",
        "submit ms/POST",
        "result ms/GET",
    ]
    rows = []
    for cfg in configs:
        for name, w in cfg.get("workloads", {}).items():
            per = w["system"].get("cpu_ms_per_request", {})
            rows.append(
                [
                    cfg["config"],
                    name,
                    _fmt(w["requests"]["gets_per_task"], 2),
                    _fmt(per.get("api (per request)"), 2),
                    _fmt(per.get("gateway (per request)"), 2),
                    _fmt(per.get("function:submit (per POST)"), 2),
                    _fmt(per.get("function:result (per GET)"), 2),
                ]
            )
    return md_table(headers, rows)


def goals_table(goals: list[dict[str, Any]]) -> str:
    rows = [
        [
            g["id"],
            g["config"] or "-",
            g["goal"],
            g["measured"],
            {True: "MET", False: "NOT MET", None: "n/a"}[g["met"]],
        ]
        for g in goals
    ]
    return md_table(["goal", "config", "what", "measured", "verdict"], rows)


def _tries(values: list[Any]) -> str:
    return " / ".join(_fmt(v, 2) for v in values)


def sweep_table(sw: dict[str, Any]) -> str:
    """Every way of getting the sweep's counts: raw Aer's four, the sweep task, plain tasks."""
    headers = [
        "way",
        "what",
        "all tries: s",
        "median s",
        "evaluations/s",
        "x reference",
        "CPU s",
        "load-gen CPU s",
        "other load (cores, worst try)",
    ]
    rows = []
    settings = sw.get("settings") or {}
    shape = (
        f"{settings.get('processes')} worker x {settings.get('concurrency_per_worker')} slots x "
        f"{settings.get('aer_threads')} Aer thread"
        if settings
        else "see settings"
    )
    alone = settings.get("aer_threads_alone")
    if alone and alone != settings.get("aer_threads"):
        shape += f", {alone} for a simulation running alone"
    plan = sw["plan"]
    ways = [
        (
            name + (" **(reference)**" if name == sw.get("reference") else ""),
            "raw Aer: " + part["label"],
            part,
            "median_cpu_seconds",
        )
        for name, part in sw["raw"].items()
    ]
    ways += [
        (
            "qmill sweep",
            f"one task, {plan['points']} bindings, on `{sw['spec']}` ({shape}); "
            "qmill.AsyncClient submit + result",
            sw["sweep"],
            "median_system_cpu_seconds",
        ),
        (
            "qmill plain tasks",
            f"{plan['points']} tasks, angles bound into the text; POST /batches of "
            f"{plan['plain_batch']}, collected "
            + ("by GET /batches/{id}" if plan["plain_collect"] == "batch" else "by long-polls"),
            sw["plain"],
            "median_system_cpu_seconds",
        ),
    ]
    for name, what, part, cpu in ways:
        rows.append(
            [
                name,
                what,
                _tries(part.get("tries_wall_seconds", [])),
                _fmt(part.get("median_seconds"), 2),
                _fmt(part.get("evaluations_per_second"), 0),
                _fmt(part.get("vs_reference"), 2),
                _fmt(part.get(cpu), 2),
                _fmt(part.get("median_load_generator_cpu_seconds"), 2),
                _load(part.get("max_foreign_cpu_cores")),
            ]
        )
    return md_table(headers, rows)


def sweep_phases(sw: dict[str, Any]) -> str:
    """Where the median try of the one-task sweep spent its time."""
    tries = [t for t in sw["sweep"].get("tries", []) if t.get("phases_seconds")]
    if not tries:
        return ""
    mid = sorted(tries, key=lambda t: float(t["wall_seconds"]))[(len(tries) - 1) // 2]
    rows = [[k, _fmt(v, 3)] for k, v in mid["phases_seconds"].items()]
    rows.append(["total, as the client saw it", _fmt(mid["wall_seconds"], 3)])
    return md_table(["phase (median try)", "seconds"], rows)


def render_markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    parts = [
        f"Run {result['started_at']} ({result['mode']} mode, {result['total_seconds']:.0f} s), "
        f"commit `{result.get('commit', '?')}`.",
        "",
        f"Machine: {m['cpu_model']}, {m['usable_cores']} cores, {m['ram_gib']} GiB RAM, "
        f"Linux {m['kernel']}; Python {m['python']}, qiskit {m['qiskit']}, "
        f"qiskit-aer {m['qiskit_aer']}; load average at start {m['load_average_at_start']}.",
        "",
    ]
    for part in result.get("strategies", {}).values():
        floor = part.get("floor")
        parts += [
            f"#### Strategy table: {part['workload']['description']}",
            "",
            strategy_table(part),
            "",
            f"Floor: {floor['strategy']} ({floor['label']}), {floor['wall_seconds']} s."
            if floor
            else "Floor: not measured.",
            "",
        ]
    if result.get("e2e"):
        parts += ["#### End to end (`qmill up`)", ""]
        for cfg in result["e2e"]:
            parts.append(f"- `{cfg['spec']}`: {cfg.get('settings', {})}")
        parts += [
            "",
            e2e_table(result["e2e"]),
            "",
            "p50/p99: submit-to-result as the client sees it. POST: the submit request alone. "
            "server: created_at to completed_at of the task record (queue + simulation + "
            "storing the result), so p50 minus server is what HTTP and polling add.",
            "",
        ]
        parts += [
            "#### CPU per Bell task, 1000-Bell workload (ms of CPU per task, by process)",
            "",
            cpu_breakdown_table(result["e2e"]),
            "",
            "#### CPU per HTTP request",
            "",
            request_cost_table(result["e2e"]),
            "",
        ]
    if result.get("growth"):
        parts += [growth_markdown(result["growth"]), ""]
    sw = result.get("sweep")
    if sw:
        parts += [f"#### Sweep: {sw['workload']['description']}", ""]
        if sw.get("error"):
            parts += [f"ERROR: {sw['error']}", ""]
        answer = sw.get("answer") or {}
        agree = {True: "yes", False: "NO", None: "not compared"}[sw.get("counts_agree")]
        parts += [
            sweep_table(sw),
            "",
            f"Median of {sw['plan']['repeat']} rounds, round robin (raw, sweep, plain). "
            f"Reference: the fastest raw way, {sw.get('reference')}. Same counts for every "
            f"point in every way (same seeds): {agree}. CPU: the raw process's, or the "
            "whole system's (every process of `qmill up`); load-gen: this benchmark's own "
            "process, which shares the cores. The plain programs were prepared "
            f"(`assign_parameters` + `qasm3.dumps`) in "
            f"{sw['workload']['plain_prepare_seconds']:.2f} s before timing, not counted. "
            f"The sweep's answer is {answer.get('answer_bytes', 0) / 1024:.0f} KiB of JSON, "
            f"which qmill.Client parses in {_fmt(answer.get('client_parse_seconds'), 3)} s.",
            "",
            sweep_phases(sw),
            "",
        ]
    parts += [
        f"(!) = other processes on the machine (not this benchmark) used more than "
        f"{DISTURBED_CORES:g} cores on average during that measurement: treat it as disturbed.",
        "",
    ]
    goals = result.get("goals", [])
    if any(g.get("issue", 7) == 7 for g in goals) or not goals:
        parts += [
            "#### Goals of issue 7",
            "",
            f"Reference numbers: {REFERENCE['source']}.",
            "",
            goals_table([g for g in goals if g.get("issue", 7) == 7]),
            "",
        ]
    if any(g.get("issue") == 15 for g in goals):
        parts += [
            "#### Goals of issue 15 (small tasks at the simulator's speed)",
            "",
            f"Judged on `{(judged_config(result.get('e2e', [])) or {}).get('config', '-')}`. "
            f"Reference numbers: {REFERENCE_15['source']}.",
            "",
            goals_table([g for g in goals if g.get("issue") == 15]),
            "",
        ]
    if any(g.get("issue") == 11 for g in goals):
        parts += [
            "#### Goals of issue 11 (sweeps), all measured in this run",
            "",
            goals_table([g for g in goals if g.get("issue") == 11]),
            "",
        ]
    return "\n".join(parts)
