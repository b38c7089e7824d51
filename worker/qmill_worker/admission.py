"""What a worker takes on at once: a number of tasks (slots) and their simulation memory.

Both are held by the asyncio task that handles one delivery, and given back however
that task ends (finished, released, cancelled by its user or by a shutdown), so a
worker can never leak capacity and slowly stop pulling.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any


class Slots:
    """The deliveries a worker handles at once, one asyncio task each.

    The pull loop fetches only as many messages as there are free slots (never more
    than it can start, so none waits unacknowledged on a busy worker). A slot is taken
    when `start` creates the handling task, not when that task first runs, so the pull
    loop's next count already sees it; and it is given back by the task's done callback,
    which runs however the task ended, even cancelled before it ever ran.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self._tasks: set[asyncio.Task[None]] = set()
        self._freed = asyncio.Event()

    def __len__(self) -> int:
        return len(self._tasks)

    @property
    def free(self) -> int:
        return self.total - len(self._tasks)

    @property
    def tasks(self) -> set[asyncio.Task[None]]:
        """A copy of the handling tasks that hold a slot now."""
        return set(self._tasks)

    def start(self, handling: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``handling`` in a task that holds a slot until it is done."""
        if not self.free:
            handling.close()
            raise RuntimeError("no free slot: the pull loop fetched more than it may run")
        task = asyncio.create_task(handling)
        self._tasks.add(task)
        task.add_done_callback(self._release)
        return task

    def _release(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._freed.set()

    async def wait_free(self, stopping: asyncio.Event) -> int:
        """Wait until a slot is free, then say how many are; 0 once ``stopping`` is set."""
        while not self.free and not stopping.is_set():
            self._freed.clear()
            freed = asyncio.ensure_future(self._freed.wait())
            stop = asyncio.ensure_future(stopping.wait())
            try:
                await asyncio.wait({freed, stop}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                freed.cancel()
                stop.cancel()
        return 0 if stopping.is_set() else self.free


class MemoryBudget:
    """Bounds the simulation state of the tasks running at once, not just their count.

    A task waits (still `pending`, its message kept alive) until its state fits. A task
    larger than the whole budget is refused at submit; one that still arrives (an older
    message, a changed limit) runs alone rather than never.
    """

    def __init__(self, total_bytes: int) -> None:
        self.total = total_bytes
        self.used = 0
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def reserve(self, nbytes: int) -> AsyncIterator[None]:
        nbytes = min(max(nbytes, 0), self.total)
        async with self._changed:
            await self._changed.wait_for(lambda: self.used + nbytes <= self.total)
            self.used += nbytes
        try:
            yield
        finally:
            async with self._changed:
                self.used -= nbytes
                self._changed.notify_all()
