"""Worker liveness in Redis: one key per worker, expiring unless the worker refreshes it.

An operator lists the live workers and what each runs with
``redis-cli --scan --pattern 'qmill:worker:*'``. Container health checks read the
worker's heartbeat file instead, so a Redis outage does not get healthy workers restarted.
"""

from __future__ import annotations

from qmill.server import constants
from qmill.server.store.client import RedisClient, guard


class Heartbeats:
    def __init__(self, client: RedisClient) -> None:
        self._redis = client.redis

    async def beat(self, worker_id: str, ttl_seconds: int, info: str) -> None:
        """Record that ``worker_id`` is alive, with ``info`` (JSON), for ``ttl_seconds``."""
        async with guard():
            await self._redis.set(constants.worker_heartbeat_key(worker_id), info, ex=ttl_seconds)
