"""Batches and submits on real Redis and NATS: 201 up to max_batch_tasks, and a refusal at
any step (a Redis error mid-write, NATS stalled mid-batch, the in-flight cap, a rate
limit) leaves nothing behind: no record, no batch list, no in-flight entry, no claimed
Idempotency-Key (issue 13, items 2, 8 and 9)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from qmill.server import batches, constants, tasks
from qmill.server.bus import Bus, Lane
from qmill.server.config import Settings
from qmill.server.errors import DependencyUnavailable, RateLimited
from qmill.server.models import TaskStatus
from qmill.server.store import Stores
from tests.conftest import BELL, Servers

TENANT = "tenant-a"


def batch(n: int) -> dict[str, object]:
    return {"tasks": [{"quantum_circuit": BELL, "shots": 10} for _ in range(n)]}


@pytest.fixture
async def raw(settings: Settings, stores: Stores) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(settings.redis.url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


async def damage(raw: aioredis.Redis) -> dict[str, int]:
    """What a refused submit must not leave: records, batch lists, claimed keys, in-flight."""
    found = {}
    for name, prefix in (
        ("records", constants.TASK_KEY_PREFIX),
        ("batches", constants.BATCH_KEY_PREFIX),
        ("idempotency", constants.IDEMPOTENCY_PREFIX),
    ):
        found[name] = len([k async for k in raw.scan_iter(match=prefix + "*", count=1000)])
    # Entries in the listing indexes (every task is in its tenant's).
    found["listing"] = int(await raw.zcard(constants.listing_key(TENANT))) + int(
        await raw.zcard(constants.listing_key(constants.ANONYMOUS_TENANT))
    )
    found["in_flight"] = int(await raw.zcard(constants.inflight_key(TENANT)))
    return found


NOTHING = {"records": 0, "batches": 0, "idempotency": 0, "listing": 0, "in_flight": 0}


async def queued(bus: Bus) -> dict[Lane, int]:
    js = await bus.connect()
    await bus.ensure_consumer()
    counts = {}
    for lane in Lane:
        info = await js.consumer_info(constants.STREAM_NAME, lane.consumer)
        counts[lane] = int(info.num_pending or 0)
    return counts


async def test_a_1000_task_batch_is_accepted_and_split_into_lanes(
    settings: Settings, stores: Stores, bus: Bus, raw: aioredis.Redis
) -> None:
    """Was: 503 'Too many connections' past ~100 tasks. Now one script writes every record
    and the batch list; the tenant's first tenant_priority_tasks go to the normal lane."""
    started = time.monotonic()
    accepted = await batches.submit_batch(batch(1000), settings, stores, bus, owner=TENANT)
    assert time.monotonic() - started < 30  # generous: ~1-2 s here
    assert len(accepted.task_ids) == 1000
    views = await stores.batches.get(accepted.batch_id)
    assert [v.id for v in views] == accepted.task_ids
    assert {v.status for v in views} == {TaskStatus.PENDING}
    assert await raw.zcard(constants.inflight_key(TENANT)) == 1000
    # Confirmed: the records live as long as results, not the provisional few minutes.
    assert await raw.ttl(constants.task_key(accepted.task_ids[-1])) > 3600
    priority = settings.nats.tenant_priority_tasks
    assert await queued(bus) == {Lane.NORMAL: priority, Lane.BULK: 1000 - priority}


async def test_auth_off_queues_everything_on_the_normal_lane(
    settings: Settings, stores: Stores, bus: Bus
) -> None:
    await batches.submit_batch(batch(50), settings, stores, bus, owner=None)
    assert await queued(bus) == {Lane.NORMAL: 50, Lane.BULK: 0}


