"""Batches: the ordered list of a batch's task ids, kept as long as its task records.

The list is written with the records, in one step (`TaskStore.create_many`), so a batch
refused halfway leaves no list behind.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from qmill.server import constants
from qmill.server.errors import TaskNotFound
from qmill.server.models import TaskStatus, TaskView
from qmill.server.store.client import RedisClient, guard
from qmill.server.store.tasks import TaskStore


class Head(NamedTuple):
    """What a batch's waits and cancels need of a task: its status and owner."""

    task_id: str
    status: TaskStatus
    owner: str | None


class Batches:
    """Read a batch's tasks back at once."""

    def __init__(self, client: RedisClient, tasks: TaskStore) -> None:
        self._redis = client.redis
        self._tasks = tasks

    async def task_ids(self, batch_id: str) -> list[str]:
        """The batch's task ids in submission order; TaskNotFound if there is no batch."""
        async with guard():
            task_ids = await self._redis.lrange(constants.batch_key(batch_id), 0, -1)
        if not task_ids:
            raise TaskNotFound("Batch")
        return [str(task_id) for task_id in task_ids]

    async def get(self, batch_id: str, *, packed: bool = False) -> list[TaskView]:
        """Every task of a batch, in submission order (expired ones left out);
        ``packed`` as `TaskStore.get`."""
        return await self._tasks.get_many(await self.task_ids(batch_id), packed=packed)

    async def heads(self, task_ids: Sequence[str]) -> list[Head]:
        """Status and owner of each task that still exists, in one round trip: no
        program, no answer (a 1000-task batch's heads are a few tens of kB)."""
        pipe = self._redis.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.hmget(constants.task_key(task_id), "status", "owner")
        async with guard():
            rows = await pipe.execute()
        return [
            Head(task_id, TaskStatus(str(status)), str(owner) if owner else None)
            for task_id, (status, owner) in zip(task_ids, rows, strict=True)
            if status is not None
        ]
