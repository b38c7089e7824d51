"""API keys, tenant isolation and rate limits over HTTP against the real system."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from qmill import Client
from qmill.server.auth import hash_key
from tests.conftest import BELL
from tests.e2e.system import System, running_system

pytestmark = pytest.mark.e2e

ALICE, BOB, CAROL = "qm_alice-key-0001", "qm_bob-key-0002", "qm_carol-key-0003"
DAVE = "qm_dave-key-0004"


# How often the functions look at the keys file here: the bound on revocation.
KEYS_FILE_CHECK_SECONDS = 1.0


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "keys"
    path.write_text(f"{hash_key(CAROL)}  # carol, from a mounted secret file\n")
    return path


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory, keys_file: Path) -> Iterator[System]:
    tmp = tmp_path_factory.mktemp("auth")
    with running_system(
        tmp,
        QMILL_AUTH__ENABLED="true",
        QMILL_AUTH__API_KEY_HASHES=json.dumps([hash_key(ALICE), hash_key(BOB)]),
        QMILL_AUTH__KEYS_FILE=str(keys_file),
        QMILL_AUTH__KEYS_FILE_CHECK_SECONDS=str(KEYS_FILE_CHECK_SECONDS),
        QMILL_AUTH__RATE_PER_SECOND="2",
        QMILL_AUTH__BURST="5",
        QMILL_WORKER__PROCESSES="1",
    ) as running:
        yield running


def client(system: System, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=system.url, timeout=30, headers=headers)


def test_missing_or_wrong_key_is_401_and_health_stays_open(system: System) -> None:
    with client(system, None) as anon, client(system, "qm_not-a-key") as wrong:
        for c in (anon, wrong):
            response = c.post("/tasks", json={"quantum_circuit": BELL})
            assert response.status_code == 401
            assert "detail" in response.json()
            assert response.headers["www-authenticate"].startswith("Bearer")
        assert anon.get("/tasks/5b8e3f4e-0000-4000-8000-000000000000").status_code == 401
        assert anon.get("/health").status_code == 200


def test_a_task_is_visible_only_to_its_key(system: System) -> None:
    with client(system, ALICE) as alice, client(system, BOB) as bob:
        task_id = alice.post("/tasks", json={"quantum_circuit": BELL}).json()["task_id"]
        mine = alice.get(f"/tasks/{task_id}", params={"wait": 20})
        assert mine.status_code == 200 and mine.json()["status"] == "completed"
        theirs = bob.get(f"/tasks/{task_id}")
        assert (theirs.status_code, theirs.json()) == (404, {"detail": "Task not found"})
        assert bob.get(f"/tasks/{task_id}", params={"wait": 1}).status_code == 404
        assert bob.delete(f"/tasks/{task_id}").status_code == 404
        assert "owner" not in mine.json()
        # Its event stream likewise: another key's stream is refused exactly like a read.
        stream = bob.get("/events", params={"task": task_id})
        assert (stream.status_code, stream.json()) == (404, {"detail": "Task not found"})
    # Nor drawn for another key (Carol's: Bob's rate-limit tokens are counted by the
    # tests after this one).
    with client(system, CAROL) as carol:
        drawing = carol.get(f"/tasks/{task_id}/diagram.txt")
        assert (drawing.status_code, drawing.json()) == (404, {"detail": "Task not found"})


def patient(send: Callable[[], httpx.Response]) -> httpx.Response:
    """``send()``'s answer, sent again after its Retry-After while the key is over this
    system's tight rate limit (2/s, burst 5), which the tests before it may have spent."""
    for _ in range(10):
        response = send()
        if response.status_code != 429:
            return response
        time.sleep(float(response.headers.get("retry-after", "1")))
    return response


