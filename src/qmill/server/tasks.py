"""The operations behind the HTTP functions: submit, read, cancel, health (whole batches:
`qmill.server.batches`).

Kept free of HTTP so the functions stay thin and the same logic is testable directly.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
import typing
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from qmill.server import qasm, tags, workload
from qmill.server.bus import Bus
from qmill.server.config import Settings
from qmill.server.enqueue import Claim, queue_claimed, record_and_queue, shielded
from qmill.server.errors import (
    DependencyUnavailable,
    IdempotencyConflict,
    IdempotencyInProgress,
    InvalidRequest,
    LimitExceeded,
    RequestError,
    TaskConflict,
    TaskNotFound,
)
from qmill.server.models import (
    BatchRequest,
    HealthView,
    SubmitRequest,
    SubmitResponse,
    TaskView,
)
from qmill.server.qasm import pool
from qmill.server.store import Outcome, Stores
from qmill.server.store.limits import Limits as RateLimits
from qmill.server.store.polls import Slot

log = logging.getLogger(__name__)

HEALTH_TIMEOUT_SECONDS = 1.5
# How long an Idempotency-Key stays bound to a request still in flight (its replays get
# 409) before the binding lapses: far longer than a submit takes (a few Redis calls and
# one publish, each bounded by its timeout), short enough that a function that died
# mid-submit does not block the key for the whole window.
IDEMPOTENCY_PENDING_SECONDS = 30


@dataclass(frozen=True, slots=True)
class Accepted:
    """A validated request, ready to be recorded and queued."""

    request: SubmitRequest
    # Its numbers (a ParsedProgram, with the circuit, when it was parsed inline).
    parsed: qasm.ProgramShape
    plan: workload.Plan


M = TypeVar("M", bound=BaseModel)


def _model(model: type[M], body: object) -> M:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        unknown = next((e for e in errors if e["type"] == "extra_forbidden"), None)
        if unknown is not None:
            raise _unknown_field(model, unknown["loc"]) from None
        raise InvalidRequest("invalid request body", detail=errors) from None


def _unknown_field(model: type[BaseModel], loc: tuple[int | str, ...]) -> RequestError:
    """422 naming the field and listing the accepted ones: an option the server does not
    know is never dropped (the caller would believe it was applied)."""
    *where, name = loc
    owner: type[BaseModel] = model
    for part in where:  # down to the model that holds the unknown field
        if isinstance(part, int):
            continue
        owner = next(
            (
                t
                for t in _types(owner.model_fields[str(part)].annotation)
                if isinstance(t, type) and issubclass(t, BaseModel)
            ),
            owner,
        )
    accepted = list(owner.model_fields)
    path = ".".join(str(p) for p in where[2:] if not isinstance(p, int))
    in_batch = model is BatchRequest and len(where) >= 2 and isinstance(where[1], int)
    if not in_batch:
        path = ".".join(str(p) for p in where if not isinstance(p, int))
    field = f"{path}.{name}" if path else str(name)
    error = InvalidRequest(
        f"unknown field '{field}'; accepted fields: {', '.join(accepted)}", allowed=accepted
    )
    if in_batch:
        error.in_batch(int(where[1]))
    return error


def _types(annotation: object) -> list[object]:
    """The types an annotation names (``Noise | None`` -> Noise, NoneType; list[X] -> X)."""
    args = typing.get_args(annotation)
    if not args:
        return [annotation]
    return [t for arg in args for t in _types(arg)]


def check(
    request: SubmitRequest,
    settings: Settings,
    parse_limits: qasm.Limits | None = None,
    inline: bool = False,
) -> Accepted:
    """Check limits, the program and its options; raise a RequestError on the first problem.

    ``parse_limits`` when several programs share one parse budget (a batch); with
    ``inline``, `qasm.NotInline` for a program that must be parsed out of line.
    """
    limits = settings.limits
    if request.shots < limits.min_shots:
        raise InvalidRequest(f"shots must be at least {limits.min_shots}, got {request.shots}")
    if request.shots > limits.max_shots:
        raise LimitExceeded("shots", request.shots, limits.max_shots)
    tags.check(request.tags, limits)
    parse_limits = parse_limits or qasm.Limits.for_request(settings)
    parsed = qasm.parse(request.quantum_circuit, parse_limits, inline)
    for name, value, allowed in (
        ("classical bits", parsed.clbits, limits.max_clbits),
        ("gates", parsed.size, limits.max_gates),
        ("depth", parsed.depth, limits.max_depth),
    ):
        if value > allowed:
            raise LimitExceeded(name, value, allowed)
    return Accepted(request, parsed, workload.plan(request, parsed, settings))


def validate_submit(body: object, settings: Settings) -> Accepted:
    return check(_model(SubmitRequest, body), settings)


def check_all(
    requests: list[SubmitRequest], settings: Settings, batch: bool, inline: bool = False
) -> list[Accepted]:
    """Check every program against one shared budget; in a batch, errors carry the index."""
    parse_limits = qasm.Limits.for_request(settings)
    accepted = []
    for index, request in enumerate(requests):
        try:
            accepted.append(check(request, settings, parse_limits, inline))
        except RequestError as exc:
            if batch:
                exc.in_batch(index)
            raise
    return accepted


# Programs up to this many characters in all may be parsed on the event loop, if
# `qasm.parse` finds them cheap (see qasm.program.INLINE_STATEMENTS: the fast importer,
# at most 64 statements and 1024 gates broadcast; measured at most ~7 ms); all others
# are parsed in a parse process (`qasm.pool`), killed at the deadline.
INLINE_PARSE_CHARS = 4096


async def validate(
    requests: list[SubmitRequest],
    settings: Settings,
    batch: bool = False,
    owner: str | None = None,
    rate: RateLimits | None = None,
) -> list[Accepted]:
    """`check` every request: inline when small and cheap, else in a parse process.

    A parse out of line is charged to the ``owner``'s rate limit (in ``rate``) by the
    time it took (``[limits] parse_seconds_per_token``), accepted or not, into debt.
    """
    if sum(len(r.quantum_circuit) for r in requests) <= INLINE_PARSE_CHARS:
        try:
            return check_all(requests, settings, batch, inline=True)
        except qasm.NotInline:
            pass
    job = pool.Job(settings, requests, batch, settings.limits.max_parse_seconds)
    reply = await parse_out_of_line(job, settings, owner, rate)
    return [
        Accepted(
            request,
            qasm.ProgramShape(*item["shape"]),
            workload.Plan.model_validate_json(item["plan"]),
        )
        for request, item in zip(requests, reply["accepted"], strict=True)
    ]


async def parse_out_of_line(
    job: pool.Job | pool.DrawJob,
    settings: Settings,
    owner: str | None = None,
    rate: RateLimits | None = None,
) -> dict[str, Any]:
    """Run ``job`` in a parse process (``[limits]``: its slots, wait, tenant share and
    deadline) and charge its time to the owner's rate limit; the child's answer, or the
    RequestError it raised, raised here."""
    limits = settings.limits
    slots = limits.parse_processes or max(2, len(os.sched_getaffinity(0)))
    started = time.monotonic()
    try:
        reply = await pool.pool.run(
            job,
            seconds=limits.max_parse_seconds,
            slots=slots,
            wait=limits.max_parse_wait_seconds,
            tenant=owner,
            share=max(1, int(slots * limits.tenant_parse_share)),
        )
    except LimitExceeded:
        await _charge_parse(time.monotonic() - started, settings, owner, rate)
        raise
    await _charge_parse(time.monotonic() - started, settings, owner, rate)
    if "error" in reply:
        raise pool.decode_error(reply["error"])
    if "bug" in reply:
        raise RuntimeError(f"parse process: {reply['bug']}")
    return reply


async def _charge_parse(
    seconds: float, settings: Settings, owner: str | None, rate: RateLimits | None
) -> None:
    """Charge a parse's time to the tenant's rate limit (auth on), into debt if need be.

    The parse is done, so its outcome stands (a 201 or its 4xx); what it cost is taken
    from the tenant's next requests, which wait until the debt is repaid. A refused
    program is charged too: parse time is what a hostile program costs.
    """
    auth = settings.auth
    tokens = int(seconds / settings.limits.parse_seconds_per_token)
    if owner is None or rate is None or auth.rate_per_second <= 0 or tokens < 1:
        return
    await rate.charge(owner, auth.rate_per_second, auth.burst, tokens)


async def _ensure_queue(bus: Bus) -> None:
    """Fail fast (503) before writing anything when the queue is unreachable."""
    await bus.connect()
    if not bus.connected:
        raise DependencyUnavailable("nats", "not connected (reconnecting)", retry_after=2)


def idempotency_digest(owner: str | None, idempotency_key: str) -> str:
    """Where a key is bound. Keys are per tenant: two tenants may pick the same key."""
    return hashlib.sha256(f"{owner or ''}\n{idempotency_key}".encode()).hexdigest()


async def submit(
    body: object,
    settings: Settings,
    stores: Stores,
    bus: Bus,
    idempotency_key: str | None = None,
    owner: str | None = None,
) -> SubmitResponse:
    """Validate, record as `pending`, queue.

    With an ``Idempotency-Key``, the same key and body within the window return the
    first task instead of creating another; the same key with another body is a 422.
    Every refusal after the key is claimed (429 in-flight cap, 503) releases it, so a
    retry is a new attempt, not a 409.
    """
    (accepted,) = await validate(
        [_model(SubmitRequest, body)], settings, owner=owner, rate=stores.limits
    )
    await _ensure_queue(bus)
    digest = None
    body_hash = ""
    claim_id = str(uuid.uuid4())
    if idempotency_key is not None:
        request = accepted.request
        digest = idempotency_digest(owner, idempotency_key)
        # No tags hashes as before tags existed: a retry across the upgrade still matches.
        untagged = {"tags"} if not request.tags else None
        body_hash = hashlib.sha256(request.model_dump_json(exclude=untagged).encode()).hexdigest()
        first = await stores.idempotency.claim(
            digest, claim_id, body_hash, IDEMPOTENCY_PENDING_SECONDS
        )
        if first is not None:
            if first.body_hash != body_hash:
                raise IdempotencyConflict()
            if not first.committed:
                # Its first request is still publishing and may yet answer 503 and
                # withdraw the task: a 201 with that id now could promise a lost task.
                raise IdempotencyInProgress()
            log.info("idempotent replay", extra={"task_id": first.task_id})
            return SubmitResponse(task_id=first.task_id, replayed=True)
    if digest is None:
        (task_id,) = await shielded(record_and_queue([accepted], settings, stores, bus, owner))
    else:
        claim = Claim(digest, claim_id, body_hash, settings.redis.idempotency_window_seconds)
        await shielded(queue_claimed(claim, accepted, settings, stores, bus, owner))
        task_id = claim_id
    log.info(
        "task accepted",
        extra={
            "task_id": task_id,
            "shots": accepted.request.shots,
            "qubits": accepted.parsed.qubits,
        },
    )
    return SubmitResponse(task_id=task_id)


def _check_id(task_id: str, what: str = "Task") -> None:
    try:
        uuid.UUID(task_id)
    except ValueError:
        raise TaskNotFound(what) from None


def _visible(view: TaskView, owner: str | None) -> TaskView:
    """Another tenant's task is reported exactly like a missing one (404, not 403)."""
    if owner is not None and view.owner != owner:
        raise TaskNotFound()
    return view


