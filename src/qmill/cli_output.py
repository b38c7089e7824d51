"""What the CLI prints for a task (its counts as a text bar chart and a few human lines)
or a batch, and how it reads the task fields and tags given on the command line.

Pure functions of a task or a counts dict, so tests compare their output directly.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, cast

import click

from qmill.pictures import top_outcomes

if TYPE_CHECKING:
    from qmill.client import Batch, Task
    from qmill.client_body import TaskOptions


def bar_chars() -> tuple[str, str]:
    """Block characters when stdout can encode them, else ASCII."""
    encoding = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        "█▏".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return "#", ""
    return "█", " ▏▎▍▌▋▊▉"


def counts_table(
    counts: Mapping[str, int],
    *,
    top: int = 32,
    order: str = "count",
    width: int = 40,
    unicode: bool = True,
) -> list[str]:
    """The counts as text rows: outcome, count, share, and a bar scaled to the largest.

    With ``unicode`` the bars use eighth blocks, so close counts still look different.
    """
    shots = sum(counts.values())
    rows = top_outcomes(counts, top, "outcome" if order == "outcome" else "count")
    if not rows:
        return ["(no counts)"]
    biggest = max(v for _, v in rows)
    key_width = max(len("outcome"), *(len(k) for k, _ in rows))
    count_width = max(len("count"), *(len(str(v)) for _, v in rows))
    full, eighths = ("█", " ▏▎▍▌▋▊▉") if unicode else ("#", "")
    lines = [f"{'outcome':<{key_width}}  {'count':>{count_width}}  {'share':>6}"]
    for outcome, count in rows:
        length = width * count / biggest if biggest else 0.0
        bar = full * int(length)
        if eighths:
            bar += eighths[int((length - int(length)) * 8)].strip()
        elif length - int(length) >= 0.5:
            bar += full
        if count and not bar:
            bar = eighths[1] if eighths else full
        share = f"{100 * count / shots:.1f}%" if shots else "-"
        lines.append(f"{outcome:<{key_width}}  {count:>{count_width}}  {share:>6}  {bar}")
    hidden = len(counts) - len(rows)
    if hidden:
        rest = shots - sum(v for _, v in rows)
        lines.append(f"... and {hidden} more outcomes ({rest} shots); --top shows more")
    return lines


def describe(task: Task) -> list[str]:
    """A finished or running task in a few human lines (the counts come separately)."""
    parts = [f"task {task.task_id}", task.status, f"{task.shots} shots"]
    shape = []
    if task.qubits is not None:
        shape.append(f"{task.qubits} qubit{'s' if task.qubits != 1 else ''}")
    if task.depth is not None:
        shape.append(f"depth {task.depth}")
    if task.method:
        shape.append(task.method)
    lines = ["  ".join(parts) + (f"  ({', '.join(shape)})" if shape else "")]
    timing = []
    if task.queue_seconds is not None:
        timing.append(f"queued {task.queue_seconds:.3g} s")
    if task.execution_seconds is not None:
        timing.append(f"ran {task.execution_seconds:.3g} s")
    if task.worker_id:
        timing.append(f"on {task.worker_id}")
    if task.attempts > 1:
        timing.append(f"{task.attempts} attempts")
    if timing:
        lines.append(", ".join(timing))
    if task.error:
        lines.append(f"error: {task.error}")
    if task.evs is not None:
        how = f", {task.evs_method}" if task.evs_method else ""
        lines.append(f"expectation values (shape {task.shape}{how}): {json.dumps(task.evs)}")
        if task.evs_method != "exact":
            lines.append(f"standard errors: {json.dumps(task.stds)}")
    if task.results is not None:
        lines.append(f"a sweep of shape {task.shape}: counts per binding with --json")
    return lines


def task_fields(pairs: Iterable[str]) -> TaskOptions:
    """``FIELD=JSON`` pairs as task options (a value that is not JSON is a string)."""
    fields: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{pair!r} is not FIELD=JSON", param_hint="--set")
        try:
            fields[name.strip()] = json.loads(raw)
        except ValueError:
            fields[name.strip()] = raw
    return cast("TaskOptions", fields)


def tag_pairs(pairs: Iterable[str]) -> dict[str, str]:
    """``KEY:VALUE`` pairs (``--tag``) as a task's tags; the server checks their limits."""
    tags: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition(":")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY:VALUE", param_hint="--tag")
        tags[key] = value
    return tags


def describe_batch(batch: Batch) -> list[str]:
    """A batch in human lines: how many tasks in each status, then one line per task
    (the most frequent outcome of a completed one, the error of one that failed)."""
    counts = ", ".join(f"{n} {status}" for status, n in batch.counts.items() if n)
    lines = [f"batch {batch.batch_id}  {len(batch.tasks)} tasks  ({counts})"]
    for task in batch.tasks:
        line = f"{task.task_id}  {task.status:<10}  {task.shots} shots"
        if task.counts:
            outcome, count = max(task.counts.items(), key=lambda item: item[1])
            line += f"  most frequent {outcome} ({count})"
        elif task.error:
            line += f"  {task.error}"
        lines.append(line)
    return lines
