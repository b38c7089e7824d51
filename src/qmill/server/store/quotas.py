"""Per-tenant storage quota: the bytes a tenant's task records may take in Redis at once.

A task's answer can be far larger than its request, and records are kept
``[redis] result_ttl_seconds``, so without a quota one tenant could fill Redis for a
week. Each tenant has a sorted set of its charged task ids, scored by when the charge
lapses, and a hash of what each is charged (``"<request> <answer>"`` bytes) with the
running total:

* at submit (`hold`), every task of the request is charged its request bytes plus its
  answer's estimate (`Plan.answer_bytes`, an upper bound), all or none: over the
  quota, a 429 (`StorageQuotaExceeded`) whose Retry-After says when enough will have
  lapsed; a request that could never fit is a 422. A submit that fails after the charge
  (in-flight cap, a refused publish, Redis) gives it back.
* when the task ends (`settle`), its answer is charged what was actually stored (the
  compressed size for a big one), and the charge lapses with the record: the finish
  transition resets the record's TTL, and the charge's score with it.
* lapsed charges are swept at the tenant's next charge, and both keys expire with the
  last charge, so the bookkeeping never outlives the records it counts.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from qmill.server import constants
from qmill.server.errors import DependencyUnavailable, LimitExceeded, StorageQuotaExceeded
from qmill.server.store.client import RedisClient, guard

# What a record holds besides the program, its options and the answer: ids, timestamps,
# status, worker id... (~300 bytes measured with redis MEMORY USAGE), rounded up.
RECORD_OVERHEAD_BYTES = 512
# The running total's field in the charges hash (a task id is a UUID: no clash).
_TOTAL = "~total"
# Lapsed charges swept per call, and charges read to work out a Retry-After: bounds the
# script's time whatever a tenant holds (the rest is swept at the next call).
_SWEEP = 1000
_SCAN = 1000

_LAPSE = """
local function lapse(zset, hash, now)
  local total = tonumber(redis.call('HGET', hash, '~total') or '0')
  local gone = redis.call('ZRANGEBYSCORE', zset, '-inf', now, 'LIMIT', 0, ARGV[1])
  for _, id in ipairs(gone) do
    local v = redis.call('HGET', hash, id)
    if v then
      local req, ans = string.match(v, '(%d+) (%d+)')
      total = total - tonumber(req) - tonumber(ans)
      redis.call('HDEL', hash, id)
    end
    redis.call('ZREM', zset, id)
  end
  if total < 0 then total = 0 end
  return total
end
"""

# KEYS: charges zset, charges hash. ARGV: sweep, scan, quota, seconds to lapse, then
# (id, request bytes, answer bytes) per task. Returns {-1, total} when charged, else
# {total, seconds until enough lapses (-1: not within the charges scanned)}.
_CHARGE = (
    _LAPSE
    + """
local now = tonumber(redis.call('TIME')[1])
local total = lapse(KEYS[1], KEYS[2], now)
local quota, lapses_at = tonumber(ARGV[3]), now + tonumber(ARGV[4])
local want = 0
for i = 5, #ARGV, 3 do want = want + tonumber(ARGV[i + 1]) + tonumber(ARGV[i + 2]) end
if total + want > quota then
  redis.call('HSET', KEYS[2], '~total', total)
  local need, freed, wait = total + want - quota, 0, -1
  local held = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1, 'WITHSCORES')
  for i = 1, #held, 2 do
    local v = redis.call('HGET', KEYS[2], held[i])
    if v then
      local req, ans = string.match(v, '(%d+) (%d+)')
      freed = freed + tonumber(req) + tonumber(ans)
      if freed >= need then wait = tonumber(held[i + 1]) - now; break end
    end
  end
  return {total, wait}
end
for i = 5, #ARGV, 3 do
  redis.call('ZADD', KEYS[1], lapses_at, ARGV[i])
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1] .. ' ' .. ARGV[i + 2])
end
total = total + want
redis.call('HSET', KEYS[2], '~total', total)
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
local ttl = math.max(60, tonumber(last[2]) - now + 60)
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
return {-1, total}
"""
)

# KEYS: charges zset, charges hash. ARGV: id, answer bytes stored, ttl of the record.
_SETTLE = """
local v = redis.call('HGET', KEYS[2], ARGV[1])
if not v then return 0 end
local req, ans = string.match(v, '(%d+) (%d+)')
local now = tonumber(redis.call('TIME')[1])
redis.call('HSET', KEYS[2], ARGV[1], req .. ' ' .. ARGV[2])
redis.call('HINCRBY', KEYS[2], '~total', tonumber(ARGV[2]) - tonumber(ans))
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[3]), ARGV[1])
return 1
"""

# KEYS: charges zset, charges hash. ARGV: ids. Gives back what they were charged.
_RELEASE = """
local freed = 0
for _, id in ipairs(ARGV) do
  local v = redis.call('HGET', KEYS[2], id)
  if v then
    local req, ans = string.match(v, '(%d+) (%d+)')
    freed = freed + tonumber(req) + tonumber(ans)
    redis.call('HDEL', KEYS[2], id)
  end
  redis.call('ZREM', KEYS[1], id)