async def get(
    stores: Stores,
    task_id: str,
    wait_seconds: float = 0.0,
    owner: str | None = None,
    *,
    packed: bool = False,
    slot: Slot | None = None,
) -> TaskView:
    """The task as stored; with ``wait_seconds``, the first terminal state within that time.

    ``packed``: a compressed answer is left compressed (`TaskStore.get`). ``slot``: the
    long-poll slot the wait holds (`Waiters.wait`).
    """
    _check_id(task_id)
    if wait_seconds > 0:
        if owner is not None:  # do not wait on (and so reveal) another tenant's task
            _visible(await stores.tasks.get(task_id, packed=True), owner)
        view = await stores.waiters.wait(task_id, wait_seconds, packed=packed, slot=slot)
        return _visible(view, owner)
    return _visible(await stores.tasks.get(task_id, packed=packed), owner)


async def cancel(stores: Stores, bus: Bus, task_id: str, owner: str | None = None) -> TaskView:
    """Cancel a pending or running task; 409 if it already finished.

    A pending task never runs. A running one is stopped if its worker can stop it
    (process executor); otherwise it runs on and its result is discarded.
    """
    _check_id(task_id)
    _visible(await stores.tasks.get(task_id, packed=True), owner)
    outcome = await stores.tasks.cancel(task_id, owner)
    if outcome is Outcome.MISSING:
        raise TaskNotFound()
    if outcome is not Outcome.APPLIED:
        raise TaskConflict(outcome)
    await bus.signal_cancel(task_id)
    log.info("task cancelled", extra={"task_id": task_id})
    return await stores.tasks.get(task_id)


async def health(stores: Stores, bus: Bus) -> HealthView:
    """Ping both dependencies concurrently, each bounded so /health itself never hangs."""

    async def bounded(check: Awaitable[bool]) -> bool:
        try:
            return await asyncio.wait_for(check, HEALTH_TIMEOUT_SECONDS)
        except TimeoutError:
            return False

    nats_ok, redis_ok = await asyncio.gather(bounded(bus.ping()), bounded(stores.ping()))
    services = {"nats": nats_ok, "redis": redis_ok}
    return HealthView(
        status="healthy" if all(services.values()) else "unhealthy", services=services
    )
