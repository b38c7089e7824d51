"""Idempotency-Key bindings: which task a key created, and with which body.

A binding is *pending* from the moment a request claims its key until that request's
task is queued, and *committed* after. A replay is answered with the task only once
the binding is committed: a pending one belongs to a request still in flight, whose
task may yet be refused and withdrawn.
"""

from __future__ import annotations

from typing import NamedTuple

from qmill.server import constants
from qmill.server.store.client import RedisClient, guard

# ARGV: the pending value, the committed value, ttl. Commits only our own pending claim.
_COMMIT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"""
# The stored value is "<task_id> <body_hash>", with this word appended while pending.
_PENDING = "pending"


class Binding(NamedTuple):
    """The task a key was first bound to, the hash of that request's body, and whether
    that request got as far as queueing its task."""

    task_id: str
    body_hash: str
    committed: bool


class IdempotencyKeys:
    """Claim, commit and release Idempotency-Key bindings (keys are caller digests)."""

    def __init__(self, client: RedisClient) -> None:
        self._redis = client.redis
        self._commit = client.script(_COMMIT)

    async def claim(
        self, digest: str, task_id: str, body_hash: str, ttl_seconds: int
    ) -> Binding | None:
        """Bind a key to a new task, atomically, as pending.

        Returns None if the key is new: it now points at ``task_id``, pending for
        ``ttl_seconds`` or until `commit`. Else the binding it already had.
        """
        key = constants.idempotency_key(digest)
        value = f"{task_id} {body_hash} {_PENDING}"
        async with guard():
            if await self._redis.set(key, value, nx=True, ex=ttl_seconds):
                return None
            existing = await self._redis.get(key)
        if existing is None:  # expired between the two calls: claim again
            return await self.claim(digest, task_id, body_hash, ttl_seconds)
        first_task, first_hash, *state = str(existing).split(" ")
        return Binding(first_task, first_hash, _PENDING not in state)

    async def commit(self, digest: str, task_id: str, body_hash: str, ttl_seconds: int) -> bool:
        """The key's task was accepted: replays return it for ``ttl_seconds``.

        Only a pending binding to ``task_id`` is committed (False otherwise: it expired
        and another request claimed the key meanwhile).
        """
        pending = f"{task_id} {body_hash} {_PENDING}"
        async with guard():
            done = await self._commit(
                keys=[constants.idempotency_key(digest)],
                args=[pending, f"{task_id} {body_hash}", ttl_seconds],
            )
        return bool(done)

    async def release(self, digest: str) -> None:
        """Free the key of a request whose task was refused, so a retry can claim it."""
        async with guard():
            await self._redis.delete(constants.idempotency_key(digest))
