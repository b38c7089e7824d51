"""API keys, tenant isolation and rate limits over HTTP against the real system."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from qmill.server.auth import hash_key
from tests.conftest import BELL
from tests.e2e.system import System, running_system

pytestmark = pytest.mark.e2e

ALICE, BOB, CAROL = "qm_alice-key-0001", "qm_bob-key-0002", "qm_carol-key-0003"


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    tmp = tmp_path_factory.mktemp("auth")
    keys_file = tmp / "keys"
    keys_file.write_text(f"{hash_key(CAROL)}  # carol, from a mounted secret file\n")
    with running_system(
        tmp,
        QMILL_AUTH__ENABLED="true",
        QMILL_AUTH__API_KEY_HASHES=json.dumps([hash_key(ALICE), hash_key(BOB)]),
        QMILL_AUTH__KEYS_FILE=str(keys_file),
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
