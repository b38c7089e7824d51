"""The one Redis connection pool a process shares between every store module.

Each concern (tasks, idempotency, limits, ...) is a module over this client, as
dramatiq's Redis backends are: they share the pool and the error mapping, and each
registers its own Lua scripts.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.asyncio.connection import ConnectionPool, SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, OutOfMemoryError, RedisError, ResponseError
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


class _SentinelBlockingPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """redis-py's Sentinel pool (each new connection asks the Sentinels for the primary,
    and a connection to a primary that was demoted is dropped) that waits for a free
    connection as `aioredis.BlockingConnectionPool` does, instead of failing at once."""


class RedisClient:
    """An asyncio Redis client with qmill's timeouts and retry policy.

    With ``sentinels`` (host, port pairs) it connects to whichever node the Sentinels
    name primary of ``master``, asked again on every new connection: after a failover
    the calls in flight on the old primary fail (a 503 from a function, a retry in the
    worker) and the next ones go to the new primary, without a restart. The password,
    username and db still come from ``url``; its host and port are then unused.
    """

    def __init__(
        self,
        url: str,
        *,
        socket_timeout: float | None,
        retries: int = 0,
        sentinels: Sequence[tuple[str, int]] = (),
        master: str = "qmill",
        replicas_to_ack: int = 0,
        ack_timeout: float = 0.5,
    ) -> None:
        # Functions use retries=0 so a dead Redis answers 503 fast; the worker retries
        # because dropping a finished result on a blip would waste the simulation.
        retry = Retry(ExponentialBackoff(cap=2.0, base=0.05), retries) if retries else None
        # A call waits (up to the socket timeout) for a free connection rather than failing
        # at once, as redis-py's default pool does: one finished task woke 300 long-polls,
        # whose 300 reads at once got "Too many connections" (503) for 130 of them.
        options: dict[str, Any] = {
            "max_connections": MAX_CONNECTIONS,
            "timeout": socket_timeout,
            "decode_responses": True,
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": socket_timeout,
            "retry": retry,
            "retry_on_error": [RedisConnectionError, RedisTimeoutError] if retries else None,
            "health_check_interval": 30,
        }
        self._sentinel: Sentinel | None = None
        pool: ConnectionPool
        if sentinels:
            self._sentinel, pool = _sentinel_pool(url, list(sentinels), master, options)
        else:
            pool = aioredis.BlockingConnectionPool.from_url(url, **options)
        self.redis: aioredis.Redis = aioredis.Redis.from_pool(pool)
        # [redis] min_replicas_to_ack and replica_ack_timeout_seconds (see `acked`).
        self.replicas_to_ack = replicas_to_ack
        self.ack_timeout_ms = max(1, round(ack_timeout * 1000))

    def script(self, source: str) -> AsyncScript:
        """Register a Lua script; it is loaded by SHA on first use (EVALSHA, else EVAL)."""
        return self.redis.register_script(source)

    async def acked(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        """Run a write script whose effect qmill is about to acknowledge (a submit's 201,
        a worker's ack of its task message); with ``replicas_to_ack``, only once that
        many replicas have it (Redis WAIT), else DependencyUnavailable.

        WAIT waits for the writes of its own connection, so it is pipelined with the
        script: both go on one connection, in one round trip. By SHA, not as the
        pipeline's registered script, which would first cost a SCRIPT EXISTS round trip
        on every call; a server that does not know it yet (NOSCRIPT: nothing ran) is
        given it and asked again.
        """
        if not self.replicas_to_ack:
            return await script(keys=keys, args=args)
        for attempt in range(2):
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
                self.wait_replicas(pipe)
                reply, replicas = await pipe.execute(raise_on_error=False)
            if isinstance(reply, NoScriptError) and attempt == 0:
                script.sha = await self.redis.script_load(script.script)
                continue
            if isinstance(reply, Exception):
                raise reply
            break
        self.check_replicas(replicas)
        return reply

    def wait_replicas(self, pipe: Pipeline) -> None:
        """Queue WAIT after a pipeline's writes (its reply is the last; see `acked`)."""
        if self.replicas_to_ack:
            pipe.wait(self.replicas_to_ack, self.ack_timeout_ms)

    def check_replicas(self, replicas: object) -> None:
        """Refuse (503) a write fewer than ``replicas_to_ack`` replicas acknowledged: the
        primary may fail over without it."""
        if isinstance(replicas, Exception):
            raise DependencyUnavailable("redis", str(replicas) or type(replicas).__name__)
        if int(str(replicas)) < self.replicas_to_ack:
            raise DependencyUnavailable(
                "redis",
                f"write acknowledged by {replicas} of {self.replicas_to_ack} replicas "
                f"within {self.ack_timeout_ms} ms",
            )

    async def ping(self) -> bool:
        """False instead of an error: /health reports Redis down, it does not fail."""
        try:
            return bool(await self.redis.ping())
        except FAILURES:
            return False

    async def close(self) -> None:
        await self.redis.aclose()
        if self._sentinel is not None:
            await self._sentinel.aclose()


def _sentinel_pool(
    url: str, sentinels: list[tuple[str, int]], master: str, options: dict[str, Any]
) -> tuple[Sentinel, ConnectionPool]:
    """The Sentinels' client and a pool of connections to ``master``'s primary.

    The Sentinels are asked with the same timeouts (a dead one is skipped within the
    connect timeout), without the URL's password: a Sentinel has its own (none here).
    """
    parsed = dict(parse_url(url))
    ssl = parsed.pop("connection_class", None) is SSLConnection
    for key in ("host", "port", "path"):
        parsed.pop(key, None)
    timeouts = {k: v for k, v in options.items() if k.startswith("socket_")}
    # redis-py's Sentinel classes are not annotated.
    sentinel = Sentinel(sentinels, sentinel_kwargs={**timeouts, "decode_responses": True})  # type: ignore[no-untyped-call]
    pool = _SentinelBlockingPool(master, sentinel, ssl=ssl, **parsed, **options)  # type: ignore[no-untyped-call]
    return sentinel, pool


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
