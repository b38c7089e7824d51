"""Admit, record and queue accepted tasks: all of them or nothing, whatever fails.

What a submit takes in Redis and NATS (in-flight entries, task records, a batch list,
an Idempotency-Key claim, published ids) is either all kept (201) or all given back:
a refusal at any step, a Redis error mid-write, a failed publish, or a caller that goes
away mid-way, leaves no `pending` record that was never queued, no in-flight entry
that holds the tenant's cap, no batch and no claimed key.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Coroutine, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from qmill.server.bus import Bus, Lane
from qmill.server.config import Settings
from qmill.server.errors import DependencyUnavailable
from qmill.server.store import Charge, Stores, listing
from qmill.server.store.new_tasks import NewTask
from qmill.server.store.quotas import RECORD_OVERHEAD_BYTES

if TYPE_CHECKING:
    from qmill.server.tasks import Accepted

log = logging.getLogger(__name__)

# Ids a batch publishes at once. Each publish's timeout runs from when it is sent: a
# 1000-task batch sent all at once timed out its last publishes on a busy machine,
# waiting behind the first ones. (Its records are one script: `TaskStore.create_many`.)
BATCH_CONCURRENCY = 32
# How long a submit's records live before it confirms them (after its last publish):
# far longer than a 1000-task batch takes to publish (~1 s; each publish is bounded by
# [nats] publish_timeout_seconds), short enough that the records of a submit that died
# or could not undo itself (Redis unreachable) vanish within minutes, not after the
# 7-day result TTL; their in-flight entries go with them (`Limits.admit`).
PROVISIONAL_TTL_SECONDS = 300

T = TypeVar("T")


async def shielded(work: Coroutine[object, object, T]) -> T:
    """Run ``work`` to its end even if the caller is cancelled (a client that hangs up):
    it then either commits or undoes itself, never stops half-way."""
    return await asyncio.shield(asyncio.ensure_future(work))


@dataclass(frozen=True, slots=True)
class _Taken:
    """What `record_and_queue` has taken so far, so that a refusal can give it all back."""

    task_ids: list[str]
    owner: str | None
    batch_id: str | None
    # Each task's tags: which of the owner's listing indexes it went into.
    task_tags: tuple[Mapping[str, str], ...] = ()

    async def undo(self, stores: Stores) -> None:
        """Remove the records (batch list, index entries) and free the in-flight entries,
        each in one round trip; idempotent, so it is safe whatever was written before
        the failure."""
        first = self.task_ids[0] if self.task_ids else ""
        records = stores.tasks.delete_many(self.task_ids, self.batch_id, self.owner, self.task_tags)
        await forget(records, first)
        if self.owner is not None:
            await forget(stores.limits.withdraw(self.owner, self.task_ids), first)


def lanes(settings: Settings, in_flight_before: int, count: int) -> list[Lane]:
    """The normal lane for a tenant's first ``tenant_priority_tasks`` unfinished tasks,
    the bulk lane for the rest (in submission order)."""
    priority = max(0, settings.nats.tenant_priority_tasks - in_flight_before)
    return [Lane.NORMAL if i < priority else Lane.BULK for i in range(count)]


async def record_and_queue(
    accepted: list[Accepted],
    settings: Settings,
    stores: Stores,
    bus: Bus,
    owner: str | None,
    task_ids: list[str] | None = None,
    batch_id: str | None = None,
) -> list[str]:
    """Record the tasks `pending`, count them in flight, publish them; all or nothing.

    The records (and ``batch_id``'s list) are written in one atomic script, provisional
    until every id is published. With an owner (auth on), the tasks then count against
    the owner's in-flight cap (429 when full); those beyond the owner's first
    ``[nats] tenant_priority_tasks`` unfinished ones go to the bulk lane. Auth off: all
    on the normal lane. Any failure undoes everything taken; a task published before
    another publish failed is found missing by its worker and dropped.
    """
    task_ids = task_ids or [str(uuid.uuid4()) for _ in accepted]
    records = [
        NewTask(
            task_id,
            a.request.quantum_circuit,
            a.request.shots,
            qubits=a.parsed.qubits,
            depth=a.parsed.depth,
            seed=a.request.seed,
            memory=a.request.memory,
            owner=owner,
            plan=a.plan.model_dump_json(exclude_defaults=True),
            tags=a.request.tags,
        )
        for task_id, a in zip(task_ids, accepted, strict=True)
    ]
    taken = _Taken(task_ids, owner, batch_id, tuple(a.request.tags for a in accepted))
    try:
        async with _stored_bytes(settings, stores, owner, task_ids, accepted):
            await _record_admit_publish(settings, stores, bus, owner, records, batch_id, accepted)
    except BaseException:
        await taken.undo(stores)
        raise
    return task_ids


async def _record_admit_publish(
    settings: Settings,
    stores: Stores,
    bus: Bus,
    owner: str | None,
    records: list[NewTask],
    batch_id: str | None,
    accepted: list[Accepted],
) -> None:
    """The steps of `record_and_queue` that its undo gives back."""
    task_ids = [r.task_id for r in records]
    await stores.tasks.create_many(records, batch_id, PROVISIONAL_TTL_SECONDS)
    queue_on = [Lane.NORMAL] * len(task_ids)
    if owner is not None:
        cap = settings.auth.max_in_flight
        before = await stores.limits.admit(owner, task_ids, cap, _longest_task_seconds(settings))
        queue_on = lanes(settings, before, len(task_ids))
    await _publish_all(bus, task_ids, accepted, queue_on)
    if not await stores.tasks.confirm(task_ids, batch_id):
        raise DependencyUnavailable("redis", "task records expired before they were queued")


def _longest_task_seconds(settings: Settings) -> int:
    """How long after its submit a task has surely ended: every attempt run to the
    execution limit, plus an hour of queueing. An in-flight entry older than this is
    stale (its task vanished without finishing), and a quota charge lapses this long
    plus the result TTL after its submit."""
    limits = settings.limits
    return int(limits.max_execution_seconds * (settings.worker.max_attempts + 1)) + 3600


def charge_of(task_id: str, accepted: Accepted) -> Charge:
    """What a task is charged to its owner's storage quota at submit: its record (the
    program, the plan, the fixed fields, its listing index entries) and the most its
    answer can take (settled to the stored size when it ends)."""
    return Charge(
        task_id,
        len(accepted.request.quantum_circuit)
        + len(accepted.plan.model_dump_json(exclude_defaults=True))
        + RECORD_OVERHEAD_BYTES
        + listing.index_bytes(accepted.request.tags),
        accepted.plan.answer_bytes,
    )


def _stored_bytes(
    settings: Settings,
    stores: Stores,
    owner: str | None,
    task_ids: list[str],
    accepted: list[Accepted],
) -> AbstractAsyncContextManager[None]:
    """The owner's storage quota charged for these tasks while they are recorded and
    queued, and given back if that fails (`qmill.server.store.quotas`)."""
    # No owner (auth off): nothing is charged, so nothing is priced either.
    charges = (
        [charge_of(task_id, a) for task_id, a in zip(task_ids, accepted, strict=True)]
        if owner is not None
        else []
    )
    # A charge lapses with its record: the TTL from when the task ends.
    quota = settings.redis.tenant_storage_mb * 1024 * 1024
    lapse = settings.redis.result_ttl_seconds + _longest_task_seconds(settings)
    return stores.quotas.hold(owner, charges, quota, lapse)


async def _publish_all(
    bus: Bus, task_ids: list[str], accepted: list[Accepted], queue_on: list[Lane]
) -> None:
    """Publish every id, ``BATCH_CONCURRENCY`` at a time; after the first failure the
    rest are not sent (each would wait out its own timeout), and the failure is raised."""
    gate = asyncio.Semaphore(BATCH_CONCURRENCY)
    failures: list[BaseException] = []

    async def publish(task_id: str, a: Accepted, lane: Lane) -> None:
        async with gate:
            if failures:
                return
            try:
                await bus.publish(task_id, a.plan.state_bytes, lane)
            except Exception as exc:
                failures.append(exc)

    await asyncio.gather(*(publish(*job) for job in zip(task_ids, accepted, queue_on, strict=True)))
    if failures:
        first = failures[0]
        if isinstance(first, DependencyUnavailable):
            raise first
        raise DependencyUnavailable("nats", f"publish: {first}") from first


@dataclass(frozen=True, slots=True)
class Claim:
    """An Idempotency-Key claimed (pending) for task ``task_id`` (for a batch: the
    batch's id, whose list gives its tasks to a replay)."""

    digest: str
    task_id: str
    body_hash: str
    window_seconds: int


async def queue_claimed(
    claim: Claim,
    accepted: Accepted | list[Accepted],
    settings: Settings,
    stores: Stores,
    bus: Bus,
    owner: str | None,
) -> list[str]:
    """`record_and_queue` the claim's task (or, given a list, the claim's batch), then
    commit the claim; any refusal (429 for the in-flight cap, 503) releases it, so the
    retry is a fresh attempt, not a 409. The ids of the tasks queued."""
    try:
        if isinstance(accepted, list):
            task_ids = await record_and_queue(
                accepted, settings, stores, bus, owner, batch_id=claim.task_id
            )
        else:
            task_ids = await record_and_queue(
                [accepted], settings, stores, bus, owner, [claim.task_id]
            )
    except BaseException:
        await forget(stores.idempotency.release(claim.digest), claim.task_id)
        raise
    try:
        committed = await stores.idempotency.commit(
            claim.digest, claim.task_id, claim.body_hash, claim.window_seconds
        )
    except DependencyUnavailable:
        committed = False
    if not committed:
        # The task is queued, so it is accepted; only replays of this key suffer:
        # 409 until the pending claim expires, then a new task.
        log.warning("idempotency key not committed", extra={"task_id": claim.task_id})
    return task_ids


async def forget(cleanup: Awaitable[None], task_id: str) -> None:
    """Run a clean-up whose failure must not replace the error being answered."""
    try:
        await cleanup
    except DependencyUnavailable:
        log.error("could not clean up after a refused submit", extra={"task_id": task_id})