def test_a_batch_is_visible_only_to_its_key(system: System) -> None:
    """Another key's batch is a 404 exactly like an unknown one, for a wait and a
    cancel alike, and answered at once (never waited on)."""
    body = {"tasks": [{"quantum_circuit": BELL}] * 2}
    with client(system, ALICE) as alice, client(system, BOB) as bob:
        created = patient(
            lambda: alice.post("/batches", json=body, headers={"Idempotency-Key": "b1"})
        )
        assert created.status_code == 201, created.text
        path = f"/batches/{created.json()['batch_id']}"
        mine = patient(lambda: alice.get(path, params={"wait": 20})).json()
        assert mine["done"] and mine["counts"]["completed"] == 2
        started = time.monotonic()
        waited = patient(lambda: bob.get(path, params={"wait": 20}))
        assert (waited.status_code, waited.json()) == (404, {"detail": "Batch not found"})
        assert time.monotonic() - started < 5  # not held for the 20 s
        cancelled = patient(lambda: bob.delete(path))
        assert (cancelled.status_code, cancelled.json()) == (404, {"detail": "Batch not found"})


def test_a_listing_shows_only_the_keys_own_tasks(system: System) -> None:
    """Issue 14: another key's tasks, tags and batches are never listed or hinted at.
    (Through `qmill.Client`, whose retries wait out this system's tight rate limit.)"""
    tag = {"run": uuid.uuid4().hex[:12]}
    with Client(system.url, api_key=ALICE) as alice, Client(system.url, api_key=BOB) as bob:
        batch = alice.submit_batch([BELL, BELL], shots=10, tags=tag)
        task_ids, batch_id = list(batch.task_ids), batch.batch_id
        mine = alice.list_tasks(tags=tag)
        assert [t.task_id for t in mine.tasks] == task_ids
        assert [t.task_id for t in alice.list_tasks(batch=batch_id).tasks] == task_ids
        assert bob.list_tasks(tags=tag).tasks == []
        assert bob.list_tasks(batch=batch_id).tasks == []
        assert task_ids[0] not in {t.task_id for t in bob.iter_tasks(limit=100)}
    with client(system, None) as anon:
        assert anon.get("/tasks").status_code == 401


def test_keys_from_a_file_work(system: System) -> None:
    with client(system, CAROL) as carol:
        assert carol.post("/tasks", json={"quantum_circuit": BELL}).status_code == 201


def test_rate_limit_is_429_with_retry_after(system: System) -> None:
    time.sleep(3)  # let the bucket refill from earlier tests
    with client(system, BOB) as bob:
        statuses = [bob.get("/tasks/5b8e3f4e-0000-4000-8000-000000000000") for _ in range(12)]
    codes = [r.status_code for r in statuses]
    assert 429 in codes and codes.count(404) >= 5  # the burst, then refusals
    limited = next(r for r in statuses if r.status_code == 429)
    assert int(limited.headers["retry-after"]) >= 1
    assert "rate limit" in limited.json()["detail"]


def test_a_key_added_to_or_removed_from_the_file_counts_without_a_restart(
    system: System, keys_file: Path
) -> None:
    """Issue 13, item 7: the functions cached the file's hashes for their lifetime, so a
    removed key kept working until a restart. Now within keys_file_check_seconds."""
    missing = "/tasks/5b8e3f4e-0000-4000-8000-000000000000"
    carol_line = keys_file.read_text()

    def status_within(expected: int, bound: float) -> float:
        started = time.monotonic()
        with client(system, DAVE) as dave:
            while (status := dave.get(missing).status_code) != expected:
                assert time.monotonic() - started < bound, status
                time.sleep(0.5)  # DAVE's own bucket refills at 2/s
        return time.monotonic() - started

    with client(system, DAVE) as dave:
        assert dave.get(missing).status_code == 401
    # Replaced the way a secret mount or `mv` does, CAROL kept.
    staged = keys_file.with_suffix(".new")
    staged.write_text(carol_line + f"{hash_key(DAVE)}  # dave\n")
    staged.replace(keys_file)
    # A generous bound (the setting plus the machine's slack) that proves "not never".
    status_within(404, KEYS_FILE_CHECK_SECONDS + 5)
    staged.write_text(carol_line)
    staged.replace(keys_file)
    status_within(401, KEYS_FILE_CHECK_SECONDS + 5)
    with client(system, CAROL) as carol:
        assert carol.get(missing).status_code == 404
