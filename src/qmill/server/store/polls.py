"""Long-polls (``GET /tasks/{id}?wait=``) a tenant has open, bounded and shared by every
result-function instance.

A long-poll is cheap for the result function (one waiting future) but not for what is
in front of it: each holds a client connection and an upstream connection in the
gateway or proxy for up to ``[server] max_wait_seconds``. 300 of them from one tenant
held every pooled upstream connection of the embedded gateway, so everyone's /health
waited 29 s. So a tenant may hold only so many at once.

Each open poll is a member of the tenant's sorted set, scored by when its lease ends
(its wait plus a margin). A poll leaves the set when it answers; one whose function
died is dropped once its lease has run out, so a crash never keeps a slot for long.
"""

from __future__ import annotations

import contextlib
import math
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from qmill.server import constants
from qmill.server.errors import RateLimited
from qmill.server.store.client import FAILURES, RedisClient, guard

# A lease outlives its wait by this much: the reads before and after the wait, each
# bounded by the Redis socket timeout, and a busy event loop.
LEASE_MARGIN_SECONDS = 10.0
# The most a refused poll is told to wait. A slot frees at the latest when the oldest
# lease ends (up to max_wait_seconds + the margin away), but usually sooner, as tasks
# finish; and a client gives up on a Retry-After over 30 s (qmill's RetryPolicy).
RETRY_AFTER_MAX_SECONDS = 5

# The tenant's set, its cap, the lease's seconds, the poll's id, the key's TTL (only ever
# raised, so a short poll never expires a longer one's slot). Returns 0 if the poll was
# added, else the whole seconds until the oldest lease ends (at least 1): the latest
# moment a slot frees, which RETRY_AFTER_MAX_SECONDS caps.
_ACQUIRE_FUNCTION = """
local function acquire(key, cap, lease, poll, ttl)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if redis.call('ZCARD', key) >= tonumber(cap) then
    local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    return math.max(1, math.ceil(tonumber(first[2]) - now))
  end
  redis.call('ZADD', key, now + tonumber(lease), poll)
  if redis.call('TTL', key) < tonumber(ttl) then
    redis.call('EXPIRE', key, ttl)
  end
  return 0
end
"""
# KEYS: the tenant's set, then a task's key or none. ARGV: cap, lease seconds, poll id,
# key TTL. Returns {acquire's answer, the task's status (nil: no such task)}: a
# long-poll's slot and its first read in one round trip.
_ACQUIRE = (
    _ACQUIRE_FUNCTION
    + """
local status = false
if KEYS[2] then status = redis.call('HGET', KEYS[2], 'status') end
return {acquire(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]), status}
"""
)


def _long_polls_refused(cap: int) -> str:
    return (
        f"{cap} long-polls (?wait=) are already open for this API key (for "
        f"everyone, with auth off): [server] max_long_polls_per_tenant; retry "
        f"after Retry-After, or read without ?wait"
    )


class LongPolls:
    """Per-tenant slots for open long-polls; `hold` raises RateLimited (429) when full.

    ``key_of`` and ``refused`` make the same slots for another kind of held request
    (event streams: `qmill.server.store.events.stream_slots`).
    """

    def __init__(
        self,
        client: RedisClient,
        *,
        key_of: Callable[[str], str] = constants.long_polls_key,
        refused: Callable[[int], str] = _long_polls_refused,
    ) -> None:
        self._redis = client.redis
        self._acquire = client.script(_ACQUIRE)
        self._key_of = key_of
        self._refused = refused

    @contextlib.asynccontextmanager
    async def hold(self, tenant: str, cap: int, seconds: float) -> AsyncIterator[None]:
        """Hold one of ``tenant``'s ``cap`` slots while a poll waits up to ``seconds``."""
        slot = self.slot(tenant, cap)
        await slot.take(seconds)
        try:
            yield
        finally:
            # If Redis is gone the lease runs out by itself; the answer is not held up.
            with contextlib.suppress(*FAILURES):
                await slot.release(self._redis)

    def slot(self, tenant: str, cap: int) -> Slot:
        """One poll's slot among ``tenant``'s ``cap``, to take and give back in the round
        trips of a wait's own reads (`qmill.server.store.waiters.Waiters.wait`)."""
        return Slot(self, self._key_of(tenant), cap, uuid.uuid4().hex)


@dataclass(frozen=True, slots=True)
class Slot:
    """One poll's slot. Taking it may read a task's status in the same script, and
    giving it back is a ZREM that may ride in a pipeline with the wait's last read: a
    long-poll takes two round trips, not four."""

    polls: LongPolls
    key: str
    cap: int
    # The poll's member in the tenant's set.
    poll: str

    async def take(self, seconds: float, reading: str | None = None) -> str | None:
        """Take the slot for a poll of up to ``seconds``; RateLimited (429) if every slot
        is taken. Returns the status of the task record ``reading`` (None: no record,
        or none asked for)."""
        lease = seconds + LEASE_MARGIN_SECONDS
        keys = [self.key] if reading is None else [self.key, reading]
        async with guard():
            wait, status = await self.polls._acquire(
                keys=keys, args=[self.cap, lease, self.poll, math.ceil(lease)]
            )
        seconds_left = int(wait)
        if seconds_left > 0:
            refused = self.polls._refused(self.cap)
            raise RateLimited(refused, min(seconds_left, RETRY_AFTER_MAX_SECONDS))
        return str(status) if status is not None else None

    def release(self, client: Any) -> Any:
        """Give the slot back (awaited, or queued on a pipeline)."""
        return client.zrem(self.key, self.poll)
