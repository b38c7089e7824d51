"""The operations on whole batches: submit (idempotent), read (and wait), cancel.

Kept free of HTTP like `qmill.server.tasks`, whose checks, parse and queueing a batch
shares task by task. What is a batch's own:

* its ``seed`` and ``tags`` reach every task (task ``i`` gets ``seed + i``; a task's own
  seed and tags win), before the tasks are checked, so the records hold what ran;
* an ``Idempotency-Key`` binds the batch's id, and a replay answers the batch's task ids
  from its list (kept as long as its records);
* a wait registers every unfinished task at once (`Waiters.wait_all`), and a cancel is
  one pipelined script call per task (`TaskStore.cancel_many`), so a 1000-task batch
  costs a few round trips, not a thousand.
"""

from __future__ import annotations

import hashlib
import logging
import uuid

from qmill.server import tags
from qmill.server.bus import Bus
from qmill.server.config import LimitsSettings, Settings
from qmill.server.enqueue import Claim, queue_claimed, record_and_queue, shielded
from qmill.server.errors import (
    IdempotencyConflict,
    IdempotencyInProgress,
    InvalidRequest,
    LimitExceeded,
    RequestError,
    TaskNotFound,
)
from qmill.server.models import BatchRequest, BatchResponse, BatchView, SubmitRequest
from qmill.server.store import Binding, Outcome, Stores
from qmill.server.store.batches import Head
from qmill.server.tasks import (
    IDEMPOTENCY_PENDING_SECONDS,
    _check_id,
    _ensure_queue,
    _model,
    idempotency_digest,
    validate,
)

log = logging.getLogger(__name__)

MAX_SEED = 2**63 - 1


def expanded(batch: BatchRequest, limits: LimitsSettings) -> list[SubmitRequest]:
    """Each task with the batch's seed (plus its index) and tags applied where it has
    none of its own; a 422 naming the task if its seed or merged tags are out of bounds."""
    if batch.tags:
        tags.check(batch.tags, limits)
    requests = []
    for index, task in enumerate(batch.tasks):
        update: dict[str, object] = {}
        if batch.seed is not None and task.seed is None:
            if batch.seed + index > MAX_SEED:
                error = InvalidRequest(
                    f"seed {batch.seed} + {index} is over {MAX_SEED}, the largest seed; "
                    "give this task its own seed, or the batch a smaller one"
                )
                error.in_batch(index)
                raise error
            update["seed"] = batch.seed + index
        if batch.tags:
            try:
                update["tags"] = tags.merged(batch.tags, task.tags, limits)
            except RequestError as exc:
                exc.in_batch(index)
                raise
        requests.append(task.model_copy(update=update) if update else task)
    return requests


async def submit_batch(
    body: object,
    settings: Settings,
    stores: Stores,
    bus: Bus,
    owner: str | None = None,
    idempotency_key: str | None = None,
) -> BatchResponse:
    """Validate every task first (an error names its index), then queue them all.

    Each task costs one rate-limit token: the request paid the first (``auth.authorize``),
    the others are charged here, before any parsing, into debt if the bucket runs
    short (`Limits.charge`): the tenant's next request waits until the debt is repaid
    (a 1000-task batch from a full bucket of 200 at 50/s: 16 s).

    With an ``Idempotency-Key``, as `tasks.submit`: the same key and body within the
    window return the first batch (its id and task ids), the same key with another
    body (or one first used for a single task) is a 422, a key whose first request is
    still queueing is a 409, and every refusal after the claim releases the key.
    """
    batch = _model(BatchRequest, body)
    if len(batch.tasks) > settings.limits.max_batch_tasks:
        raise LimitExceeded("tasks in a batch", len(batch.tasks), settings.limits.max_batch_tasks)
    requests = expanded(batch, settings.limits)
    auth = settings.auth
    if owner is not None and auth.rate_per_second > 0:
        await stores.limits.charge(owner, auth.rate_per_second, auth.burst, len(batch.tasks) - 1)
    accepted = await validate(requests, settings, True, owner, stores.limits)
    await _ensure_queue(bus)
    batch_id = str(uuid.uuid4())
    if idempotency_key is None:
        task_ids = await shielded(
            record_and_queue(accepted, settings, stores, bus, owner, batch_id=batch_id)
        )
    else:
        digest = idempotency_digest(owner, idempotency_key)
        body_hash = batch_hash(batch)
        for _ in range(2):
            first = await stores.idempotency.claim(
                digest, batch_id, body_hash, IDEMPOTENCY_PENDING_SECONDS
            )
            if first is None:
                break
            replay = await _replay(first, body_hash, stores)
            if replay is not None:
                return replay
            await stores.idempotency.release(digest)  # its batch expired: claim afresh
        window = settings.redis.idempotency_window_seconds
        claim = Claim(digest, batch_id, body_hash, window)
        task_ids = await shielded(queue_claimed(claim, accepted, settings, stores, bus, owner))
    log.info("batch accepted", extra={"batch_id": batch_id, "tasks": len(task_ids)})
    return BatchResponse(batch_id=batch_id, task_ids=task_ids)


