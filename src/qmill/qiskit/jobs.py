"""Jobs: one ``POST /batches`` each, followed through ``qmill.client.Client``.

Both job kinds (`QmillJob` for `QmillBackend.run`, `QmillPrimitiveJob` for the
primitives) hold a `TaskBatch`: the batch id, its task ids in submission order and the
client. Why this shape:

* The batch is queued when ``run`` returns, all or nothing: a circuit the server
  refuses raises there, with its index, rather than inside ``result()`` later.
* ``result()`` long-polls each task in turn (``Client.wait``): the answer arrives the
  moment the last task finishes, with one request per task and no poll loop; a task
  that failed raises at once, naming its position.
* ``status()`` reads the whole batch with one ``GET /batches/{id}``.
* ``cancel()`` cancels every task still pending or running with one
  ``DELETE /batches/{id}``; the server stops a running simulation. A task that
  finished meanwhile keeps its result.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from qiskit.primitives import BasePrimitiveJob
from qiskit.providers import JobStatus, JobV1
from qiskit.providers.exceptions import JobError
from qiskit.result import Result

from qmill.client import Client, QmillClientError
from qmill.client_core import Call, checked, raise_for_task

ResultT = TypeVar("ResultT")

# A task's status -> the JobStatus of a batch whose tasks are all in it.
_FINAL = {"completed": JobStatus.DONE, "cancelled": JobStatus.CANCELLED, "failed": JobStatus.ERROR}


def batch_status(statuses: Iterable[str]) -> JobStatus:
    """One status for a batch of tasks.

    Final only when every task is: DONE if all completed, else CANCELLED if any was
    cancelled (someone meant to stop it), else ERROR. Before that QUEUED while nothing
    has started, RUNNING from the first start on.
    """
    seen = set(statuses)
    if seen <= set(_FINAL):
        for status in ("cancelled", "failed"):
            if status in seen:
                return _FINAL[status]
        return JobStatus.DONE
    if seen <= {"pending"}:
        return JobStatus.QUEUED
    return JobStatus.RUNNING


class TaskBatch:
    """The tasks of one ``POST /batches``, in submission order."""

    def __init__(self, client: Client, batch_id: str, task_ids: Sequence[str]) -> None:
        self.client = client
        self.batch_id = batch_id
        self.task_ids = list(task_ids)

    @classmethod
    def submit(cls, client: Client, bodies: Sequence[Mapping[str, Any]]) -> TaskBatch:
        """Queue ``bodies`` as one batch (all or nothing).

        Each body carries its own options (a PUB's parameters and observables), which
        ``Client.submit_batch`` (one set of options for every circuit) cannot send, so
        the request is made here through the client's transport: the same retries,
        authentication and errors. Like ``submit_batch``, it sends an Idempotency-Key,
        so a retry after a broken connection returns the batch if it was queued.
        """
        if not bodies:
            return cls(client, str(uuid.uuid4()), [])
        key = {"Idempotency-Key": str(uuid.uuid4())}  # every retry is safe, as submit_batch's
        call = Call("POST", "/batches", json={"tasks": list(bodies)}, headers=key)
        answer = checked(client._send(call))
        return cls(client, str(answer["batch_id"]), [str(t) for t in answer["task_ids"]])

    def views(self) -> list[dict[str, Any]]:
        """Every task's current ``GET /tasks/{id}`` body, from one ``GET /batches/{id}``."""
        if not self.task_ids:
            return []
        answer = checked(
            self.client._send(Call("GET", f"/batches/{quote(self.batch_id, safe='')}"))
        )
        return list(answer["tasks"])

    def status(self) -> JobStatus:
        return batch_status(view["status"] for view in self.views())

    def wait(self, timeout: float | None = None) -> list[dict[str, Any]]:
        """Every task's body once all completed; `TaskFailedError` / `TaskCancelledError`
        (with a note naming its position) as soon as one did not, `ResultTimeoutError`
        after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        views = []
        for index, task_id in enumerate(self.task_ids):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            task = self.client.wait(task_id, timeout=left)
            try:
                raise_for_task(task)
            except QmillClientError as exc:
                exc.add_note(f"task {index} of batch {self.batch_id}")
                raise
            views.append(task.raw)
        return views

    def cancel(self) -> bool:
        """Cancel every unfinished task (one ``DELETE /batches/{id}``); True if at least
        one was cancelled by this call."""
        if not self.task_ids:
            return False
        before = self.views()
        if all(view["status"] in _FINAL for view in before):
            return False
        was: int = sum(view["status"] == "cancelled" for view in before)
        return self.client.cancel_batch(self.batch_id).counts.get("cancelled", 0) > was


class QmillJob(JobV1):  # type: ignore[misc]
    """What `QmillBackend.run` returns: a `JobV1` over one batch, one task per circuit."""

    def __init__(
        self, backend: Any, batch: TaskBatch, finish: Callable[[list[dict[str, Any]]], Result]
    ) -> None:
        super().__init__(backend, batch.batch_id)
        self._batch = batch
        self._finish = finish
        self._result: Result | None = None

    @property
    def task_ids(self) -> list[str]:
        return list(self._batch.task_ids)

    def submit(self) -> None:
        raise JobError("this job was queued when QmillBackend.run returned it")

    def result(self, timeout: float | None = None) -> Result:
        """Wait for every circuit and return the `Result` (``get_counts(i)``,
        ``get_memory(i)`` with ``memory=True``)."""
        if self._result is None:
            self._result = self._finish(self._batch.wait(timeout))
        return self._result

    def status(self) -> JobStatus:
        return self._batch.status()

    def cancel(self) -> bool:
        return self._batch.cancel()


class QmillPrimitiveJob(BasePrimitiveJob[ResultT, JobStatus], Generic[ResultT]):  # type: ignore[misc]
    """What `SamplerV2.run` and `EstimatorV2.run` return: one batch, one task per PUB."""

    def __init__(self, batch: TaskBatch, finish: Callable[[list[dict[str, Any]]], ResultT]) -> None:
        super().__init__(batch.batch_id)
        self._batch = batch
        self._finish = finish
        self._result: ResultT | None = None

    @property
    def task_ids(self) -> list[str]:
        return list(self._batch.task_ids)

    def result(self, timeout: float | None = None) -> ResultT:
        """Wait for every PUB and return the `PrimitiveResult`."""
        if self._result is None:
            self._result = self._finish(self._batch.wait(timeout))
        return self._result

    def status(self) -> JobStatus:
        return self._batch.status()

    def done(self) -> bool:
        return self.status() is JobStatus.DONE

    def running(self) -> bool:
        return self.status() is JobStatus.RUNNING

    def cancelled(self) -> bool:
        return self.status() is JobStatus.CANCELLED

    def in_final_state(self) -> bool:
        return self.status() in (JobStatus.DONE, JobStatus.CANCELLED, JobStatus.ERROR)

    def cancel(self) -> bool:
        return self._batch.cancel()
