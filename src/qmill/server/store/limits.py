"""Per-tenant limits shared by every function instance: a request rate and a cap on
unfinished tasks.

The rate is a token bucket; the cap counts the tenant's task ids in a sorted set
scored by admission time. A task leaves that set when it reaches a terminal state
(the finish script in `tasks`), or, if its record vanished without finishing, when
its entry is older than the stale age and is swept at the next admission.
"""

from __future__ import annotations

from collections.abc import Sequence

from qmill.server import constants
from qmill.server.errors import RateLimited
from qmill.server.store.client import RedisClient, guard

# Token bucket. KEYS: bucket. ARGV: rate/s, burst, cost. Returns 0, or seconds to wait.
_TAKE_TOKENS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1]) or burst
local at = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= cost then tokens = tokens - cost else wait = math.ceil((cost - tokens) / rate) end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 60)
return wait
"""

# In-flight cap. KEYS: the tenant's set of unfinished task ids. ARGV: cap, stale
# seconds, task ids... Returns -1 if admitted (ids added), else the current count.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
local count = redis.call('ZCARD', KEYS[1])
if count + #ARGV - 2 > tonumber(ARGV[1]) then return count end
for i = 3, #ARGV do redis.call('ZADD', KEYS[1], now, ARGV[i]) end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return -1
"""
# What a client is told to wait when its in-flight cap is full: tasks finish in seconds.
_IN_FLIGHT_RETRY_AFTER_SECONDS = 5


class Limits:
    """Rate limit and in-flight cap checks; each raises RateLimited (429) when refused."""

    def __init__(self, client: RedisClient) -> None:
        self._take_tokens = client.script(_TAKE_TOKENS)
        self._admit = client.script(_ADMIT)

    async def take_tokens(self, tenant: str, rate: float, burst: int, cost: int) -> None:
        """Spend ``cost`` from the tenant's token bucket, or raise RateLimited.

        A cost above ``burst`` is charged as ``burst``: it could never be paid otherwise.
        """
        async with guard():
            wait = await self._take_tokens(
                keys=[constants.rate_key(tenant)], args=[rate, burst, min(cost, burst)]
            )
        if int(wait) > 0:
            raise RateLimited(f"rate limit of {rate:g} requests/s exceeded", int(wait))

    async def admit(
        self, tenant: str, task_ids: Sequence[str], cap: int, stale_seconds: int
    ) -> None:
        """Count tasks against the tenant's in-flight cap, all or none, or raise RateLimited."""
        async with guard():
            count = await self._admit(
                keys=[constants.inflight_key(tenant)], args=[cap, stale_seconds, *task_ids]
            )
        if int(count) >= 0:
            raise RateLimited(
                f"{count} tasks in flight; at most {cap} may be pending or processing",
                _IN_FLIGHT_RETRY_AFTER_SECONDS,
            )
