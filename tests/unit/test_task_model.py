"""The client's `Task` against the server's `TaskView`: same fields, compatible types.

The client is a plain dataclass (no pydantic, nothing from qmill.server), so nothing
but this test keeps it in step with what the server sends.
"""

from __future__ import annotations

import types
from dataclasses import fields
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Union, get_args, get_origin, get_type_hints

from pydantic import BaseModel

from qmill.client_core import Task
from qmill.server.models import TaskStatus, TaskView
from qmill.server.workload import EvsMethod, FloatPrecision, Noise

# Client fields the server does not send.
CLIENT_ONLY = {"raw"}  # the whole JSON answer
# Fields the server sends that the client reads only through ``Task.raw``, and why.
SERVER_ONLY = {
    "id": "the same value as task_id",
    "quantum_circuit": "sent only with ?include=circuit, which this client does not ask for",
}


def _wire_name(name: str) -> str:
    field = next(f for f in fields(Task) if f.name == name)
    return str(field.metadata.get("wire", name))


def _client_fields() -> dict[str, Any]:
    hints = get_type_hints(Task)
    return {_wire_name(f.name): hints[f.name] for f in fields(Task) if f.name not in CLIENT_ONLY}


def _server_fields() -> dict[str, Any]:
    hints = get_type_hints(TaskView)
    return {name: hints[name] for name, info in TaskView.model_fields.items() if not info.exclude}


def _options(hint: Any) -> set[Any]:
    """The types a value may have; a string enum is sent as a string, a model as an object."""
    members = get_args(hint) if get_origin(hint) in (Union, types.UnionType) else (hint,)
    return {_sent_as(m) for m in members}


def _sent_as(member: Any) -> Any:
    if isinstance(member, type) and issubclass(member, Enum) and issubclass(member, str):
        return str
    if isinstance(member, type) and issubclass(member, BaseModel):
        return dict[str, Any]
    return member


def test_the_fields_are_the_same() -> None:
    client, server = set(_client_fields()), set(_server_fields())
    assert client - server == set(), "Task fields the server does not send"
    assert server - client == set(SERVER_ONLY), "TaskView fields the client does not read"


def test_every_value_the_server_may_send_fits_the_client_field() -> None:
    client = _client_fields()
    for name, hint in _server_fields().items():
        if name in SERVER_ONLY:
            continue
        missing = _options(hint) - _options(client[name])
        assert not missing, f"{name}: the server may send {missing}, Task says {client[name]}"


def test_a_full_task_view_is_read_field_by_field() -> None:
    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    view = TaskView(
        id="7496f621-a003-42ec-8a48-92412acb19b4",
        task_id="7496f621-a003-42ec-8a48-92412acb19b4",
        status=TaskStatus.COMPLETED,
        shots=8,
        result={"00": 5, "11": 3},
        error="none",
        created_at=now,
        started_at=now,
        completed_at=now,
        qubits=2,
        depth=3,
        method="statevector",
        execution_seconds=0.5,
        queue_seconds=0.25,
        worker_id="w1",
        attempts=1,
        seed=7,
        memory=["00", "11"],
        quantum_circuit="OPENQASM 3.0;",
        shape=[2],
        results=[{"counts": {"0": 8}, "memory": None}, {"counts": {"1": 8}, "memory": None}],
        evs=[0.5, -0.25],
        stds=[0.0, 0.0],
        evs_method=EvsMethod.EXACT,
        precision=FloatPrecision.SINGLE,
        noise=Noise(readout=0.01),
        tags={"project": "bell"},
    )
    sent = view.to_json()
    task = Task.from_json(sent)
    for f in fields(Task):
        if f.name in CLIENT_ONLY:
            continue
        expected = sent[_wire_name(f.name)]
        if isinstance(getattr(view, _wire_name(f.name)), datetime):
            expected = getattr(view, _wire_name(f.name))
        assert getattr(task, f.name) == expected, f.name
    assert task.raw == sent
