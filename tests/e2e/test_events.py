"""``GET /events`` through the gateway of the system `qmill up` starts (the shared
default_system): a task's and a batch's streams, resuming, refusals, and the client."""

from __future__ import annotations

import json
import uuid

import httpx

from qmill.client import Client
from tests.conftest import BELL
from tests.e2e.system import System

ORDER = ["pending", "processing", "completed"]


def _read(client: httpx.Client, params: dict[str, str], **headers: str) -> list[dict[str, str]]:
    """Every frame of a stream until the server closes it."""
    with client.stream("GET", "/events", params=params, headers=headers) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        text = "".join(response.iter_text())
    frames = []
    for block in text.split("\n\n"):
        if block:
            frame: dict[str, str] = {}
            for line in block.split("\n"):
                name, _, value = line.partition(":")
                frame[name or "comment"] = value.strip()
            frames.append(frame)
    return frames


def test_a_task_stream_ends_with_its_result(default_system: System) -> None:
    with httpx.Client(base_url=default_system.url, timeout=30) as client:
        task_id = client.post("/tasks", json={"quantum_circuit": BELL, "shots": 100}).json()
        task_id = task_id["task_id"]
        frames = _read(client, {"task": task_id})
    assert frames[0] == {"retry": "2000"}
    statuses = [json.loads(f["data"]) for f in frames if f.get("event") == "status"]
    names = [s["status"] for s in statuses]
    # From the state it had when the stream opened, each change once, in order.
    assert names == ORDER[ORDER.index(names[0]) :], names
    (result,) = [f for f in frames if f.get("event") == "result"]
    body = json.loads(result["data"])
    assert body["task_id"] == task_id and sum(body["result"].values()) == 100
    assert int(result["id"]) == statuses[-1]["seq"]
    assert frames[-1]["event"] == "end"


def test_a_batch_stream_and_its_resume(default_system: System) -> None:
    tasks = [{"quantum_circuit": BELL, "shots": 10 + i} for i in range(3)]
    with httpx.Client(base_url=default_system.url, timeout=30) as client:
        batch = client.post("/batches", json={"tasks": tasks}).json()
        frames = _read(client, {"batch": batch["batch_id"]})
        results = [f for f in frames if f.get("event") == "result"]
        assert {json.loads(f["data"])["task_id"] for f in results} == set(batch["task_ids"])
        assert frames[-1]["event"] == "end"
        ids = [int(f["id"]) for f in frames if "id" in f]
        assert ids == sorted(ids)
        # Resume after the first result: only the tasks that changed later, once each.
        first = results[0]["id"]
        again = _read(client, {"batch": batch["batch_id"]}, **{"Last-Event-ID": first})
    resent = [json.loads(f["data"])["task_id"] for f in again if f.get("event") == "result"]
    assert resent == [json.loads(f["data"])["task_id"] for f in results[1:]]
    assert all(int(f["id"]) > int(first) for f in again if "id" in f)
    assert again[-1]["event"] == "end"


def test_unknown_ids_and_bad_queries_are_refused_at_once(default_system: System) -> None:
    with httpx.Client(base_url=default_system.url, timeout=10) as client:
        for params in ({"task": str(uuid.uuid4())}, {"batch": str(uuid.uuid4())}, {"task": "x"}):
            assert client.get("/events", params=params).status_code == 404
        for query in ("", f"?task={uuid.uuid4()}&batch={uuid.uuid4()}", "?task=a&task=b"):
            assert client.get("/events" + query).status_code == 422
        task_id = str(uuid.uuid4())
        refused = client.get(f"/events?task={task_id}", headers={"Last-Event-ID": "x"})
        assert refused.status_code == 422


def test_the_client_waits_on_the_stream(default_system: System) -> None:
    seen: list[str] = []
    with Client(default_system.url) as qm:
        task_id = qm.submit(BELL, shots=50)
        task = qm.wait(task_id, timeout=30, on_update=lambda t: seen.append(t.status))
        kinds = [event.event for event in qm.events(task=task_id)]
    assert task.status == "completed" and sum((task.counts or {}).values()) == 50
    assert seen[-1] == "completed"
    assert kinds == ["status", "result", "end"]  # a finished task: its state, then end
