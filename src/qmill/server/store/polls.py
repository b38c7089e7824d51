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

# KEYS: the tenant's set. ARGV: cap, lease seconds, poll id, key TTL (only ever raised,
# so a short poll never expires a longer one's slot). Returns 0 if the
# poll was added, else the whole seconds until the oldest lease ends (at least 1): the
# latest moment a slot frees, which RETRY_AFTER_MAX_SECONDS caps.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return math.max(1, math.ceil(tonumber(first[2]) - now))
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
if redis.call('TTL', KEYS[1]) < tonumber(ARGV[4]) then
  redis.call('EXPIRE', KEYS[1], ARGV[4])
end
return 0
"""


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
        key = self._key_of(tenant)
        poll = uuid.uuid4().hex
        lease = seconds + LEASE_MARGIN_SECONDS
        async with guard():
            wait = int(await self._acquire(keys=[key], args=[cap, lease, poll, math.ceil(lease)]))
        if wait > 0:
            raise RateLimited(self._refused(cap), min(wait, RETRY_AFTER_MAX_SECONDS))
        try:
            yield
        finally:
            # If Redis is gone the lease runs out by itself; the answer is not held up.
            with contextlib.suppress(*FAILURES):
                await self._redis.zrem(key, poll)
