"""Batches: the ordered list of a batch's task ids, kept as long as its task records.

The list is written with the records, in one step (`TaskStore.create_many`), so a batch
refused halfway leaves no list behind.
"""

from __future__ import annotations

from qmill.server import constants
from qmill.server.errors import TaskNotFound
from qmill.server.models import TaskView
from qmill.server.store.client import RedisClient, guard
from qmill.server.store.tasks import TaskStore


class Batches:
    """Read a batch's tasks back at once."""

    def __init__(self, client: RedisClient, tasks: TaskStore) -> None:
        self._redis = client.redis
        self._tasks = tasks

    async def get(self, batch_id: str, *, packed: bool = False) -> list[TaskView]:
        """Every task of a batch, in submission order (expired ones left out);
        ``packed`` as `TaskStore.get`."""
        async with guard():
            task_ids = await self._redis.lrange(constants.batch_key(batch_id), 0, -1)
        if not task_ids:
            raise TaskNotFound("Batch")
        return await self._tasks.get_many([str(task_id) for task_id in task_ids], packed=packed)
