"""The whole system started as `make run` starts it, used over HTTP as curl would."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator

import httpx
import psutil
import pytest

from tests.conftest import BELL
from tests.e2e.system import System, running_system

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with running_system(tmp_path_factory.mktemp("system")) as running:
        yield running


def poll(client: httpx.Client, task_id: str, timeout: float = 60) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body: dict[str, object] = client.get(f"/tasks/{task_id}").json()
        if body["status"] in ("completed", "failed"):
            return body
        time.sleep(0.05)
    raise TimeoutError(task_id)


def test_seed_curl_flow(system: System) -> None:
    with httpx.Client(base_url=system.url, timeout=10) as client:
        health = client.get("/health")
        assert health.status_code == 200
        assert health.json() == {"status": "healthy", "services": {"nats": True, "redis": True}}

        created = client.post("/tasks", json={"quantum_circuit": BELL, "shots": 1024})
        assert created.status_code == 201
        assert created.json()["status"] == "pending"
        task_id = created.json()["task_id"]

        body = poll(client, task_id)
        assert body["status"] == "completed"
        counts = body["result"]
        assert isinstance(counts, dict) and set(counts) <= {"00", "11"}
        assert sum(counts.values()) == 1024
        for key in (
            "id",
            "task_id",
            "status",
            "shots",
            "result",
            "error",
            "created_at",
            "started_at",
            "completed_at",
        ):
            assert key in body
        assert "quantum_circuit" not in body
        echoed = client.get(f"/tasks/{task_id}", params={"include": "circuit"}).json()
        assert echoed["quantum_circuit"] == BELL


def test_shots_default_to_1024(system: System) -> None:
    with httpx.Client(base_url=system.url, timeout=10) as client:
        task_id = client.post("/tasks", json={"quantum_circuit": BELL}).json()["task_id"]
        assert poll(client, task_id)["shots"] == 1024


def test_long_poll_returns_the_result(system: System) -> None:
    with httpx.Client(base_url=system.url, timeout=30) as client:
        task_id = client.post("/tasks", json={"quantum_circuit": BELL, "shots": 10}).json()[
            "task_id"
        ]
        body = client.get(f"/tasks/{task_id}", params={"wait": 20}).json()
        assert body["status"] == "completed"


@pytest.mark.parametrize(
    ("request_kwargs", "status", "words"),
    [
        ({"json": {"quantum_circuit": "OPENQASM 3.0;\nqubit q;\nfoo q;"}}, 400, "line 3, column 1"),
        ({"json": {"quantum_circuit": BELL, "shots": 0}}, 422, "shots"),
        ({"json": {"quantum_circuit": BELL, "shots": 10**9}}, 422, "shots"),
        ({"json": {"shots": 5}}, 422, "quantum_circuit"),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 422, "JSON"),
        ({"json": ["a", "list"]}, 422, "detail"),
    ],
)
def test_bad_submissions_are_4xx_with_json_detail(
    system: System, request_kwargs: dict[str, object], status: int, words: str
) -> None:
    with httpx.Client(base_url=system.url, timeout=10) as client:
        response = client.post("/tasks", **request_kwargs)  # type: ignore[arg-type]
        assert response.status_code == status
        assert words in response.text
        assert "detail" in response.json()


def test_unknown_task_and_paths(system: System) -> None:
    with httpx.Client(base_url=system.url, timeout=10) as client:
        missing = client.get("/tasks/5b8e3f4e-0000-4000-8000-000000000000")
        assert (missing.status_code, missing.json()) == (404, {"detail": "Task not found"})
        assert client.get("/tasks/not-a-uuid").status_code == 404
        assert client.get("/nowhere").status_code == 404
        wrong_verb = client.put("/tasks")
        assert wrong_verb.status_code == 405 and "POST" in wrong_verb.headers["allow"]


def test_cancel_and_batches_over_http(system: System) -> None:
    with httpx.Client(base_url=system.url, timeout=30) as client:
        created = client.post("/batches", json={"tasks": [{"quantum_circuit": BELL}] * 3})
        assert created.status_code == 201
        batch = created.json()
        assert len(batch["task_ids"]) == 3
        for task_id in batch["task_ids"]:
            assert poll(client, task_id)["status"] == "completed"
        listed = client.get(f"/batches/{batch['batch_id']}").json()
        assert [t["task_id"] for t in listed["tasks"]] == batch["task_ids"]
        done = client.delete(f"/tasks/{batch['task_ids'][0]}")
        assert done.status_code == 409 and "already completed" in done.json()["detail"]
        assert client.delete("/tasks/5b8e3f4e-0000-4000-8000-000000000000").status_code == 404
        assert client.get("/batches/5b8e3f4e-0000-4000-8000-000000000000").status_code == 404


def test_idempotency_key_over_http(system: System) -> None:
    with httpx.Client(base_url=system.url, timeout=30) as client:
        body = {"quantum_circuit": BELL, "shots": 64}
        headers = {"Idempotency-Key": "e2e-key-1"}
        first = client.post("/tasks", json=body, headers=headers)
        again = client.post("/tasks", json=body, headers=headers)
        assert first.json()["task_id"] == again.json()["task_id"]
        assert again.headers["idempotent-replayed"] == "true"
        other = client.post("/tasks", json={**body, "shots": 65}, headers=headers)
        assert other.status_code == 422


def test_the_page_origin_may_write_and_other_sites_may_not(system: System) -> None:
    """Auth is off here, as for `make run`: what guards the API from other sites' pages is
    the JSON-only body, the Host check and the Origin check (issue 13, item 10). The page's
    own requests (same origin, through the gateway, which passes Host on) still work."""
    port = httpx.URL(system.url).port
    body = json.dumps({"quantum_circuit": BELL}).encode()
    with httpx.Client(base_url=system.url, timeout=30) as client:
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
            own = {"host": host, "origin": f"http://{host}"}
            made = client.post(
                "/tasks",
                content=body,
                headers={**own, "content-type": "application/json; charset=utf-8"},
            )
            assert made.status_code == 201, made.text
            task_id = made.json()["task_id"]
            assert client.get(f"/tasks/{task_id}", headers=own).status_code == 200
            assert client.delete(f"/tasks/{task_id}", headers=own).status_code in (200, 409)
        plain = client.post("/tasks", content=body, headers={"content-type": "text/plain"})
        assert plain.status_code == 415 and plain.json()["allowed"] == ["application/json"]
        foreign = client.post(
            "/tasks", json={"quantum_circuit": BELL}, headers={"origin": "https://evil.example"}
        )
        assert foreign.status_code == 403
        rebound = client.get("/", headers={"host": f"evil.example:{port}"})
        assert rebound.status_code == 421 and "allowed_hosts" in rebound.json()["detail"]


def test_a_killed_worker_is_restarted(system: System) -> None:
    workers = system.workers()
    assert len(workers) == 2
    victim = workers[0]
    victim.kill()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = system.workers()
        if len(now) == 2 and victim.pid not in {p.pid for p in now}:
            break
        time.sleep(0.2)
    else:
        pytest.fail("worker was not restarted")
    with httpx.Client(base_url=system.url, timeout=30) as client:
        task_id = client.post("/tasks", json={"quantum_circuit": BELL}).json()["task_id"]
        assert poll(client, task_id)["status"] == "completed"


def test_sigterm_stops_everything(system: System) -> None:
    # Last in this module: stops the shared system.
    children = system.tree()
    # nats, redis, 2 workers (+ their simulation children), the API (+ its parse processes)
    assert len(children) >= 8
    system.proc.send_signal(signal.SIGTERM)
    assert system.proc.wait(timeout=60) == 0
    _gone, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [], [p.cmdline() for p in alive]
