"""Scenario 7: duplicate submissions.

* The same ``Idempotency-Key`` and body, sent again and again (one after another and
  all at once), get one task id; replays say ``Idempotent-Replayed: true``; the same
  key with another body is a 422; the circuit runs once.
* The same, while nats-server is paused (SIGSTOP: a hung server, the first request's
  publish times out): no duplicate may be told 201 for a task that the first request
  then withdraws; every 201 must complete.
* A publish retried after a timeout is stored once: JetStream deduplicates it by its
  ``Nats-Msg-Id`` (the task id), and the task runs once.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter

import httpx
from nats.js.api import StreamInfo

from qmill.server import constants
from qmill.server.bus import Bus
from qmill.server.errors import DependencyUnavailable
from qmill.server.store import Stores
from tests.faults.harness import (
    Checker,
    Cluster,
    LoadStats,
    bell,
    executions,
    pattern,
    post_task,
    scaled,
)


async def stream(bus: Bus) -> StreamInfo:
    js = await bus.connect()
    return await js.stream_info(constants.STREAM_NAME)


async def test_duplicates(cluster: Cluster) -> None:
    keys = scaled(5, 20)
    copies = scaled(8, 16)
    await cluster.start(workers=2)
    stats = LoadStats()
    paused_ids: set[str] = set()
    async with (
        httpx.AsyncClient(base_url=cluster.url, timeout=15) as client,
        Checker(cluster.scenario, cluster.redis_url) as checker,
    ):
        # 1. Replays, one after another and all at once.
        replay_ids: dict[str, set[str]] = {}
        for k in range(keys):
            key = f"key-{k}-{uuid.uuid4()}"
            circuit = pattern(4 + k % 10, tag=k, rounds=1)
            headers = {constants.IDEMPOTENCY_HEADER: key}
            first = await post_task(client, circuit, checker, stats, headers)
            assert first.status == 201 and first.replayed is False
            again = [await post_task(client, circuit, checker, stats, headers) for _ in range(2)]
            burst = await asyncio.gather(
                *(post_task(client, circuit, checker, stats, headers) for _ in range(copies))
            )
            replies = [*again, *burst]
            assert all(s.status == 201 and s.replayed for s in replies), replies
            replay_ids[key] = {s.task_id for s in [first, *replies] if s.task_id}
            other = await client.post(
                "/tasks", json={**circuit.body(), "shots": circuit.shots + 1}, headers=headers
            )
            assert other.status_code == 422, other.text
        assert all(len(ids) == 1 for ids in replay_ids.values()), replay_ids
        # Copies racing the first request: one creates the task, the others are told it
        # is in progress (409) or, once it was accepted, get it (replayed).
        headers = {constants.IDEMPOTENCY_HEADER: f"race-{uuid.uuid4()}"}
        race = await asyncio.gather(
            *(post_task(client, bell(), checker, stats, headers) for _ in range(copies))
        )
        assert {s.status for s in race} <= {201, 409}, race
        assert sum(1 for s in race if s.status == 201 and not s.replayed) == 1, race
        assert all(s.retry_after for s in race if s.status == 409)
        raced = {s.task_id for s in race if s.task_id}
        again = await post_task(client, bell(), checker, stats, headers)
        assert again.replayed and {again.task_id} == raced

        # 2. The same while nats-server hangs: the first request's publish times out
        # (each round costs its [nats] publish_timeout_seconds, 1.5 s).
        for k in range(scaled(1, 5)):
            headers = {constants.IDEMPOTENCY_HEADER: f"paused-{k}-{uuid.uuid4()}"}
            circuit = bell()
            cluster.pause(cluster.nats)
            try:
                burst = await asyncio.gather(
                    *(post_task(client, circuit, checker, stats, headers) for _ in range(copies))
                )
            finally:
                cluster.nats.resume()
            paused_ids |= {s.task_id for s in burst if s.task_id}
            # The client retries once the queue answers again: now it is accepted.
            for _ in range(100):
                retry = await post_task(client, circuit, checker, stats, headers)
                if retry.status == 201:
                    break
                await asyncio.sleep(0.2)
            assert retry.status == 201
            paused_ids.add(str(retry.task_id))

        # 3. A publish retried after a timeout is stored once. This client's publishes
        # time out sooner than the functions' (only this one publishes to a paused
        # server, and how long it waited makes no difference to what it sent).
        nats = cluster.settings.nats.model_copy(update={"publish_timeout_seconds": 0.5})
        settings = cluster.settings.model_copy(update={"nats": nats})
        bus = Bus(settings, name="faults-dedup")
        stores = Stores.open(cluster.redis_url, result_ttl_seconds=3600, socket_timeout=2)
        dedup_ids = []
        try:
            for _ in range(scaled(2, 5)):
                task_id = str(uuid.uuid4())
                circuit = bell()
                await stores.tasks.create(task_id, circuit.source, circuit.shots, qubits=2, depth=2)
                before = (await stream(bus)).state.last_seq
                cluster.pause(cluster.nats)
                try:
                    began = time.monotonic()
                    try:
                        await bus.publish(task_id)
                        timed_out = False
                    except DependencyUnavailable:
                        timed_out = True
                    assert timed_out, "the publish to a paused server did not time out"
                    assert time.monotonic() - began < nats.publish_timeout_seconds + 1
                finally:
                    cluster.nats.resume()
                await bus.publish(task_id)  # the retry: JetStream already has it
                after = (await stream(bus)).state.last_seq
                assert after - before == 1, f"{after - before} messages stored for one task"
                checker.accept(task_id, circuit)
                dedup_ids.append(task_id)
        finally:
            await bus.close()
            await stores.close()
        report = await checker.verify(client)
    left = cluster.shutdown()
    started = executions(cluster.events())
    runs = Counter({task_id: len(started.get(task_id, [])) for task_id in checker.accepted})
    codes = stats.codes()
    report.publish(
        keys=keys,
        posts=len(stats.samples),
        replayed=sum(1 for s in stats.samples if s.replayed),
        in_progress_409=codes[409],
        refused_503=codes[503],
        dedup_publishes=len(dedup_ids),
        max_runs=max(runs.values()),
        leaked=len(left),
    )
    report.assert_ok()
    assert report.completed == report.accepted
    assert report.accepted == keys + 1 + len(paused_ids) + len(dedup_ids)
    assert runs == Counter(dict.fromkeys(checker.accepted, 1)), runs.most_common(3)
    assert all(v["attempts"] == 1 for v in report.views.values())
    assert not stats.server_errors(), stats.server_errors()[:3]
