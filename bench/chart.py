"""The charts of a run: the comparison (latest.png) and the growth curves (growth.png)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.goals import (
    BATCH_VS_RAW_GOAL,
    BELL32_VS_ORIGINAL_GOAL,
    HEAVY_VS_FLOOR_GOAL,
    LONG_POLL_P50_GOAL_15_MS,
    LONG_POLL_P50_GOAL_MS,
    REFERENCE,
    REFERENCE_15,
    SMALL_SPEEDUP_GOAL,
    STALL_GOAL_MS,
)


def draw_chart(result: dict[str, Any], path: Path) -> bool:
    """The comparison as a PNG; False (and a message) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench: matplotlib is not installed; no chart (make bench installs it)")
        return False

    fig, axes = plt.subplots(2, 3, figsize=(19, 10.5))
    strategies = result.get("strategies", {})

    def bars(ax: Any, part: dict[str, Any] | None, key: str, title: str, xlabel: str) -> None:
        if not part:
            ax.set_visible(False)
            return
        rows = [r for r in part["rows"] if "error" not in r]
        names = [r["strategy"] for r in rows]
        values = [float(r[key]) for r in rows]
        colors = [
            "#2b8a3e"
            if r.get("is_floor")
            else "#868e96"
            if r["family"] == "raw"
            else "#1c7ed6"
            if r["family"] == "qmill"
            else "#f08c00"
            for r in rows
        ]
        y = range(len(rows))
        ax.barh(list(y), values, color=colors)
        ax.set_yticks(list(y), names)
        ax.invert_yaxis()
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        for i, r in enumerate(rows):
            ratio = r.get("vs_floor")
            note = f" {ratio:.2f}x floor" if ratio is not None else ""
            ax.text(values[i], i, note, va="center", fontsize=8)
        ax.margins(x=0.25)

    bars(
        axes[0][0],
        strategies.get("heavy"),
        "wall_seconds",
        "Heavy workload: wall time (lower is better)",
        "seconds",
    )
    bars(
        axes[0][1],
        strategies.get("small"),
        "tasks_per_second",
        "Small workload (Bell): throughput (higher is better)",
        "tasks/s",
    )

    ax = axes[0][2]
    labels: list[str] = []
    stalls: list[float] = []
    for wname in ("small", "heavy"):
        for r in strategies.get(wname, {}).get("rows", []):
            if r.get("worst_stall_ms") is not None:
                labels.append(f"{r['strategy']} ({wname})")
                stalls.append(max(0.01, float(r["worst_stall_ms"])))
    if labels:
        ax.barh(range(len(labels)), stalls, color="#c92a2a")
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.axvline(STALL_GOAL_MS, color="k", ls="--", lw=1, label=f"{STALL_GOAL_MS:g} ms")
        ax.legend(fontsize=8)
    ax.set_title("Worst event-loop stall of the driving process (log)")
    ax.set_xlabel("ms")

    configs = [c for c in result.get("e2e", []) if c.get("workloads")]

    ax = axes[1][0]
    names = [c["config"] for c in configs if "bell32" in c["workloads"]]
    tps = [
        c["workloads"]["bell32"]["tasks_per_second"] for c in configs if "bell32" in c["workloads"]
    ]
    ax.bar(names, tps, color="#1c7ed6")
    ref = float(REFERENCE["bell32_tasks_per_second"])
    ax.axhline(ref, color="#868e96", ls=":", label=f"original {ref:g}/s (issue 7, earlier)")
    ax.axhline(
        SMALL_SPEEDUP_GOAL * ref,
        color="k",
        ls="--",
        label=f"issue 7 goal {SMALL_SPEEDUP_GOAL * ref:g}/s",
    )
    ref15 = float(REFERENCE_15["original_bell32_tasks_per_second"])
    ax.axhline(
        ref15, color="#495057", ls=":", label=f"original {ref15:g}/s (issue 15, lean client)"
    )
    ax.axhline(
        BELL32_VS_ORIGINAL_GOAL * ref15,
        color="#c92a2a",
        ls="--",
        label=f"issue 15 goal {BELL32_VS_ORIGINAL_GOAL * ref15:.0f}/s",
    )
    single = [
        r
        for r in strategies.get("small", {}).get("rows", [])
        if r.get("strategy") in ("raw-seq", "raw-seq-1t") and "error" not in r
    ]
    if single:
        best = max(float(r["tasks_per_second"]) for r in single)
        ax.axhline(best, color="#2b8a3e", ls="-.", label=f"raw 1-process loop {best:.0f}/s")
    ax.set_title("End to end: 1000 Bell, 32 polling clients")
    ax.set_ylabel("tasks/s")
    ax.legend(fontsize=8)

    ax = axes[1][1]
    xs: list[str] = []
    p50s: list[float] = []
    p99s: list[float] = []
    for c in configs:
        for wname in ("poll1", "longpoll1"):
            w = c["workloads"].get(wname)
            if w and w["latency_ms"]["p50"] is not None:
                xs.append(f"{c['config']}\n{wname}")
                p50s.append(float(w["latency_ms"]["p50"]))
                p99s.append(float(w["latency_ms"]["p99"]))
    if xs:
        pos = list(range(len(xs)))
        ax.bar([p - 0.2 for p in pos], p50s, width=0.4, label="p50", color="#1c7ed6")
        ax.bar([p + 0.2 for p in pos], p99s, width=0.4, label="p99", color="#a5d8ff")
        ax.set_xticks(pos, xs, fontsize=8)
        ax.set_yscale("log")
        ax.axhline(LONG_POLL_P50_GOAL_MS, color="k", ls="--", label="issue 7 goal: long-poll 5 ms")
        ax.axhline(
            LONG_POLL_P50_GOAL_15_MS,
            color="#c92a2a",
            ls="--",
            label=f"issue 15 goal: long-poll {LONG_POLL_P50_GOAL_15_MS:g} ms",
        )
        ax.axhline(
            float(REFERENCE["poll1_p50_ms"]),
            color="#868e96",
            ls=":",
            label="original p50 polling 16 ms (earlier)",
        )
        ax.legend(fontsize=8)
    ax.set_title("End to end: one client, Bell, submit-to-result latency (log)")
    ax.set_ylabel("ms")

    ax = axes[1][2]
    hx = [c["config"] for c in configs if "heavy" in c["workloads"]]
    hw = [c["workloads"]["heavy"]["wall_seconds"] for c in configs if "heavy" in c["workloads"]]
    floor = strategies.get("heavy", {}).get("floor")
    if floor:
        hx = [f"raw floor\n({floor['strategy']})", *hx]
        hw = [floor["wall_seconds"], *hw]
    ax.bar(
        hx,
        hw,
        color=["#2b8a3e"] * (1 if floor else 0) + ["#1c7ed6"] * (len(hx) - (1 if floor else 0)),
    )
    if floor:
        ax.axhline(
            HEAVY_VS_FLOOR_GOAL * float(floor["wall_seconds"]),
            color="k",
            ls="--",
            label=f"goal {HEAVY_VS_FLOOR_GOAL:g}x floor",
        )
    lo, hi = REFERENCE["heavy_wall_seconds"]
    ax.axhspan(lo, hi, color="#ced4da", alpha=0.6, label=f"original {lo:g}-{hi:g} s (earlier)")
    ax.set_title("End to end: 12 heavy circuits at once")
    ax.set_ylabel("seconds")
    ax.legend(fontsize=8)

    m = result["machine"]
    fig.suptitle(
        f"qmill bench {result['started_at']} ({result['mode']}): {m['cpu_model']}, "
        f"{m['usable_cores']} cores, {m['ram_gib']} GiB; qiskit-aer {m['qiskit_aer']}",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def draw_growth(growth: dict[str, Any], path: Path) -> bool:
    """End to end over raw Aer against the work: by qubits (GHZ, random) and by shots."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench: matplotlib is not installed; no growth chart (make bench installs it)")
        return False
    series = growth.get("series")
    if not series:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    for name, color in (("ghz", "#1c7ed6"), ("random", "#f08c00")):
        rows = series.get(name, [])
        left.plot([r["x"] for r in rows], [r["ratio"] for r in rows], "o-", color=color, label=name)
    left.set_xlabel("qubits (statevector, 1024 shots)")
    left.set_title("End to end / raw Aer, one task at a time, by qubits")
    rows = series.get("shots", [])
    right.plot([r["x"] for r in rows], [r["ratio"] for r in rows], "o-", color="#2b8a3e")
    right.set_xscale("log")
    right.set_xlabel(f"shots ({growth['plan']['shots_qubits']}-qubit random circuit)")
    right.set_title("End to end / raw Aer, by shots")
    batch = growth.get("batch")
    for ax in (left, right):
        ax.set_yscale("log")
        ax.axhline(1.0, color="k", lw=1, label="raw Aer (1.0)")
        if batch:
            ax.axhline(
                1 / batch["ratio"],
                color="#c92a2a",
                ls=":",
                label=f"POST /batches of {batch['tasks']} Bell: raw/e2e throughput "
                f"{batch['ratio']:.2f} (goal {BATCH_VS_RAW_GOAL:g})",
            )
        ax.set_ylabel("end-to-end time / raw Aer time (log)")
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True
