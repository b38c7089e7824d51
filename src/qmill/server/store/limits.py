"""Per-tenant limits shared by every function instance: a request rate and a cap on
unfinished tasks.

The rate is a token bucket; a charge larger than the bucket holds (a big batch) is
taken when the bucket is full and leaves it in debt, so every task is paid for before
the tenant's next request. The cap counts the tenant's task ids in a sorted set
scored by admission time. A task leaves that set when it reaches a terminal state
(the finish script in `tasks`), or, if its record vanished without finishing, when
its entry is older than the stale age and is swept at the next admission.
"""

from __future__ import annotations

from collections.abc import Sequence

from qmill.server import constants
from qmill.server.errors import RateLimited
from qmill.server.store.client import RedisClient, guard

# Token bucket. KEYS: bucket. ARGV: rate/s, burst, cost, need. Takes ``cost`` tokens when
# at least ``need`` are there (the balance may go below zero: debt the refill repays
# before anything else is admitted). Returns 0, or seconds to wait.
_TAKE_TOKENS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local need = tonumber(ARGV[4])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1]) or burst
local at = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= need then tokens = tokens - cost else wait = math.ceil((need - tokens) / rate) end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil((burst - math.min(tokens, 0)) / rate) + 60)
return wait
"""

# In-flight cap. KEYS: the tenant's set of unfinished task ids. ARGV: cap, stale
# seconds, task key prefix, task ids... Returns {1, count before} if admitted (ids
# added), else {0, count}. Before refusing, entries whose task record no longer exists
# (a submit refused or lost before it could take them back) are dropped: they hold no
# work, so they must not hold the cap either.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1])
local cap, wanted = tonumber(ARGV[1]), #ARGV - 3
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
local count = redis.call('ZCARD', KEYS[1])
if count + wanted > cap then
  for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    if redis.call('EXISTS', ARGV[3] .. id) == 0 then redis.call('ZREM', KEYS[1], id) end
  end
  count = redis.call('ZCARD', KEYS[1])
  if count + wanted > cap then return {0, count} end
end
for i = 4, #ARGV do redis.call('ZADD', KEYS[1], now, ARGV[i]) end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return {1, count}
"""
# What a client is told to wait when its in-flight cap is full: tasks finish in seconds.
_IN_FLIGHT_RETRY_AFTER_SECONDS = 5


class Limits:
    """Rate limit and in-flight cap checks; each raises RateLimited (429) when refused."""

    def __init__(self, client: RedisClient) -> None:
        self._redis = client.redis
        self._take_tokens = client.script(_TAKE_TOKENS)
        self._admit = client.script(_ADMIT)

    async def take_tokens(self, tenant: str, rate: float, burst: int, cost: int) -> None:
        """Spend ``cost`` from the tenant's token bucket, or raise RateLimited.

        A cost above ``burst`` could never be paid at once: it is taken from a full
        bucket, which it leaves in debt (``cost - burst`` tokens the tenant then waits
        out), so it still counts in full.
        """
        await self._take(tenant, rate, burst, cost, need=min(cost, burst))

    async def charge(self, tenant: str, rate: float, burst: int, cost: int) -> None:
        """Spend ``cost`` more for a request already admitted (a batch's other tasks),
        into debt if need be: never refused, repaid before the tenant's next request."""
        if cost > 0:
            await self._take(tenant, rate, burst, cost, need=-(10**12))

    async def _take(self, tenant: str, rate: float, burst: int, cost: int, need: int) -> None:
        async with guard():
            wait = await self._take_tokens(
                keys=[constants.rate_key(tenant)], args=[rate, burst, cost, need]
            )
        if int(wait) > 0:
            raise RateLimited(f"rate limit of {rate:g} requests/s exceeded", int(wait))

    async def admit(
        self, tenant: str, task_ids: Sequence[str], cap: int, stale_seconds: int
    ) -> int:
        """Count tasks against the tenant's in-flight cap, all or none, or raise RateLimited.

        Returns how many of the tenant's tasks were in flight before these (what the
        scheduling lanes are chosen by).
        """
        async with guard():
            admitted, count = await self._admit(
                keys=[constants.inflight_key(tenant)],
                args=[cap, stale_seconds, constants.TASK_KEY_PREFIX, *task_ids],
            )
        if not int(admitted):
            raise RateLimited(
                f"{count} tasks in flight; at most {cap} may be pending or processing",
                _IN_FLIGHT_RETRY_AFTER_SECONDS,
            )
        return int(count)

    async def withdraw(self, tenant: str, task_ids: Sequence[str]) -> None:
        """Take refused tasks out of the tenant's in-flight set (they never ran)."""
        if task_ids:
            async with guard():
                await self._redis.zrem(constants.inflight_key(tenant), *task_ids)
