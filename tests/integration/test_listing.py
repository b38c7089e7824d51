"""The listing indexes against a real redis-server: order, paging, filters, tenants,
expiry and undo (issue 14, listing). Records are written by the submit's own script
(`TaskStore.create_many`); no NATS is needed to list them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import timedelta

import pytest
import redis.asyncio as aioredis

from qmill.server import batches, constants
from qmill.server.bus import Bus
from qmill.server.config import Settings
from qmill.server.models import TaskStatus
from qmill.server.store import Stores
from qmill.server.store import listing as index
from qmill.server.store.listing import Query
from qmill.server.store.new_tasks import NewTask
from tests.conftest import BELL

ALICE, BOB = "a1a1a1a1a1a1a1a1", "b2b2b2b2b2b2b2b2"


@pytest.fixture
async def raw(settings: Settings, stores: Stores) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(settings.redis.url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


async def submit(
    stores: Stores,
    n: int = 1,
    owner: str | None = None,
    tags: Mapping[str, str] | None = None,
    batch: bool = False,
) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(n)]
    records = [NewTask(i, BELL, 10, qubits=2, owner=owner, tags=tags) for i in ids]
    await stores.tasks.create_many(records, str(uuid.uuid4()) if batch else None)
    return ids


async def listed(stores: Stores, owner: str | None = None, **query: object) -> list[str]:
    """Every task id the query lists, following the cursors."""
    found: list[str] = []
    cursor = query.pop("cursor", None)
    for _ in range(100):
        asked = Query(**{"limit": 20, **query, "cursor": cursor})  # type: ignore[arg-type]
        page = await stores.listing.page(owner, asked)
        found += [t.task_id for t in page.tasks]
        if page.next_cursor is None:
            return found
        cursor = page.next_cursor
    raise AssertionError("the cursors never ended")


async def test_newest_first_and_a_batch_in_submission_order(stores: Stores) -> None:
    first = await submit(stores)
    batch = await submit(stores, 3, batch=True)
    last = await submit(stores)
    assert await listed(stores) == last + batch + first
    page = await stores.listing.page(None, Query(limit=2))
    assert [t.task_id for t in page.tasks] == last + batch[:1]
    assert page.tasks[0].status is TaskStatus.PENDING and page.tasks[0].shots == 10


async def test_paging_has_no_duplicates_or_gaps_while_tasks_arrive(stores: Stores) -> None:
    older = await submit(stores, 25)
    seen: list[str] = []
    page = await stores.listing.page(None, Query(limit=10))
    seen += [t.task_id for t in page.tasks]
    newer = await submit(stores, 5)  # newer than the cursor: they belong to no later page
    while page.next_cursor is not None:
        page = await stores.listing.page(None, Query(limit=10, cursor=page.next_cursor))
        seen += [t.task_id for t in page.tasks]
    assert seen == older  # one submit: in submission order
    assert (await listed(stores))[:5] == newer


async def test_since_tags_and_status_filter(stores: Stores) -> None:
    await submit(stores, 2, tags={"project": "a"})
    since = (await stores.tasks.get((await submit(stores))[0])).created_at
    both = await submit(stores, tags={"project": "a", "run": "7"})
    other = await submit(stores, tags={"project": "b", "run": "7"})
    assert len(await listed(stores)) == 5
    assert len(await listed(stores, since=since)) == 3
    assert await listed(stores, since=since + timedelta(hours=1)) == []
    assert len(await listed(stores, tags=(("project", "a"),))) == 3
    assert await listed(stores, tags=(("project", "a"), ("run", "7"))) == both
    assert await listed(stores, tags=(("run", "7"), ("project", "b"))) == other
    assert await listed(stores, tags=(("project", "c"),)) == []
    await stores.tasks.cancel(other[0])
    assert await listed(stores, statuses=frozenset({TaskStatus.CANCELLED})) == other
    summary = (await stores.listing.page(None, Query(limit=1))).tasks[0]
    assert summary.tags == {"project": "b", "run": "7"}
    assert summary.error == "cancelled by request"


async def test_a_page_examines_a_bounded_number_of_entries(stores: Stores) -> None:
    """A filter that matches nothing reads at most `scan` entries a page: an empty page
    with a cursor, and the cursors end."""
    await submit(stores, 30)
    query = Query(limit=5, statuses=frozenset({TaskStatus.FAILED}))
    page = await stores.listing.page(None, query, scan=10)
    assert page.tasks == [] and page.next_cursor is not None
    pages = 1
    while page.next_cursor is not None:
        page = await stores.listing.page(
            None, Query(limit=5, statuses=query.statuses, cursor=page.next_cursor), scan=10
        )
        pages += 1
    assert pages in (3, 4)


async def test_tenants_see_only_their_own_tasks_and_batches(stores: Stores) -> None:
    mine = await submit(stores, 2, owner=ALICE, tags={"k": "v"}, batch=True)
    theirs = await submit(stores, 1, owner=BOB, tags={"k": "v"})
    assert await listed(stores, ALICE) == mine
    assert await listed(stores, BOB, tags=(("k", "v"),)) == theirs
    assert await listed(stores, None) == []
    batch_id = (await stores.tasks.get(mine[0])).batch_id
    assert await listed(stores, ALICE, batch_id=batch_id) == mine
    assert await listed(stores, BOB, batch_id=batch_id) == []
    assert await listed(stores, ALICE, batch_id=str(uuid.uuid4())) == []
    # A cursor positions only within the caller's own index: Alice's newest task's
    # position shows Bob his own tasks older than it, none of hers.
    cursor = (await stores.listing.page(ALICE, Query(limit=1))).next_cursor
    assert cursor is not None
    assert await listed(stores, BOB, cursor=cursor) == []
    assert await listed(stores, ALICE, cursor=cursor) == mine[1:]


async def test_a_batch_pages_in_submission_order_with_filters(stores: Stores) -> None:
    await submit(stores)
    ids = await submit(stores, 5, tags={"k": "v"}, batch=True)
    await submit(stores)
    batch_id = (await stores.tasks.get(ids[0])).batch_id
    assert await listed(stores, batch_id=batch_id, limit=2) == ids
    await stores.tasks.cancel(ids[3])
    cancelled = frozenset({TaskStatus.CANCELLED})
    assert await listed(stores, batch_id=batch_id, statuses=cancelled) == ids[3:4]
    assert await listed(stores, batch_id=batch_id, tags=(("k", "v"),), limit=3) == ids
    assert await listed(stores, batch_id=batch_id, tags=(("k", "w"),)) == []


async def test_a_batchs_tags_reach_its_tasks_a_tasks_own_win(
    settings: Settings, stores: Stores, bus: Bus
) -> None:
    own = {"quantum_circuit": BELL, "shots": 10, "tags": {"run": "mine"}}
    body = {"tasks": [own, {"quantum_circuit": BELL, "shots": 10}], "tags": {"run": "b", "p": "x"}}
    batch = await batches.submit_batch(body, settings, stores, bus)
    assert await listed(stores, tags=(("p", "x"),)) == batch.task_ids
    assert await listed(stores, tags=(("run", "mine"),)) == batch.task_ids[:1]
    assert await listed(stores, tags=(("p", "x"), ("run", "b"))) == batch.task_ids[1:]


async def test_a_gone_record_is_not_listed_and_its_entry_goes(
    stores: Stores, raw: aioredis.Redis
) -> None:
    kept, gone = await submit(stores, 2, tags={"k": "v"})
    await raw.delete(constants.task_key(gone))  # as if it had expired
    assert await listed(stores) == [kept]
    members = await raw.zrange(constants.listing_key(constants.ANONYMOUS_TENANT), 0, -1)
    assert [m[index.PREFIX_CHARS :] for m in members] == [kept]
    assert await listed(stores, tags=(("k", "v"),)) == [kept]


async def test_writes_trim_old_entries_and_bound_the_index_ttl(
    stores: Stores, raw: aioredis.Redis, settings: Settings
) -> None:
    key = constants.listing_key(constants.ANONYMOUS_TENANT)
    ancient = "0" * index.PREFIX_CHARS + str(uuid.uuid4())
    await raw.zadd(key, {ancient: 0})
    (task_id,) = await submit(stores, tags={"k": "v"})
    members = await raw.zrange(key, 0, -1)
    assert [m[index.PREFIX_CHARS :] for m in members] == [task_id]
    bound = index.horizon(settings.redis.result_ttl_seconds)
    tag_key = constants.listing_tag_key(constants.ANONYMOUS_TENANT, "x")
    names = [key, *[k async for k in raw.scan_iter(tag_key[:-1] + "*")]]
    assert len(names) == 2
    for name in names:
        assert bound - 60 < await raw.ttl(name) <= bound


async def test_the_undo_leaves_no_index_entry(stores: Stores, raw: aioredis.Redis) -> None:
    kept = await submit(stores, owner=ALICE, tags={"k": "v"})
    ids = [str(uuid.uuid4()) for _ in range(3)]
    tags = [{"k": "v"}, {"k": "w", "x": "y"}, None]
    records = [NewTask(i, BELL, 10, owner=ALICE, tags=t) for i, t in zip(ids, tags, strict=True)]
    batch_id = str(uuid.uuid4())
    await stores.tasks.create_many(records, batch_id)
    assert len(await listed(stores, ALICE)) == 4
    await stores.tasks.delete_many(ids, batch_id, ALICE, tags)
    assert await listed(stores, ALICE) == kept
    names = [k async for k in raw.scan_iter(constants.LISTING_TAG_KEY_PREFIX + "*")]
    assert len(names) == 1  # the emptied tag indexes are gone; k:v still lists `kept`
    assert await raw.zcard(constants.listing_key(ALICE)) == 1
    assert not await raw.exists(constants.batch_key(batch_id), *map(constants.task_key, ids))