end
if freed > 0 then redis.call('HINCRBY', KEYS[2], '~total', -freed) end
return freed
"""


@dataclass(frozen=True, slots=True)
class Charge:
    """What one task is charged at submit: its request's bytes and its answer's estimate."""

    task_id: str
    request_bytes: int
    answer_bytes: int

    @property
    def total(self) -> int:
        return self.request_bytes + self.answer_bytes


class Quotas:
    """Charge, settle and release tenants' stored bytes, each in one script call."""

    def __init__(self, client: RedisClient, *, result_ttl_seconds: int) -> None:
        self._ttl = result_ttl_seconds
        self._redis = client.redis
        self._charge = client.script(_CHARGE)
        self._settle = client.script(_SETTLE)
        self._release = client.script(_RELEASE)

    @staticmethod
    def _keys(tenant: str) -> list[str]:
        return [constants.quota_key(tenant), constants.quota_bytes_key(tenant)]

    async def charge(
        self, tenant: str, charges: Sequence[Charge], quota: int, lapse_seconds: int
    ) -> None:
        """Charge every task, all or none; 429 if the tenant's total would pass ``quota``.

        ``lapse_seconds``: how long a charge may be held before it lapses by itself (a
        task that never finished): the record's TTL plus the longest a task can wait.
        """
        want = sum(c.total for c in charges)
        if want > quota:
            raise LimitExceeded("stored bytes (estimated, [redis] tenant_storage_mb)", want, quota)
        args: list[int | str] = [_SWEEP, _SCAN, quota, lapse_seconds]
        for c in charges:
            args += [c.task_id, c.request_bytes, c.answer_bytes]
        async with guard():
            total, wait = await self._charge(keys=self._keys(tenant), args=args)
        if int(total) >= 0:
            retry = int(wait) if int(wait) >= 0 else self._ttl
            raise StorageQuotaExceeded(int(total) + want, quota, max(1, retry))

    async def settle(self, tenant: str, task_id: str, answer_bytes: int) -> None:
        """The task ended: charge its answer what was stored; the charge now lapses when
        the record does (the finish transition has just reset its TTL)."""
        async with guard():
            await self._settle(keys=self._keys(tenant), args=[task_id, answer_bytes, self._ttl])

    async def settle_many(self, tenant: str, task_ids: Sequence[str], answer_bytes: int) -> None:
        """`settle` several tasks that ended with the same answer size (a batch's
        cancels: 0), in one round trip."""
        if not task_ids:
            return
        pipe = self._redis.pipeline(transaction=False)
        for task_id in task_ids:
            await self._settle(
                keys=self._keys(tenant), args=[task_id, answer_bytes, self._ttl], client=pipe
            )
        async with guard():
            await pipe.execute()

    async def settle_each(self, settled: Sequence[tuple[str, str, int]]) -> None:
        """`settle` each (tenant, task id, answer bytes), in one round trip."""
        pipe = self._redis.pipeline(transaction=False)
        for tenant, task_id, answer_bytes in settled:
            await self._settle(
                keys=self._keys(tenant), args=[task_id, answer_bytes, self._ttl], client=pipe
            )
        async with guard():
            await pipe.execute()

    async def release(self, tenant: str, task_ids: Sequence[str]) -> None:
        """Give back the charges of tasks that were never recorded (a refused submit)."""
        if task_ids:
            async with guard():
                await self._release(keys=self._keys(tenant), args=list(task_ids))

    @contextlib.asynccontextmanager
    async def hold(
        self, tenant: str | None, charges: Sequence[Charge], quota: int, lapse_seconds: int
    ) -> AsyncIterator[None]:
        """Charge for the body of the ``async with``; if it raises, release the charge.

        No tenant (auth off): nothing is charged.
        """
        if tenant is None:
            yield
            return
        await self.charge(tenant, charges, quota, lapse_seconds)
        try:
            yield
        except BaseException:
            with contextlib.suppress(DependencyUnavailable):
                await self.release(tenant, [c.task_id for c in charges])
            raise
