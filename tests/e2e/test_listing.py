"""``GET /tasks``, tags, `Client.list_tasks` and ``qmill ls`` against the real system
(auth off, the shared default system; other modules' tasks are there too, so every
query here is scoped by a tag of this run's own)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from qmill import Client
from tests.conftest import BELL
from tests.e2e.system import System

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def system(default_system: System) -> System:
    return default_system


@pytest.fixture(scope="module")
def run(system: System) -> dict[str, object]:
    """This module's tasks: two alone, then a batch of two, all finished, all tagged."""
    tag = uuid.uuid4().hex[:12]
    with httpx.Client(base_url=system.url, timeout=30) as http:
        alone = []
        for i in range(2):
            body = {"quantum_circuit": BELL, "shots": 10, "tags": {"run": tag, "i": str(i)}}
            response = http.post("/tasks", json=body)
            assert response.status_code == 201, response.text
            alone.append(response.json()["task_id"])
        body = {"tasks": [{"quantum_circuit": BELL, "tags": {"run": tag}} for _ in range(2)]}
        batch = http.post("/batches", json=body).json()
        for task_id in [*alone, *batch["task_ids"]]:
            done = http.get(f"/tasks/{task_id}", params={"wait": 20}).json()
            assert done["status"] == "completed"
    return {"tag": tag, "alone": alone, "batch": batch}


def test_the_route_lists_newest_first_with_filters_and_cursors(
    system: System, run: dict[str, object]
) -> None:
    tag, alone, batch = run["tag"], run["alone"], run["batch"]
    assert isinstance(alone, list) and isinstance(batch, dict)
    newest_first = [*batch["task_ids"], *alone[::-1]]
    with httpx.Client(base_url=system.url, timeout=30) as http:
        page = http.get("/tasks", params={"tag": f"run:{tag}"}).json()
        assert [t["task_id"] for t in page["tasks"]] == newest_first
        assert page["next_cursor"] is None
        first = page["tasks"][-1]
        assert first["tags"] == {"run": tag, "i": "0"} and first["status"] == "completed"
        assert "result" not in first and first["batch_id"] is None
        assert page["tasks"][0]["batch_id"] == batch["batch_id"]
        # Paged two at a time: the same tasks, each once.
        seen, cursor = [], None
        while True:
            params = {"tag": f"run:{tag}", "limit": "2", **({"cursor": cursor} if cursor else {})}
            page = http.get("/tasks", params=params).json()
            seen += [t["task_id"] for t in page["tasks"]]
            if (cursor := page["next_cursor"]) is None:
                break
        assert seen == newest_first
        both = http.get("/tasks", params=[("tag", f"run:{tag}"), ("tag", "i:1")]).json()
        assert [t["task_id"] for t in both["tasks"]] == alone[1:]
        of_batch = http.get("/tasks", params={"batch": batch["batch_id"]}).json()
        assert [t["task_id"] for t in of_batch["tasks"]] == batch["task_ids"]
        failed = http.get("/tasks", params={"tag": f"run:{tag}", "status": "failed"}).json()
        assert failed == {"tasks": [], "next_cursor": None}
        unknown = http.get("/tasks", params={"batch": str(uuid.uuid4())}).json()
        assert unknown == {"tasks": [], "next_cursor": None}
        for params, says in (
            ({"cursor": "0" * 20 + str(uuid.uuid4()) + "'--"}, "cursor"),
            ({"limit": "1000000"}, "limit"),
            ({"since": "last tuesday"}, "RFC 3339"),
            ({"tag": "a:\x07"}, "control"),
            ({"owner": "x"}, "unknown query parameter"),
        ):
            refused = http.get("/tasks", params=params)
            assert refused.status_code == 422 and says in str(refused.json()["detail"]), params


def test_the_client_lists_and_follows_cursors(system: System, run: dict[str, object]) -> None:
    tag, alone = run["tag"], run["alone"]
    assert isinstance(tag, str) and isinstance(alone, list)
    with Client(system.url) as qm:
        page = qm.list_tasks(tags={"run": tag}, limit=3)
        assert len(page.tasks) == 3 and page.next_cursor is not None
        every = list(qm.iter_tasks(tags={"run": tag}, status=["completed"], limit=3))
        assert [t.task_id for t in every][-2:] == alone[::-1] and len(every) == 4
        assert all(t.done and t.tags["run"] == tag for t in every)
        assert qm.get(alone[0]).tags == {"run": tag, "i": "0"}


def test_qmill_ls_prints_a_table_and_json(system: System, run: dict[str, object]) -> None:
    tag, alone = run["tag"], run["alone"]
    assert isinstance(alone, list)
    env = {k: v for k, v in os.environ.items() if not k.startswith("QMILL_")}
    env["QMILL_URL"] = system.url
    qmill = str(Path(sys.executable).parent / "qmill")

    def ls(*args: str) -> str:
        done = subprocess.run(
            [qmill, "ls", "--tag", f"run:{tag}", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    table = ls("--tag", "i:0").splitlines()
    assert table[0].split()[:3] == ["TASK", "STATUS", "CREATED"]
    assert len(table) == 2 and table[1].startswith(f"{alone[0]}  completed")
    assert f"i:0,run:{tag}" in table[1]
    listed = json.loads(ls("--json", "--limit", "3", "--since", "1h"))
    assert len(listed["tasks"]) == 3
    assert {t["tags"]["run"] for t in listed["tasks"]} == {tag}
    # Each task as the server sent it (its timestamps too), not as the client re-wrote it.
    assert all(t["created_at"].endswith("Z") for t in listed["tasks"])
