"""Results far larger than their request (issue 13, item 4): the answer's estimate, its
compressed storage, the per-tenant storage quota, a full Redis and a full task stream.

Against the session's real Redis and NATS (a full Redis is a redis-server of this
module's own, made full on purpose), and the real simulator for the estimates.
"""

from __future__ import annotations

import gzip
import json
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from qmill.server import batches, constants, tasks
from qmill.server.bus import QUEUE_FULL_RETRY_AFTER_SECONDS, Bus
from qmill.server.config import Settings
from qmill.server.errors import (
    DependencyUnavailable,
    LimitExceeded,
    StorageQuotaExceeded,
    StoreFull,
)
from qmill.server.models import SubmitRequest, TaskStatus
from qmill.server.processes import Server
from qmill.server.store import Answer, Charge, Outcome, Stores, answers
from qmill_worker.consumer import Worker
from qmill_worker.errors import FailureReason
from qmill_worker.outcomes import Completed, TaskContext
from qmill_worker.simulator import SimJob, SimResult, simulate
from tests.conftest import BELL, Servers, free_port, random_outcomes

MIB = 1024 * 1024


RY = (
    'OPENQASM 3.0; include "stdgates.inc"; input float theta; qubit[2] q; bit[2] c; '
    "ry(theta) q[0]; cx q[0], q[1]; c = measure q;"
)
RY_EVS = 'OPENQASM 3.0; include "stdgates.inc"; input float theta; qubit[2] q; ry(theta) q[0];'

