"""What both clients share for ``GET /tasks``: the task summary, a page, the request.

`TaskSummary` mirrors the server's ``qmill.server.models.TaskSummary`` field for field
(tests/unit/test_listing.py keeps the two in step), as a plain dataclass: listing needs
only httpx, like the rest of the client.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypedDict, Unpack

import httpx

from qmill.client_core import TERMINAL_STATUSES, Call


def _when(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


@dataclass(frozen=True)
class TaskSummary:
    """A task as a listing shows it: its state and labels, not its answer
    (`Client.get` has that)."""

    task_id: str
    status: str
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    shots: int = 0
    qubits: int | None = None
    method: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    batch_id: str | None = None
    error: str | None = None
    # The whole JSON of the task in the listing, as the server sent it.
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> TaskSummary:
        return cls(
            task_id=str(body.get("task_id")),
            status=str(body.get("status")),
            created_at=_when(body.get("created_at")),
            started_at=_when(body.get("started_at")),
            completed_at=_when(body.get("completed_at")),
            shots=int(body.get("shots") or 0),
            qubits=body.get("qubits"),
            method=body.get("method"),
            tags=dict(body.get("tags") or {}),
            batch_id=body.get("batch_id"),
            error=body.get("error"),
            raw=dict(body),
        )

    @property
    def done(self) -> bool:
        """Terminal: completed, failed or cancelled."""
        return self.status in TERMINAL_STATUSES


@dataclass(frozen=True)
class TaskPage:
    """One page of a listing, newest first; ``next_cursor`` (None at the end) asks for
    the next. A page may be short, even empty, and still have one: the server bounds
    the work of each page, so follow it (`Client.iter_tasks` does)."""

    tasks: list[TaskSummary]
    next_cursor: str | None

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> TaskPage:
        tasks = [TaskSummary.from_json(t) for t in body.get("tasks") or []]
        cursor = body.get("next_cursor")
        return cls(tasks, str(cursor) if cursor else None)


class ListFilters(TypedDict, total=False):
    """What `Client.list_tasks` may filter by: ``status`` (one or several: any of),
    ``tags`` (all of), ``batch``, ``since`` (an aware datetime or RFC 3339 text),
    ``limit`` per page, and ``cursor`` (a page's ``next_cursor``)."""

    status: str | Iterable[str] | None
    tags: Mapping[str, str] | None
    batch: str | None
    since: datetime | str | None
    limit: int | None
    cursor: str | None


def list_call(**filters: Unpack[ListFilters]) -> Call:
    """``GET /tasks`` with these filters (repeated query parameters for the lists)."""
    status, tags = filters.get("status"), filters.get("tags")
    batch, since = filters.get("batch"), filters.get("since")
    limit, cursor = filters.get("limit"), filters.get("cursor")
    params: list[tuple[str, str | int | float | bool | None]] = []
    statuses = [status] if isinstance(status, str) else list(status or [])
    params += [("status", s) for s in statuses]
    params += [("tag", f"{key}:{value}") for key, value in (tags or {}).items()]
    if batch is not None:
        params.append(("batch", batch))
    if since is not None:
        if isinstance(since, datetime):
            if since.tzinfo is None:
                raise ValueError("since needs a time zone (datetime.now(UTC), not now())")
            since = since.isoformat()
        params.append(("since", since))
    if limit is not None:
        params.append(("limit", str(limit)))
    if cursor is not None:
        params.append(("cursor", cursor))
    return Call("GET", "/tasks", params=httpx.QueryParams(params))