def batch_hash(batch: BatchRequest) -> str:
    """What an Idempotency-Key's replay must match: the batch as parsed (so JSON spacing
    and key order do not count), marked as a batch, so a key first used for a single
    task never matches a batch's body."""
    return hashlib.sha256(b"batch\n" + batch.model_dump_json().encode()).hexdigest()


async def _replay(first: Binding, body_hash: str, stores: Stores) -> BatchResponse | None:
    """The first batch of a key, as its 201 said; None if that batch has expired."""
    if first.body_hash != body_hash:
        raise IdempotencyConflict()
    if not first.committed:
        # Its first request is still queueing and may yet be refused and withdrawn.
        raise IdempotencyInProgress()
    try:
        task_ids = await stores.batches.task_ids(first.task_id)
    except TaskNotFound:
        return None
    log.info("idempotent replay", extra={"batch_id": first.task_id})
    return BatchResponse(batch_id=first.task_id, task_ids=task_ids, replayed=True)


def _owned(heads: list[Head], owner: str | None) -> None:
    """Another tenant's batch is reported exactly like a missing one (404, not 403)."""
    if not heads or (owner is not None and any(h.owner != owner for h in heads)):
        raise TaskNotFound("Batch")


async def get_batch(
    stores: Stores,
    batch_id: str,
    owner: str | None = None,
    *,
    wait_seconds: float = 0.0,
    packed: bool = False,
) -> BatchView:
    """Every task of a batch; with ``wait_seconds``, once all are terminal or that time
    has passed. ``packed``: compressed answers left compressed (`TaskStore.get`)."""
    _check_id(batch_id, "Batch")
    task_ids = await stores.batches.task_ids(batch_id)
    if wait_seconds > 0:
        # Owner first: never wait on (and so reveal) another tenant's batch.
        heads = await stores.batches.heads(task_ids)
        _owned(heads, owner)
        unfinished = [h.task_id for h in heads if not h.status.terminal]
        if unfinished:
            await stores.waiters.wait_all(unfinished, wait_seconds)
    views = await stores.tasks.get_many(task_ids, packed=packed)
    if not views or (owner is not None and any(v.owner != owner for v in views)):
        raise TaskNotFound("Batch")
    return BatchView.of(batch_id, views)


async def cancel_batch(
    stores: Stores, bus: Bus, batch_id: str, owner: str | None = None, *, packed: bool = False
) -> BatchView:
    """Cancel every task of the batch not yet terminal, as `tasks.cancel` does one (the
    record, then the bus signal that stops a running one); the batch as it now is. A
    batch already finished is answered as it is: there is nothing left to cancel."""
    _check_id(batch_id, "Batch")
    heads = await stores.batches.heads(await stores.batches.task_ids(batch_id))
    _owned(heads, owner)
    unfinished = [h.task_id for h in heads if not h.status.terminal]
    outcomes = await stores.tasks.cancel_many(unfinished, owner) if unfinished else []
    cancelled = [t for t, o in zip(unfinished, outcomes, strict=True) if o is Outcome.APPLIED]
    for task_id in cancelled:  # core NATS: buffered, one flush for all of them
        await bus.signal_cancel(task_id)
    log.info("batch cancelled", extra={"batch_id": batch_id, "cancelled": len(cancelled)})
    return await get_batch(stores, batch_id, owner, packed=packed)
