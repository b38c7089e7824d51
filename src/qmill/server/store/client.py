"""The one Redis connection pool a process shares between every store module.

Each concern (tasks, idempotency, limits, ...) is a module over this client, as
dramatiq's Redis backends are: they share the pool and the error mapping, and each
registers its own Lua scripts.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from qmill.server.errors import DependencyUnavailable, StoreFull

# What a lost or refused connection raises, besides redis-py's own errors.
RETRYABLE: tuple[type[Exception], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    OSError,
)
FAILURES: tuple[type[Exception], ...] = (RedisError, *RETRYABLE)
# What Redis says when it is at maxmemory and refuses a write (noeviction).
_OOM = "OOM command not allowed"
# Connections one process opens to Redis at most (redis-py's default pool size).
MAX_CONNECTIONS = 100


class RedisClient:
    """An asyncio Redis client with qmill's timeouts and retry policy."""

    def __init__(self, url: str, *, socket_timeout: float | None, retries: int = 0) -> None:
        # Functions use retries=0 so a dead Redis answers 503 fast; the worker retries
        # because dropping a finished result on a blip would waste the simulation.
        retry = Retry(ExponentialBackoff(cap=2.0, base=0.05), retries) if retries else None
        # A call waits (up to the socket timeout) for a free connection rather than failing
        # at once, as redis-py's default pool does: one finished task woke 300 long-polls,
        # whose 300 reads at once got "Too many connections" (503) for 130 of them.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=MAX_CONNECTIONS,
            timeout=socket_timeout,
            decode_responses=True,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            retry=retry,
            retry_on_error=[RedisConnectionError, RedisTimeoutError] if retries else None,
            health_check_interval=30,
        )
        self.redis: aioredis.Redis = aioredis.Redis.from_pool(pool)

    def script(self, source: str) -> AsyncScript:
        """Register a Lua script; it is loaded by SHA on first use (EVALSHA, else EVAL)."""
        return self.redis.register_script(source)

    async def ping(self) -> bool:
        """False instead of an error: /health reports Redis down, it does not fail."""
        try:
            return bool(await self.redis.ping())
        except FAILURES:
            return False

    async def close(self) -> None:
        await self.redis.aclose()


@contextlib.asynccontextmanager
async def guard() -> AsyncIterator[None]:
    """Turn any Redis failure into DependencyUnavailable (503), never a 500."""
    try:
        yield
    except OutOfMemoryError as exc:
        raise StoreFull() from exc
    except ResponseError as exc:
        # Inside a script Redis' OOM error arrives wrapped ("Error running script ...
        # -OOM command not allowed"), as a plain ResponseError.
        if _OOM in str(exc):
            raise StoreFull() from exc
        raise DependencyUnavailable("redis", str(exc) or type(exc).__name__) from exc
    except FAILURES as exc:
        raise DependencyUnavailable("redis", str(exc) or type(exc).__name__) from exc
