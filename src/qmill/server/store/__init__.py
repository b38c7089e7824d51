"""Everything qmill keeps in Redis, one module per concern over one shared client.

- `client`: the connection pool, its retry policy, and Redis errors as 503s.
- `tasks`: task records and their atomic transitions (`Outcome`, `StartOutcome`).
- `waiters`: long-poll waits for a task to become terminal (pub/sub).
- `batches`: a batch's ordered task ids.
- `listing`: per-tenant indexes of tasks (and their tags), read a page at a time.
- `idempotency`: Idempotency-Key bindings.
- `limits`: per-tenant token bucket and in-flight cap.
- `quotas`: per-tenant storage quota (bytes of stored records).
- `answers`: how an answer is stored (plain, or compressed when big).
- `polls`: per-tenant cap on open long-polls (and, `events.stream_slots`, event streams).
- `events`: change events of task records, shared by a process's event streams.
- `heartbeats`: worker liveness keys.

Every key prefix is in `qmill.server.constants`. A process opens one `Stores` and
hands each caller the concern it needs.
"""

from __future__ import annotations

from dataclasses import dataclass

from qmill.server.config import RedisSettings
from qmill.server.store.batches import Batches
from qmill.server.store.client import RedisClient
from qmill.server.store.events import EventHub, stream_slots
from qmill.server.store.heartbeats import Heartbeats
from qmill.server.store.idempotency import Binding, IdempotencyKeys
from qmill.server.store.limits import Limits
from qmill.server.store.listing import Listing
from qmill.server.store.polls import LongPolls
from qmill.server.store.quotas import Charge, Quotas
from qmill.server.store.records import Answer, Outcome, StartedTask, StartOutcome
from qmill.server.store.tasks import TaskStore
from qmill.server.store.waiters import Waiters

__all__ = [
    "Answer",
    "Batches",
    "Binding",
    "Charge",
    "EventHub",
    "Heartbeats",
    "IdempotencyKeys",
    "Limits",
    "Listing",
    "LongPolls",
    "Outcome",
    "Quotas",
    "RedisClient",
    "StartOutcome",
    "StartedTask",
    "Stores",
    "TaskStore",
    "Waiters",
]


@dataclass(frozen=True, slots=True)
class Stores:
    """The store modules of one process, all over the same `RedisClient`."""

    client: RedisClient
    tasks: TaskStore
    waiters: Waiters
    batches: Batches
    idempotency: IdempotencyKeys
    limits: Limits
    heartbeats: Heartbeats
    quotas: Quotas
    polls: LongPolls
    listing: Listing
    events: EventHub
    streams: LongPolls

    @classmethod
    def connect(
        cls, settings: RedisSettings, *, socket_timeout: float | None, retries: int = 0
    ) -> Stores:
        """`open` with every connection setting of ``[redis]`` (its URL, or its Sentinels;
        the replicas a write waits for): what the functions, the worker and the CLI use."""
        client = RedisClient(
            settings.url,
            socket_timeout=socket_timeout,
            retries=retries,
            sentinels=settings.sentinel_addresses,
            master=settings.sentinel_master,
            replicas_to_ack=settings.min_replicas_to_ack,
            ack_timeout=settings.replica_ack_timeout_seconds,
        )
        return cls.over(client, result_ttl_seconds=settings.result_ttl_seconds)

    @classmethod
    def open(
        cls,
        url: str,
        *,
        result_ttl_seconds: int,
        socket_timeout: float | None,
        retries: int = 0,
    ) -> Stores:
        """Create the client and every store over it; nothing connects until first use.

        Args:
            url: ``redis://`` URL.
            result_ttl_seconds: how long task records (and batches) are kept.
            socket_timeout: per-call timeout; None for the worker, whose event loop
                freezes while a simulation runs in a thread.
            retries: retries of a call that lost its connection (0: fail fast, 503).
        """
        client = RedisClient(url, socket_timeout=socket_timeout, retries=retries)
        return cls.over(client, result_ttl_seconds=result_ttl_seconds)

    @classmethod
    def over(cls, client: RedisClient, *, result_ttl_seconds: int) -> Stores:
        """Every store module over ``client``."""
        quotas = Quotas(client, result_ttl_seconds=result_ttl_seconds)
        tasks = TaskStore(client, result_ttl_seconds=result_ttl_seconds, quotas=quotas)
        return cls(
            client=client,
            tasks=tasks,
            waiters=Waiters(client, tasks),
            batches=Batches(client, tasks),
            idempotency=IdempotencyKeys(client),
            limits=Limits(client),
            heartbeats=Heartbeats(client),
            quotas=quotas,
            polls=LongPolls(client),
            listing=Listing(client),
            events=EventHub(client),
            streams=stream_slots(client),
        )

    async def ping(self) -> bool:
        return await self.client.ping()

    async def close(self) -> None:
        await self.waiters.close()
        await self.events.close()
        await self.client.close()
