"""Change events against a real redis-server: versions, channels, and the event stream's
snapshot-then-live handover (`qmill.server.store.events`, `qmill.server.events`)."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
import redis.asyncio as aioredis

from qmill.server import constants
from qmill.server.config import ServerSettings, Settings
from qmill.server.events import changes
from qmill.server.models import TaskStatus
from qmill.server.store import Answer, Stores
from qmill.server.store import events as store_events
from qmill.server.store.new_tasks import NewTask
from tests.conftest import BELL

SETTINGS = ServerSettings(event_heartbeat_seconds=30, max_event_stream_seconds=30)


async def _seq(stores: Stores, task_id: str) -> int:
    return int(await stores.client.redis.hget(constants.task_key(task_id), "seq") or 0)


def _frames(raw: bytes) -> list[dict[str, str]]:
    """SSE frames as {field: value} ("comment" for a ':' line)."""
    out = []
    for block in raw.decode().split("\n\n"):
        if not block:
            continue
        frame: dict[str, str] = {}
        for line in block.split("\n"):
            name, _, value = line.partition(":")
            frame[name or "comment"] = value.strip()
        out.append(frame)
    return out


async def test_every_transition_gets_a_greater_seq_and_is_published(
    stores: Stores, settings: Settings
) -> None:
    batch_id = str(uuid.uuid4())
    ids = [str(uuid.uuid4()) for _ in range(2)]
    listener = aioredis.Redis.from_url(settings.redis.url, decode_responses=True)
    pubsub = listener.pubsub()
    await pubsub.subscribe(
        constants.task_events_channel(ids[0]), constants.batch_events_channel(batch_id)
    )
    for _ in range(2):  # confirmed: a publish after this is heard
        assert (await pubsub.get_message(timeout=2) or {}).get("type") == "subscribe"
    await stores.tasks.create_many([NewTask(i, BELL, 10) for i in ids], batch_id=batch_id)
    created = [await _seq(stores, i) for i in ids]
    assert 0 < created[0] < created[1]
    await stores.tasks.start(ids[0], "w1")
    started = await _seq(stores, ids[0])
    await stores.tasks.complete(ids[0], Answer(counts={"00": 10}))
    finished = await _seq(stores, ids[0])
    assert created[1] < started < finished

    heard: list[tuple[str, str]] = []
    while len(heard) < 4:
        message = await pubsub.get_message(timeout=2)
        assert message is not None and message["type"] == "message", heard
        heard.append((message["channel"], message["data"]))
    for status, seq in (("processing", started), ("completed", finished)):
        data = f"{seq} {status} {ids[0]} {batch_id}"
        assert (constants.task_events_channel(ids[0]), data) in heard
        assert (constants.batch_events_channel(batch_id), data) in heard
    await pubsub.aclose()
    await listener.aclose()


async def test_a_record_without_seq_reads_as_zero(stores: Stores) -> None:
    """A record of the previous version (no seq) still moves, and a snapshot reads 0."""
    task_id = str(uuid.uuid4())
    await stores.tasks.create(task_id, BELL, 10)
    await stores.client.redis.hdel(constants.task_key(task_id), "seq")
    (state,) = await stores.events.snapshot([task_id])
    assert (state.status, state.seq) == (TaskStatus.PENDING, 0)
    assert (await stores.tasks.start(task_id, "w1")).task is not None
    assert await _seq(stores, task_id) > 0


async def test_a_change_between_subscribe_and_snapshot_is_sent_once(stores: Stores) -> None:
    task_id = str(uuid.uuid4())
    await stores.tasks.create(task_id, BELL, 10)
    async with stores.events.subscribe([task_id]) as sub:
        await stores.tasks.start(task_id, "w1")  # after subscribe, before the snapshot
        states = await stores.events.snapshot([task_id])
        assert states[0].status is TaskStatus.PROCESSING
        out = bytearray()

        async def read() -> None:
            async for chunk in changes(stores, sub, states, 0, SETTINGS):
                out.extend(chunk)

        reader = asyncio.create_task(read())
        await asyncio.sleep(0.3)  # the live copy of "processing" heard, and dropped
        assert b"processing" in out and sub.queue.empty()
        await stores.tasks.complete(task_id, Answer(counts={"00": 10}))
        await asyncio.wait_for(reader, 5)
    frames = _frames(bytes(out))
    assert frames[0] == {"retry": "2000"}
    statuses = [json.loads(f["data"])["status"] for f in frames if f.get("event") == "status"]
    assert statuses == ["processing", "completed"]  # processing once, though heard live too
    result = next(f for f in frames if f.get("event") == "result")
    assert json.loads(result["data"])["result"] == {"00": 10}
    assert result["id"] == str(await _seq(stores, task_id))
    assert frames[-1]["event"] == "end"


async def test_resume_sends_only_newer_tasks_in_seq_order(stores: Stores) -> None:
    batch_id = str(uuid.uuid4())
    ids = [str(uuid.uuid4()) for _ in range(3)]
    await stores.tasks.create_many([NewTask(i, BELL, 10) for i in ids], batch_id=batch_id)
    await stores.tasks.fail(ids[2], "boom")
    seen = await _seq(stores, ids[2])
    await stores.tasks.cancel(ids[1])
    await stores.tasks.cancel(ids[0])
    task_ids = await stores.events.batch_tasks(batch_id)
    async with stores.events.subscribe(task_ids) as sub:
        states = await stores.events.snapshot(task_ids)
        out = b"".join([chunk async for chunk in changes(stores, sub, states, seen, SETTINGS)])
    frames = [f for f in _frames(out) if f.get("event") == "status"]
    assert [json.loads(f["data"])["task_id"] for f in frames] == [ids[1], ids[0]]
    ids_sent = [int(f["id"]) for f in _frames(out) if "id" in f]
    assert ids_sent == sorted(ids_sent) and min(ids_sent) > seen


async def test_a_stream_that_is_not_read_is_ended_not_grown(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_events, "QUEUE_CAPACITY", 8)
    task_id = str(uuid.uuid4())
    await stores.tasks.create(task_id, BELL, 10)
    async with stores.events.subscribe([task_id]) as sub:
        for _ in range(store_events.QUEUE_CAPACITY + 5):
            await stores.tasks.start(task_id, "w")  # a redelivery loop: many changes
        await asyncio.sleep(0.2)
        assert sub.queue.qsize() == store_events.QUEUE_CAPACITY + 1
        assert sub.ended
