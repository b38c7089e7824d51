"""What a task record holds, read and written: the typed outcomes of its transitions,
the fields a new record is written with, and how a stored record reads as a `TaskView`.

Kept apart from `tasks` (the transitions themselves) so that module stays about the
Lua scripts and their callers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from qmill.server.models import TaskStatus, TaskView
from qmill.server.store import answers
from qmill.server.store.new_tasks import Field, Value
from qmill.server.workload import Plan


class Outcome(StrEnum):
    """What a transition did: applied, or why not (no record, or the final state kept).

    The values are the transition scripts' answers; a kept final state is named after
    the `TaskStatus` it holds.
    """

    APPLIED = "ok"
    MISSING = "missing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class StartedTask:
    """What a worker needs to run a task it has just moved to `processing`."""

    task_id: str
    circuit: str
    shots: int
    created_at: datetime
    attempts: int
    seed: int | None = None
    memory: bool = False
    owner: str | None = None
    # The admitted options (`qmill.server.workload.Plan` as JSON); "" for a task
    # recorded before options existed, which runs as Aer's automatic method decides.
    plan: str = ""


@dataclass(frozen=True, slots=True)
class Answer:
    """What a completed task returns, in the stored (JSON) form of each field."""

    # Counts of one circuit (a task without a sweep or observables).
    counts: Mapping[str, int] | None = None
    memory: list[str] | None = None
    # A sampling sweep: nested lists (the sweep's shape) of {"counts", "memory"}.
    results: list[object] | None = None
    # Expectation values and their standard errors: a number or nested lists.
    evs: float | list[object] | None = None
    stds: float | list[object] | None = None
    evs_method: str | None = None


@dataclass(frozen=True, slots=True)
class StartOutcome:
    """Either the task to run (status `APPLIED`), or why not (`MISSING` or its final state)."""

    task: StartedTask | None
    status: Outcome


def hset_pairs(fields: Mapping[str, Field]) -> list[Value]:
    """HSET arguments: field, value, ... for the fields that have a value."""
    pairs: list[Value] = []
    for key, value in fields.items():
        if value is not None:
            pairs += [key, value]
    return pairs


def record_view(raw: Mapping[str, str]) -> TaskView:
    """A stored record as the API shows it (a compressed answer not yet read: see
    `unpacked`). Optional fields stored empty read as absent."""

    def opt(name: str) -> str | None:
        value = raw.get(name)
        return value if value not in (None, "") else None

    result = opt("result")
    return TaskView(
        id=raw["id"],
        task_id=raw["id"],
        status=TaskStatus(raw["status"]),
        shots=int(raw["shots"]),
        result=json.loads(result) if result else None,
        error=opt("error"),
        created_at=datetime.fromisoformat(raw["created_at"]),
        started_at=_dt(opt("started_at")),
        completed_at=_dt(opt("completed_at")),
        qubits=_int(opt("qubits")),
        depth=_int(opt("depth")),
        method=opt("method"),
        execution_seconds=_float(opt("execution_seconds")),
        queue_seconds=_float(opt("queue_seconds")),
        worker_id=opt("worker_id"),
        attempts=int(raw.get("attempts") or 0),
        seed=_int(opt("seed")),
        owner=opt("owner"),
        memory=json.loads(shot_memory) if (shot_memory := opt("shot_memory")) else None,
        quantum_circuit=opt("circuit"),
        results=_loads(opt("results")),
        evs=_loads(opt("evs")),
        stds=_loads(opt("stds")),
        evs_method=opt("evs_method"),
        batch_id=opt("batch_id"),
        tags=_loads(opt("tags")) or {},
        **_plan_fields(opt("plan")),
    )


def unpacked(view: TaskView, stored: answers.Packed | None) -> TaskView:
    """The view with its compressed answer decompressed into its fields."""
    if stored is None:
        return view
    return view.model_copy(update=stored.members())


def _loads(value: str | None) -> Any:
    return json.loads(value) if value else None


def _plan_fields(raw: str | None) -> dict[str, Any]:
    """What a task view shows of its admitted options: the answer's shape and the
    options that change what it means (precision, noise), as submitted."""
    if not raw:
        return {}
    plan = Plan.model_validate_json(raw)
    precision = plan.target_precision if plan.target_precision is not None else plan.precision
    return {"shape": plan.shape, "precision": precision, "noise": plan.noise}


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _int(value: str | None) -> int | None:
    return int(value) if value else None


def _float(value: str | None) -> float | None:
    return float(value) if value else None


def started(task_id: str, reply: Sequence[Any]) -> StartOutcome:
    """What the start script answered (see `_START`)."""
    status = str(reply[0])
    if status != TaskStatus.PROCESSING.value:
        return StartOutcome(task=None, status=Outcome(status))
    task = StartedTask(
        task_id=task_id,
        circuit=str(reply[1]),
        shots=int(reply[2]),
        created_at=datetime.fromisoformat(str(reply[3])),
        attempts=int(reply[4]),
        seed=int(reply[5]) if reply[5] else None,
        memory=reply[6] == "1",
        owner=str(reply[7]) or None,
        plan=str(reply[8]),
    )
    return StartOutcome(task=task, status=Outcome.APPLIED)


def completion(
    answer: Answer,
    qubits: int | None,
    depth: int | None,
    method: str | None,
    execution_seconds: float | None,
    worker_id: str | None,
    queue_seconds: float | None,
) -> tuple[answers.Encoded, dict[str, Field]]:
    """A result as the finish script writes it: the encoded answer and the fields."""
    encoded = answers.encode(
        {
            "result": dict(answer.counts) if answer.counts is not None else None,
            "memory": answer.memory,
            "results": answer.results,
            "evs": answer.evs,
            "stds": answer.stds,
        }
    )
    fields: dict[str, Field] = {
        **encoded.fields,
        "evs_method": answer.evs_method,
        "qubits": qubits,
        "depth": depth,
        "method": method,
        "execution_seconds": execution_seconds,
        "worker_id": worker_id,
        "queue_seconds": queue_seconds,
    }
    return encoded, fields