# One of each answer kind, each as large as its options make it.
KINDS: dict[str, dict[str, Any]] = {
    "counts": {"quantum_circuit": random_outcomes(12, one_bit_registers=False), "shots": 5000},
    "counts and memory, one-bit registers": {
        "quantum_circuit": random_outcomes(10, one_bit_registers=True),
        "shots": 3000,
        "memory": True,
    },
    "sweep with memory": {
        "quantum_circuit": RY,
        "shots": 7,
        "memory": True,
        "parameters": {"theta": [[0.1, 0.2, 0.3], [1.0, 2.0, 3.0]]},
    },
    "sweep of single shots": {
        "quantum_circuit": RY,
        "shots": 1,
        "parameters": {"theta": [0.001 * k for k in range(400)]},
    },
    "expectation values": {
        "quantum_circuit": RY_EVS,
        "observables": [[["ZI", 1.0]], [["XX", -0.5], ["ZZ", 1e-300]]],
        "parameters": {"theta": [[0.3], [1.7], [2.9]]},
        "precision": 0.01,
        "seed": 3,
    },
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_answer_estimate_is_an_upper_bound_of_the_real_answer(kind: str) -> None:
    body = KINDS[kind]
    accepted = tasks.check(SubmitRequest.model_validate(body), Settings())
    plan = accepted.plan
    job = SimJob(
        task_id="estimate",
        circuit=body["quantum_circuit"],
        shots=body.get("shots", 1024),
        seed=body.get("seed"),
        memory=body.get("memory", False),
        plan=plan.model_dump_json(exclude_defaults=True),
    )
    answer = simulate(job).answer()
    stored = [answer.counts, answer.memory, answer.results, answer.evs, answer.stds]
    size = sum(len(json.dumps(value)) for value in stored if value is not None)
    assert 0 < size <= plan.answer_bytes
    # Not wildly pessimistic either where most shots are distinct outcomes.
    if kind.startswith("counts"):
        assert plan.answer_bytes < 2 * size


def test_the_example_of_the_issue_is_refused_at_submit() -> None:
    body = {
        "quantum_circuit": random_outcomes(128, one_bit_registers=True),
        "shots": 100_000,
        "memory": True,
    }
    with pytest.raises(LimitExceeded) as refused:
        tasks.check(SubmitRequest.model_validate(body), Settings())
    assert refused.value.limit == "result bytes (estimated)"
    assert refused.value.value > 50 * MIB  # 128 registers: 255 characters a shot, twice


@pytest.fixture
def rc(servers: Servers) -> Iterator[redis.Redis]:
    """A plain client of the session's Redis, to look at what the stores wrote."""
    client = redis.Redis(port=servers.redis.port, decode_responses=True)
    try:
        yield client
    finally:
        client.close()


# --- compressed storage ------------------------------------------------------------------------


def shot_memory(shots: int, bits: int) -> list[str]:
    rng = random.Random(7)
    return [format(rng.getrandbits(bits), f"0{bits}b") for _ in range(shots)]


async def pending(stores: Stores, owner: str | None = None) -> str:
    task_id = str(uuid.uuid4())
    await stores.tasks.create(task_id, BELL, 20_000, memory=True, owner=owner)
    return task_id


async def test_a_big_answer_is_stored_compressed_under_its_own_key(
    stores: Stores, rc: redis.Redis
) -> None:
    memory = shot_memory(20_000, 64)
    counts = {m: 1 for m in memory}
    raw_size = len(json.dumps(memory)) + len(json.dumps(counts))
    task_id = await pending(stores)
    outcome = await stores.tasks.complete(task_id, Answer(counts=counts, memory=memory))
    assert outcome is Outcome.APPLIED

    r = rc
    record = r.hgetall(constants.task_key(task_id))
    assert "result" not in record and "shot_memory" not in record
    assert answers.ANSWER_CHECK_FIELD in record
    stored = r.strlen(constants.answer_key(task_id))
    assert stored < raw_size / 4  # 2.7 MB of random 64-bit shots: ~0.5 MB
    assert 0 < r.ttl(constants.answer_key(task_id)) <= stores.tasks._ttl

    view = await stores.tasks.get(task_id)
    assert view.memory == memory and view.result == counts and view.packed is None
    (listed,) = await stores.tasks.get_many([task_id])
    assert listed.memory == memory

    packed = await stores.tasks.get(task_id, packed=True)
    assert packed.memory is None and packed.result is None and packed.packed is not None
    pieces = answers.spliced({"task_id": task_id, "memory": None}, packed.packed)
    body = b"".join(answers.gzip_parts(pieces))
    assert len(body) < raw_size / 4
    sent = json.loads(gzip.decompress(body))
    assert sent["memory"] == memory and sent["task_id"] == task_id and sent["evs"] is None
    streamed = json.loads(b"".join(answers.json_parts(pieces)))
    assert streamed == sent
    # Two answers and text between them, as a batch is sent: one gzip member still.
    twice = [b"[", *pieces, b",", *pieces, b"]"]
    assert json.loads(gzip.decompress(b"".join(answers.gzip_parts(twice)))) == [sent, sent]
    assert json.loads(b"".join(answers.json_parts(twice))) == [sent, sent]

    await stores.tasks.delete(task_id)
    assert not r.exists(constants.task_key(task_id), constants.answer_key(task_id))


async def test_a_small_answer_keeps_the_plain_fields(stores: Stores, rc: redis.Redis) -> None:
    task_id = await pending(stores)
    await stores.tasks.complete(task_id, Answer(counts={"00": 3, "11": 2}))
    r = rc
    assert r.hget(constants.task_key(task_id), "result") == '{"00": 3, "11": 2}'
    assert not r.exists(constants.answer_key(task_id))


# --- per-tenant storage quota --------------------------------------------------------------------


async def test_the_storage_quota_charges_settles_lapses_and_releases(
    stores: Stores, rc: redis.Redis
) -> None:
    quotas = stores.quotas
    r = rc
    total_key = constants.quota_bytes_key("alice")

    def total() -> int:
        return int(r.hget(total_key, "~total") or 0)

    await quotas.charge("alice", [Charge("a", 1000, 6000), Charge("b", 1000, 1000)], 10_000, 600)
    assert total() == 9000
    with pytest.raises(StorageQuotaExceeded) as over:
        await quotas.charge("alice", [Charge("c", 1000, 1000)], 10_000, 600)
    assert over.value.status_code == 429
    assert 1 <= over.value.retry_after <= 600  # when "a" lapses
    assert total() == 9000  # all or none
    assert 0 < r.ttl(total_key) <= 600 + 60 and r.ttl(constants.quota_key("alice")) > 0

    # A task that ends is charged what it stored, and lapses with its record's TTL.
    await quotas.settle("alice", "a", 200)
    assert total() == 3200
    assert r.zscore(constants.quota_key("alice"), "a") is not None
    await quotas.charge("alice", [Charge("c", 1000, 1000)], 10_000, 600)
    assert total() == 5200

    # A charge whose time is up is swept at the next charge.
    r.zadd(constants.quota_key("alice"), {"b": 1})
    await quotas.charge("alice", [Charge("d", 100, 100)], 10_000, 600)
    assert total() == 3400 and r.hget(total_key, "b") is None

    # A refused submit gives its charge back.
    await quotas.release("alice", ["c", "d", "never-charged"])
    assert total() == 1200
    # Other tenants are charged apart.
    await quotas.charge("bob", [Charge("e", 9000, 1000)], 10_000, 600)


async def test_a_submit_over_the_quota_is_a_429_and_records_nothing(
    settings: Settings, stores: Stores, bus: Bus, rc: redis.Redis
) -> None:
    tight = settings.model_copy(
        update={"redis": settings.redis.model_copy(update={"tenant_storage_mb": 1})}
    )
    body = {"quantum_circuit": random_outcomes(20, one_bit_registers=False), "shots": 10_000}
    first = await tasks.submit(body, tight, stores, bus, owner="carol")  # ~0.3 MB charged
    r = rc
    charged = int(r.hget(constants.quota_bytes_key("carol"), "~total") or 0)
    assert 10_000 * 20 < charged < MIB / 3
    await tasks.submit(body, tight, stores, bus, owner="carol")
    await tasks.submit(body, tight, stores, bus, owner="carol")
    before = set(r.scan_iter(constants.TASK_KEY_PREFIX + "*"))
    with pytest.raises(StorageQuotaExceeded):
        await tasks.submit(body, tight, stores, bus, owner="carol")
    assert set(r.scan_iter(constants.TASK_KEY_PREFIX + "*")) == before
    assert r.zscore(constants.inflight_key("carol"), first.task_id) is not None
    # A batch that could never fit is a 422 naming the quota.
    batch = {"tasks": [body] * 4}
    with pytest.raises(LimitExceeded, match="tenant_storage_mb"):
        await batches.submit_batch(batch, tight, stores, bus, owner="dave")
    assert r.hget(constants.quota_bytes_key("dave"), "~total") is None


# --- a full Redis --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def full_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[redis.Redis]:
    """A redis-server of this module's own (the session's must not fill up), and a
    plain client of it."""
    port = free_port()
    server = Server("redis", port, tmp_path_factory.mktemp("full-redis"))
    server.start()
    client = redis.Redis(port=port)
    try:
        yield client
    finally:
        client.close()
        server.stop()


def fill(r: redis.Redis) -> None:
    """Full for good: junk up to a maxmemory 2 MB above what it held, then maxmemory
    lowered 1 MB under what it holds (right at the limit, a command's own buffers and
    Lua's garbage move the balance by kilobytes either way)."""
    r.config_set("maxmemory", int(r.info("memory")["used_memory"]) + 2 * MIB)
    for n in range(100):
        try:
            r.set(f"junk:{n}", b"x" * 256 * 1024)
        except redis.exceptions.OutOfMemoryError:
            break
    r.config_set("maxmemory", int(r.info("memory")["used_memory"]) - MIB)


@pytest.fixture
async def full_stores(full_redis: redis.Redis) -> AsyncIterator[Stores]:
    full_redis.flushall()
    full_redis.config_set("maxmemory", 0)
    port = full_redis.connection_pool.connection_kwargs["port"]
    stores = Stores.open(f"redis://127.0.0.1:{port}", result_ttl_seconds=3600, socket_timeout=2.0)
    try:
        yield stores
    finally:
        await stores.close()


def test_the_embedded_redis_refuses_writes_when_full_and_evicts_nothing(
    full_redis: redis.Redis,
) -> None:
    r = full_redis
    assert r.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
    assert int(r.config_get("maxmemory")["maxmemory"]) == Settings().redis.max_memory_mb * MIB


async def test_a_full_redis_refuses_a_new_task_with_a_503_and_records_nothing(
    full_stores: Stores, full_redis: redis.Redis
) -> None:
    r = full_redis
    fill(r)
    task_id = str(uuid.uuid4())
    with pytest.raises(StoreFull) as refused:
        await full_stores.tasks.create(task_id, BELL, 100)
    assert refused.value.status_code == 503 and refused.value.retry_after
    assert "store is full" in refused.value.message
    assert not r.exists(constants.task_key(task_id))


async def test_a_result_a_full_redis_refuses_fails_the_task_with_the_reason(
    full_stores: Stores, full_redis: redis.Redis, settings: Settings
) -> None:
    task_id = await pending(full_stores, owner="erin")
    fill(full_redis)
    result = SimResult(
        counts={"0": 20_000},
        memory=shot_memory(20_000, 32),
        qubits=1,
        depth=1,
        method="x",
        execution_seconds=0.1,
    )
    worker = Worker(settings, full_stores, Bus(settings, name="unused"), None, "w")  # type: ignore[arg-type]
    msg = AckedMessage()
    ctx = TaskContext(
        msg,  # type: ignore[arg-type]
        task_id,
        "w",
        state_bytes=0,
        max_attempts=3,
        owner="erin",
        attempt=1,
    )
    await worker.settle(ctx, Completed(result, 0.5))
    view = await full_stores.tasks.get(task_id)
    assert view.status is TaskStatus.FAILED
    assert view.error is not None and "store is full" in view.error
    assert msg.acked and not msg.naked  # settled for good, not retried
    assert FailureReason.STORE_FULL.value == "store_full"


class AckedMessage:
    """The two calls `Worker.settle` makes on a JetStream message."""

    def __init__(self) -> None:
        self.acked = False
        self.naked = False

    async def ack_sync(self, timeout: float) -> None:
        self.acked = True

    async def nak(self, delay: float | None = None) -> None:
        self.naked = True


# --- a full task stream --------------------------------------------------------------------------


async def test_a_full_task_stream_refuses_the_submit_with_a_503_and_records_nothing(
    settings: Settings, stores: Stores, clean: None, rc: redis.Redis
) -> None:
    small = settings.model_copy(
        update={"nats": settings.nats.model_copy(update={"stream_max_msgs": 2})}
    )
    bus = Bus(small, name="test-full")
    try:
        for _ in range(2):
            await tasks.submit({"quantum_circuit": BELL, "shots": 10}, small, stores, bus)
        r = rc
        before = set(r.scan_iter(constants.TASK_KEY_PREFIX + "*"))
        with pytest.raises(DependencyUnavailable) as refused:
            await tasks.submit({"quantum_circuit": BELL, "shots": 10}, small, stores, bus)
        assert refused.value.retry_after == QUEUE_FULL_RETRY_AFTER_SECONDS
        assert "task queue is full" in refused.value.message
        assert set(r.scan_iter(constants.TASK_KEY_PREFIX + "*")) == before
        info = await (await bus.connect()).stream_info(constants.STREAM_NAME)
        assert info.state.messages == 2
        assert info.config.max_msg_size == small.nats.stream_max_msg_size
    finally:
        await bus.close()


def test_the_embedded_jetstream_store_is_bounded(servers: Servers) -> None:
    conf = Path(servers.nats.argv[servers.nats.argv.index("--config") + 1]).read_text()
    assert f"max_file_store: {2 * Settings().nats.stream_max_bytes}" in conf
