"""The operations behind the HTTP functions: submit, read, health.

Kept free of HTTP so the functions stay thin and the same logic is testable directly.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Awaitable

from pydantic import ValidationError

from qmill import circuits
from qmill.bus import Bus
from qmill.config import Settings
from qmill.errors import (
    DependencyUnavailable,
    IdempotencyConflict,
    InvalidRequest,
    LimitExceeded,
    TaskNotFound,
)
from qmill.models import HealthView, SubmitRequest, SubmitResponse, TaskView
from qmill.store import Store

log = logging.getLogger(__name__)

HEALTH_TIMEOUT_SECONDS = 1.5


def validate_submit(
    body: object, settings: Settings
) -> tuple[SubmitRequest, circuits.ParsedCircuit]:
    """Check the body, the limits and the program; raise a RequestError on the first problem."""
    try:
        request = SubmitRequest.model_validate(body)
    except ValidationError as exc:
        raise InvalidRequest(
            "invalid request body",
            detail=exc.errors(include_url=False, include_context=False, include_input=False),
        ) from None
    limits = settings.limits
    if request.shots < limits.min_shots:
        raise InvalidRequest(f"shots must be at least {limits.min_shots}, got {request.shots}")
    if request.shots > limits.max_shots:
        raise LimitExceeded("shots", request.shots, limits.max_shots)
    parsed = circuits.parse(request.quantum_circuit)
    if parsed.qubits > limits.max_qubits:
        raise LimitExceeded("qubits", parsed.qubits, limits.max_qubits)
    return request, parsed


async def submit(
    body: object,
    settings: Settings,
    store: Store,
    bus: Bus,
    idempotency_key: str | None = None,
) -> SubmitResponse:
    """Validate, record as `pending`, queue. Nothing is left behind if queueing fails.

    With an ``Idempotency-Key``, the same key and body within the window return the
    first task instead of creating another; the same key with another body is a 422.
    """
    request, parsed = validate_submit(body, settings)
    # Fail fast (503) before writing anything when the queue is unreachable.
    await bus.connect()
    if not bus.connected:
        raise DependencyUnavailable("nats", "not connected (reconnecting)", retry_after=2)
    task_id = str(uuid.uuid4())
    digest = None
    if idempotency_key is not None:
        digest = hashlib.sha256(idempotency_key.encode()).hexdigest()
        body_hash = hashlib.sha256(
            f"{request.shots}\n{request.quantum_circuit}".encode()
        ).hexdigest()
        window = settings.redis.idempotency_window_seconds
        first = await store.claim_idempotency(digest, task_id, body_hash, window)
        if first is not None:
            if first[1] != body_hash:
                raise IdempotencyConflict()
            log.info("idempotent replay", extra={"task_id": first[0]})
            return SubmitResponse(task_id=first[0], replayed=True)
    try:
        await store.create(
            task_id,
            request.quantum_circuit,
            request.shots,
            qubits=parsed.qubits,
            depth=parsed.depth,
        )
        try:
            await bus.publish(task_id)
        except DependencyUnavailable:
            # The caller gets 503 and will retry; the record of a task that was never
            # queued must not linger as `pending` forever.
            await _forget(store.delete(task_id), task_id)
            raise
    except DependencyUnavailable:
        if digest is not None:
            await _forget(store.release_idempotency(digest), task_id)
        raise
    log.info(
        "task accepted",
        extra={"task_id": task_id, "shots": request.shots, "qubits": parsed.qubits},
    )
    return SubmitResponse(task_id=task_id)


async def _forget(cleanup: Awaitable[None], task_id: str) -> None:
    try:
        await cleanup
    except DependencyUnavailable:
        log.error("could not clean up after a refused submit", extra={"task_id": task_id})


async def get(store: Store, task_id: str, wait_seconds: float = 0.0) -> TaskView:
    """The task as stored; with ``wait_seconds``, the first terminal state within that time."""
    try:
        uuid.UUID(task_id)
    except ValueError:
        raise TaskNotFound() from None
    if wait_seconds > 0:
        return await store.wait(task_id, wait_seconds)
    return await store.get(task_id)


async def health(store: Store, bus: Bus) -> HealthView:
    """Ping both dependencies concurrently, each bounded so /health itself never hangs."""

    async def bounded(check: asyncio.Future[bool] | asyncio.Task[bool]) -> bool:
        try:
            return await asyncio.wait_for(check, HEALTH_TIMEOUT_SECONDS)
        except TimeoutError:
            return False

    nats_ok, redis_ok = await asyncio.gather(
        bounded(asyncio.ensure_future(bus.ping())), bounded(asyncio.ensure_future(store.ping()))
    )
    services = {"nats": nats_ok, "redis": redis_ok}
    return HealthView(
        status="healthy" if all(services.values()) else "unhealthy", services=services
    )