async def test_nats_stalled_mid_batch_leaves_nothing(
    settings: Settings,
    stores: Stores,
    bus: Bus,
    raw: aioredis.Redis,
    servers: Servers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """NATS paused at the 100th publish: the batch answers 503 within a publish timeout or
    so (the unsent publishes are not attempted), and every record and entry is undone."""
    publish: Callable[..., Awaitable[None]] = bus.publish
    calls = 0

    async def stall_at_100th(*args: object) -> None:
        nonlocal calls
        calls += 1
        if calls == 100:
            servers.nats.pause()
        await publish(*args)

    monkeypatch.setattr(bus, "publish", stall_at_100th)
    started = time.monotonic()
    try:
        with pytest.raises(DependencyUnavailable):
            await batches.submit_batch(batch(1000), settings, stores, bus, owner=TENANT)
    finally:
        servers.nats.resume()
    assert time.monotonic() - started < 15  # 32 publish timeouts at once, not 900 in turn
    assert calls < 1000
    assert await damage(raw) == NOTHING


async def test_a_redis_error_mid_write_leaves_nothing(
    settings: Settings, stores: Stores, bus: Bus, raw: aioredis.Redis
) -> None:
    """Redis refuses writes (out of memory) as the batch is written: 503, nothing kept."""
    used = int((await raw.info("memory"))["used_memory"])
    await raw.config_set("maxmemory", str(used // 2))
    try:
        with pytest.raises(DependencyUnavailable):
            await batches.submit_batch(batch(300), settings, stores, bus, owner=None)
    finally:
        await raw.config_set("maxmemory", "0")
    assert await damage(raw) == NOTHING


async def test_a_full_in_flight_cap_refuses_the_whole_batch_and_holds_nothing(
    settings: Settings, stores: Stores, bus: Bus, raw: aioredis.Redis
) -> None:
    capped = settings.model_copy(
        update={"auth": settings.auth.model_copy(update={"max_in_flight": 10})}
    )
    first = await batches.submit_batch(batch(6), capped, stores, bus, owner=TENANT)
    with pytest.raises(RateLimited):
        await batches.submit_batch(batch(5), capped, stores, bus, owner=TENANT)
    left = await damage(raw)
    assert left == {"records": 6, "batches": 1, "idempotency": 0, "listing": 6, "in_flight": 6}
    # The refused batch held nothing: 4 more still fit.
    await batches.submit_batch(batch(4), capped, stores, bus, owner=TENANT)
    assert len(first.task_ids) == 6


async def test_a_refused_submit_releases_its_idempotency_key(
    settings: Settings, stores: Stores, bus: Bus, raw: aioredis.Redis
) -> None:
    """Was: after a 429 for the in-flight cap the key stayed claimed 30 s (retry: 409)."""
    capped = settings.model_copy(
        update={"auth": settings.auth.model_copy(update={"max_in_flight": 1})}
    )
    body = {"quantum_circuit": BELL, "shots": 10}
    held = await tasks.submit(body, capped, stores, bus, owner=TENANT)
    with pytest.raises(RateLimited):
        await tasks.submit(body, capped, stores, bus, idempotency_key="k1", owner=TENANT)
    left = await damage(raw)
    assert left == {"records": 1, "batches": 0, "idempotency": 0, "listing": 1, "in_flight": 1}
    await stores.tasks.cancel(held.task_id, TENANT)  # capacity frees: the retry is accepted
    retried = await tasks.submit(body, capped, stores, bus, idempotency_key="k1", owner=TENANT)
    assert not retried.replayed
    replay = await tasks.submit(body, capped, stores, bus, idempotency_key="k1", owner=TENANT)
    assert replay.replayed and replay.task_id == retried.task_id


async def test_a_batch_costs_one_token_per_task(
    settings: Settings, stores: Stores, bus: Bus
) -> None:
    """Was: one token whatever the size. A 100-task batch at 10 tokens/s leaves the tenant
    ~10 s of debt (burst 20): its next request is refused until it is repaid."""
    slow = settings.model_copy(
        update={"auth": settings.auth.model_copy(update={"rate_per_second": 10.0, "burst": 20})}
    )
    auth = slow.auth
    await stores.limits.take_tokens(TENANT, auth.rate_per_second, auth.burst, 1)  # the request
    await batches.submit_batch(batch(100), slow, stores, bus, owner=TENANT)
    with pytest.raises(RateLimited) as refused:
        await stores.limits.take_tokens(TENANT, auth.rate_per_second, auth.burst, 1)
    assert refused.value.retry_after >= 8
