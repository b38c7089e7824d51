"""``python -m bench.run`` (``make bench``): the whole benchmark in one run.

1. the strategy table (`bench.strategies`) for the small and the heavy workload;
2. the end-to-end workloads (`bench.e2e`) for each system configuration (by default
   issue 15's before / combined / shipped, so each change's CPU per task is in one run);
3. the growth curves (`bench.growth`): end to end over raw Aer by qubits and by shots,
   and one ``POST /batches`` of 1000 Bell against raw Aer's batched call;
4. the sweep (`bench.sweep`): one task sweeping 1000 points, against raw Aer and against
   1000 plain tasks;
5. the goals of issues 7, 11 and 15 (`bench.goals`), judged from this run's numbers and
   the quoted references;
6. a table on stdout, JSON in ``bench/results/latest.json`` (and a timestamped copy),
   Markdown in ``bench/results/latest.md``, charts in ``bench/results/latest.png`` and
   ``bench/results/growth.png`` (`bench.chart`).

Everything is measured in the same run, because only ratios measured side by side mean
anything on a noisy machine; every row also reports how much CPU the rest of the machine
used meanwhile ("other load"), so a disturbed row can be recognised.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import chart, e2e, goals, growth, report, strategies, sweep, workloads
from bench.measure import Settler, machine_info
from bench.system import CONFIG_KEYS, DEFAULT_CONFIGS, SystemConfig

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
DOCS = REPO / "docs" / "performance.md"
DOCS_BEGIN = "<!-- bench:results:begin -->"
DOCS_END = "<!-- bench:results:end -->"


def log(message: str) -> None:
    print(message, flush=True)


def git_commit() -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny workloads: a smoke run (~1-2 min)")
    p.add_argument(
        "--strategies",
        default=",".join(strategies.DEFAULT_STRATEGIES),
        help="comma-separated rows of the strategy table (default: %(default)s); "
        "also known: process-pool-oversub",
    )
    p.add_argument(
        "--strategy-workloads",
        default="small,heavy",
        help="workloads of the strategy table (default: %(default)s)",
    )
    p.add_argument(
        "--config",
        action="append",
        default=None,
        metavar="SPEC",
        help="a system configuration, NAME[:key=value,...] with keys "
        + ", ".join(CONFIG_KEYS)
        + ", workloads (bell32+poll1+longpoll1+heavy); repeatable. Default: "
        + "; ".join(DEFAULT_CONFIGS)
        + " (quick: shipped only)",
    )
    p.add_argument("--skip-strategies", action="store_true")
    p.add_argument("--skip-e2e", action="store_true")
    p.add_argument("--skip-sweep", action="store_true")
    p.add_argument(
        "--skip-growth",
        action="store_true",
        help="skip the growth curves (end to end over raw Aer by qubits and shots, ~4 min)",
    )
    p.add_argument(
        "--sweep-points",
        type=int,
        default=None,
        help="points of the sweep (default 1000, quick 20)",
    )
    p.add_argument(
        "--sweep-repeat",
        type=int,
        default=None,
        help="rounds of the sweep benchmark, median kept (default 3, quick 1)",
    )
    p.add_argument(
        "--sweep-config",
        default="shipped",
        metavar="SPEC",
        help="the system configuration the sweep runs on, as for --config (default: %(default)s)",
    )
    p.add_argument(
        "--sweep-plain-batch",
        type=int,
        default=sweep.SweepPlan.plain_batch,
        help="plain tasks per POST /batches (default: %(default)s)",
    )
    p.add_argument(
        "--sweep-plain-collect",
        choices=("batch", "task"),
        default=sweep.SweepPlan.plain_collect,
        help="how plain tasks are collected: GET /batches/{id} after the batch's last task, "
        "or a long-poll per task (default: %(default)s)",
    )
    p.add_argument("--small-tasks", type=int, default=None, help="Bell tasks per strategy row")
    p.add_argument("--bell-tasks", type=int, default=None, help="tasks of the bell32 workload")
    p.add_argument("--bell-clients", type=int, default=32)
    p.add_argument("--single-tasks", type=int, default=None, help="tasks of poll1 / longpoll1")
    p.add_argument(
        "--poll-interval-ms", type=float, default=10.0, help="bell32 clients (issue 15's reference)"
    )
    p.add_argument("--single-poll-interval-ms", type=float, default=10.0, help="poll1 client")
    p.add_argument(
        "--settle-budget",
        type=float,
        default=None,
        help="seconds the whole run may wait for other load on the machine to go away "
        "before rows (default 90, quick 0)",
    )
    p.add_argument(
        "--repeat-small",
        type=int,
        default=None,
        help="tries of each small-workload row, best kept (default 2, quick 1); "
        "heavy rows run once",
    )
    p.add_argument("--row-timeout", type=float, default=600.0, help="seconds per strategy row")
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    p.add_argument("--no-chart", action="store_true")
    p.add_argument(
        "--update-docs",
        action="store_true",
        help=f"replace the results section of {DOCS.relative_to(REPO)} (full runs only)",
    )
    return p.parse_args(argv)


def build_workloads(args: argparse.Namespace) -> dict[str, workloads.Workload]:
    if args.quick:
        small_n = args.small_tasks or 20
        heavy = workloads.heavy(count=2, qubits=(10, 11), depth=6)
        heavy = workloads.Workload("heavy", "QUICK: " + heavy.description, heavy.circuits)
    else:
        small_n = args.small_tasks or 1000
        heavy = workloads.heavy()
    return {"small": workloads.small(small_n), "heavy": heavy}


def run_strategy_table(
    args: argparse.Namespace,
    wl: dict[str, workloads.Workload],
    workload_file: Path,
    settler: Settler,
) -> dict[str, Any]:
    cores = strategies.usable_cores()
    known = strategies.strategies(cores)
    names = [n.strip() for n in args.strategies.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"bench: unknown strategies {unknown}; known: {sorted(known)}")
    out: dict[str, Any] = {}
    for wname in [w.strip() for w in args.strategy_workloads.split(",") if w.strip()]:
        workload = wl[wname]
        repeat = max(1, args.repeat_small if wname == "small" else 1)
        log(f"strategy table, {wname}: {workload.description} (best of {repeat})")
        chosen = [n for n in names if not (known[n].small_only and wname != "small")]
        tries: dict[str, list[dict[str, Any]]] = {n: [] for n in chosen}
        # Round robin, so that a burst of load from elsewhere hits one try of several
        # strategies rather than every try of one.
        for attempt in range(repeat):
            for name in chosen:
                row = strategies.run_row(
                    name, wname, workload_file, cores, args.row_timeout, settler
                )
                tries[name].append(row)
                _log_row(name, row, attempt, repeat)
        rows = [strategies.best_of(tries[n]) for n in chosen]
        floor = strategies.add_ratios(rows)
        digests = {
            r["counts_digest"] for r in rows if r.get("same_work", True) and "error" not in r
        }
        out[wname] = {
            "workload": workload.summary(),
            "rows": rows,
            "floor": floor,
            "counts_agree": len(digests) <= 1,
        }
        if floor:
            log(f"  floor: {floor['strategy']} {floor['wall_seconds']} s")
    return out


def _log_row(name: str, row: dict[str, Any], attempt: int, repeat: int) -> None:
    tag = f"{name} [{attempt + 1}/{repeat}]" if repeat > 1 else name
    if "error" in row:
        log(f"  {tag:<26} ERROR {row['error']}")
        return
    stall = row["worst_stall_ms"]
    log(
        f"  {tag:<26} {row['wall_seconds']:8.2f} s {row['tasks_per_second']:8.1f}/s "
        f"cpu {row['cpu_utilisation_cores']:.2f} cores, stall "
        f"{'n/a' if stall is None else f'{stall:.1f} ms'}, "
        f"rss {row['peak_rss_mib']:.0f} MiB, other load {row['foreign_cpu_cores']:.2f} cores"
    )


def run_e2e(
    args: argparse.Namespace, wl: dict[str, workloads.Workload], settler: Settler
) -> list[dict[str, Any]]:
    specs = args.config or (["shipped"] if args.quick else list(DEFAULT_CONFIGS))
    configs = [SystemConfig.parse(s) for s in specs]
    if args.quick:
        plan = e2e.E2EPlan(
            bell_tasks=args.bell_tasks or 40,
            bell_clients=min(args.bell_clients, 8),
            single_tasks=args.single_tasks or 20,
            poll_interval_concurrent=args.poll_interval_ms / 1000,
            poll_interval_single=args.single_poll_interval_ms / 1000,
        )
    else:
        plan = e2e.E2EPlan(
            bell_tasks=args.bell_tasks or 1000,
            bell_clients=args.bell_clients,
            single_tasks=args.single_tasks or 300,
            poll_interval_concurrent=args.poll_interval_ms / 1000,
            poll_interval_single=args.single_poll_interval_ms / 1000,
        )
    results = []
    for config in configs:
        log(f"end to end, config {config.spec()}")
        results.append(e2e.run_async(e2e.bench_config(config, plan, wl["heavy"], log, settler)))
    return results


def run_sweep(args: argparse.Namespace, settler: Settler) -> dict[str, Any]:
    plan = sweep.SweepPlan(
        points=args.sweep_points or (20 if args.quick else 1000),
        repeat=args.sweep_repeat or (1 if args.quick else 3),
        plain_batch=args.sweep_plain_batch,
        plain_collect=args.sweep_plain_collect,
        config=args.sweep_config,
    )
    return asyncio.run(sweep.bench_sweep(plan, log, settler))


def print_summary(result: dict[str, Any]) -> None:
    print()
    print(report.render_markdown(result))
    met = [g for g in result["goals"] if g["met"] is True]
    print(f"goals met: {len(met)} of {len(result['goals'])} checks")


def update_docs(markdown: str) -> None:
    text = DOCS.read_text()
    if DOCS_BEGIN not in text or DOCS_END not in text:
        log(f"bench: {DOCS} has no results markers; not updated")
        return
    head, rest = text.split(DOCS_BEGIN, 1)
    _, tail = rest.split(DOCS_END, 1)
    DOCS.write_text(f"{head}{DOCS_BEGIN}\n{markdown}\n{DOCS_END}{tail}")
    log(f"bench: updated {DOCS.relative_to(REPO)}")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so every row's processes and every system are stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    t0 = time.perf_counter()
    started = datetime.now(UTC)
    machine = machine_info()
    log(
        f"qmill bench ({'quick' if args.quick else 'full'}) on {machine['cpu_model']}, "
        f"{machine['usable_cores']} cores, {machine['ram_gib']} GiB, load average "
        f"{machine['load_average_at_start']}"
    )
    wl = build_workloads(args)
    budget = args.settle_budget if args.settle_budget is not None else (0 if args.quick else 90)
    if args.repeat_small is None:
        args.repeat_small = 1 if args.quick else 2
    settler = Settler(budget)
    result: dict[str, Any] = {
        "schema": 1,
        "started_at": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "mode": "quick" if args.quick else "full",
        "commit": git_commit(),
        "argv": sys.argv[1:] if argv is None else argv,
        "machine": machine,
        "reference": goals.REFERENCE,
        "reference_15": goals.REFERENCE_15,
        "workloads": {k: v.summary() for k, v in wl.items()},
        "strategies": {},
        "e2e": [],
        "sweep": None,
        "growth": None,
    }
    with tempfile.TemporaryDirectory(prefix="qmill-bench-") as tmp:
        workload_file = Path(tmp) / "workloads.json"
        workloads.save(wl, workload_file)
        if not args.skip_strategies:
            result["strategies"] = run_strategy_table(args, wl, workload_file, settler)
    if not args.skip_e2e:
        result["e2e"] = run_e2e(args, wl, settler)
    if not args.skip_growth:
        log("growth: end to end over raw Aer, by qubits and by shots, and one batch")
        plan = growth.GrowthPlan.quick() if args.quick else growth.GrowthPlan()
        result["growth"] = growth.bench_growth(plan, log)
    if not args.skip_sweep:
        result["sweep"] = run_sweep(args, settler)
    result["settle_seconds"] = round(settler.spent, 1)
    result["goals"] = goals.evaluate_goals(result)
    result["total_seconds"] = round(time.perf_counter() - t0, 1)

    out_dir: Path = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    latest = out_dir / "latest.json"
    latest.write_text(json.dumps(result, indent=2) + "\n")
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    shutil.copyfile(latest, out_dir / f"run-{stamp}.json")
    markdown = report.render_markdown(result)
    (out_dir / "latest.md").write_text(markdown + "\n")
    if not args.no_chart and chart.draw_chart(result, out_dir / "latest.png"):
        log(f"bench: chart in {out_dir / 'latest.png'}")
    if (
        not args.no_chart
        and result["growth"]
        and chart.draw_growth(result["growth"], out_dir / "growth.png")
    ):
        log(f"bench: growth chart in {out_dir / 'growth.png'}")
    print_summary(result)
    full = not (
        args.quick or args.skip_strategies or args.skip_e2e or args.skip_sweep or args.skip_growth
    )
    if args.update_docs:
        if full:
            update_docs(markdown)
        else:
            log("bench: --update-docs ignored: only a full run may replace the docs' results")
    log(f"bench: results in {latest}; total {result['total_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
