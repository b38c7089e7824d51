"""Results far larger than their request (issue 13, item 4), over HTTP against `qmill up`
with API keys on: a big answer is stored compressed and read by 20 clients at once, the
storage quota answers 429, and Redis is bounded.

One system for the module; the integration tests (tests/integration/
test_result_storage.py) cover the estimate per answer kind (and the issue's example),
a full Redis and a full task stream.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest
import redis

from qmill.server import constants, enqueue, tasks
from qmill.server.auth import hash_key
from qmill.server.config import Settings
from qmill.server.models import SubmitRequest
from tests.conftest import random_outcomes
from tests.e2e.system import System, running_system

pytestmark = pytest.mark.e2e

ALICE = "qm_alice-results-0001"
QUOTA_MB = 2
BITS = 20


def charge(body: dict[str, object]) -> int:
    """What the quota is charged for a task at submit (`enqueue.charge_of`)."""
    request = SubmitRequest.model_validate(body)
    accepted = tasks.check(request, Settings())
    return enqueue.charge_of("task", accepted).total


def largest_pair_body() -> dict[str, object]:
    """The memory task with the most shots two of which fit the quota: two fit an
    empty quota exactly (within a few bytes), so two more never fit beside a third,
    however small the third's answer turns out."""
    quota = QUOTA_MB * 1024 * 1024
    low, high = 1, 100_000
    while low < high:
        shots = (low + high + 1) // 2
        body = {"quantum_circuit": random_outcomes(BITS), "shots": shots, "memory": True, "seed": 5}
        if 2 * charge(body) <= quota:
            low = shots
        else:
            high = shots - 1
    return {"quantum_circuit": random_outcomes(BITS), "shots": low, "memory": True, "seed": 5}


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with running_system(
        tmp_path_factory.mktemp("results"),
        QMILL_AUTH__ENABLED="true",
        QMILL_AUTH__API_KEY_HASHES=json.dumps([hash_key(ALICE)]),
        QMILL_REDIS__TENANT_STORAGE_MB=str(QUOTA_MB),
        QMILL_WORKER__PROCESSES="1",
    ) as running:
        yield running


def client(system: System, **headers: str) -> httpx.Client:
    return httpx.Client(
        base_url=system.url, timeout=30, headers={"Authorization": f"Bearer {ALICE}", **headers}
    )


def test_the_servers_are_bounded(system: System) -> None:
    r = redis.Redis.from_url(system.redis_url, decode_responses=True)
    try:
        assert r.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        assert int(r.config_get("maxmemory")["maxmemory"]) == Settings().redis.max_memory_mb << 20
    finally:
        r.close()


def test_the_storage_quota_is_a_429_with_retry_after(system: System) -> None:
    body = largest_pair_body()
    with client(system) as c:
        assert c.post("/tasks", json=body).status_code == 201
        # Two more never fit beside it, finished (its stored size) or not (its estimate).
        over = c.post("/batches", json={"tasks": [body, body]})
    assert over.status_code == 429
    assert over.json()["limit"] == "stored bytes"
    assert int(over.headers["Retry-After"]) >= 1


def test_a_big_answer_is_stored_compressed_and_read_by_20_clients_at_once(
    system: System,
) -> None:
    """Over 16 KiB of JSON (here ~110 KB; the issue's was 26 MB), an answer is stored
    compressed and sent as stored to clients that take gzip. Kept small enough that
    checking every response against the OpenAPI document stays quick."""
    body = {"quantum_circuit": random_outcomes(BITS), "shots": 2000, "memory": True, "seed": 3}
    with client(system) as c:
        batch = c.post("/batches", json={"tasks": [body, {**body, "seed": 4}]}).json()
        task_id, other = batch["task_ids"]
        done = c.get(f"/tasks/{task_id}", params={"wait": 30}).json()
        second = c.get(f"/tasks/{other}", params={"wait": 30}).json()
        # A batch of big answers is spliced from the stored ones too, gzip or not.
        for encoding in ("gzip", "identity"):
            listed = c.get(f"/batches/{batch['batch_id']}", headers={"Accept-Encoding": encoding})
            assert listed.json()["tasks"] == [done, second]
            assert listed.headers.get("content-encoding") == (
                "gzip" if encoding == "gzip" else None
            )
    assert done["status"] == "completed"
    memory = done["memory"]
    assert len(memory) == body["shots"]

    r = redis.Redis.from_url(system.redis_url)
    try:
        stored = r.strlen(constants.answer_key(task_id))
    finally:
        r.close()
    raw = len(json.dumps(memory)) + len(json.dumps(done["result"]))
    assert 0 < stored < raw / 2

    async def read_all(encoding: str, readers: int) -> list[httpx.Response]:
        headers = {"Authorization": f"Bearer {ALICE}", "Accept-Encoding": encoding}
        async with httpx.AsyncClient(base_url=system.url, timeout=30, headers=headers) as ac:
            return await asyncio.gather(*(ac.get(f"/tasks/{task_id}") for _ in range(readers)))

    zipped = asyncio.run(read_all("gzip", 20))
    assert [z.status_code for z in zipped] == [200] * 20  # was 19 x 503
    assert {z.headers.get("content-encoding") for z in zipped} == {"gzip"}
    assert all(z.json() == done for z in zipped)
    assert int(zipped[0].headers["content-length"]) < raw / 2
    plain = asyncio.run(read_all("identity", 4))
    assert [p.status_code for p in plain] == [200] * 4
    assert all("content-encoding" not in p.headers for p in plain)
    assert all(p.json() == done for p in plain)
