"""Server-Sent Events for the clients: ``GET /events`` read as `Event`s, resumed with
``Last-Event-ID`` when the connection drops.

A small parser of the SSE wire format (the WHATWG rules: ``field: value`` lines, a
blank line ends an event, ``:`` lines are comments) rather than a dependency: the
client needs only httpx, and these forty lines are all of SSE that qmill's server
sends. Both clients share everything here but the I/O (`qmill.client`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from qmill.client_core import Task, response_error
from qmill.client_errors import APIError, ServerUnreachableError

# Dropped connections in a row (no event between them) a stream is resumed after,
# before the caller gets the error (or `wait` falls back to long-polling).
MAX_RESUMES = 5
MEDIA_TYPE = "text/event-stream"


@dataclass(frozen=True)
class Event:
    """One event of a stream: ``status`` (data: task_id, status, batch_id, seq),
    ``result`` (data: the task, as `Client.get` reads it) or ``end`` (every task is
    terminal; the stream is over)."""

    event: str
    data: Any = None
    id: str | None = None


@dataclass
class Parser:
    """SSE lines in, events out (`feed` returns one when a blank line ends it)."""

    _event: str = ""
    _data: list[str] = field(default_factory=list)
    _id: str | None = None
    last_id: str | None = None

    def feed(self, line: str) -> Event | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment: the server's heartbeat
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        return None  # "retry" and unknown fields: the client keeps its own policy

    def _dispatch(self) -> Event | None:
        if self._id is not None:
            self.last_id = self._id
        if not self._data and not self._event:
            self._id = None
            return None
        raw = "\n".join(self._data)
        try:
            data: Any = json.loads(raw) if raw else None
        except ValueError:
            data = raw
        found = Event(self._event or "message", data, self._id)
        self._event, self._data, self._id = "", [], None
        return found


def parse(lines: Iterable[str]) -> Iterator[Event]:
    """Every event in ``lines`` (without their line endings)."""
    parser = Parser()
    for line in lines:
        event = parser.feed(line)
        if event is not None:
            yield event


def events_request(
    task_id: str | None, batch_id: str | None, last_id: str | None
) -> tuple[dict[str, str], dict[str, str]]:
    """(query, headers) of ``GET /events`` for one task or batch, resuming after
    ``last_id``."""
    if (task_id is None) == (batch_id is None):
        raise ValueError("give exactly one of task= or batch=")
    params = {"task": str(task_id)} if task_id is not None else {"batch": str(batch_id)}
    headers = {"Accept": MEDIA_TYPE, "Cache-Control": "no-cache"}
    if last_id is not None:
        headers["Last-Event-ID"] = quote(last_id, safe="")
    return params, headers


def _read_until(timeout: httpx.Timeout, until: float | None) -> httpx.Timeout:
    """The client's timeouts, with a read that gives up at the monotonic ``until``: a
    stream between heartbeats would otherwise hold a caller past its deadline."""
    if until is None:
        return timeout
    remaining = max(0.05, until - time.monotonic())
    read = remaining if timeout.read is None else min(timeout.read, remaining)
    return httpx.Timeout(connect=timeout.connect, read=read, write=timeout.write, pool=timeout.pool)


def _resume_pause(drops: int) -> float:
    return min(2.0, 0.25 * 2.0**drops)


def iter_events(
    http: httpx.Client,
    task_id: str | None,
    batch_id: str | None,
    last_id: str | None = None,
    until: float | None = None,
) -> Iterator[Event]:
    """The events of ``GET /events`` on ``http``, resuming a dropped or closed stream
    with ``Last-Event-ID`` (`MAX_RESUMES` in a row without a line between them, then
    `ServerUnreachableError`), until ``end``; stops early, without error, once the
    monotonic ``until`` has passed. An error answer raises its `APIError`."""
    drops = 0
    while until is None or time.monotonic() < until:
        params, headers = events_request(task_id, batch_id, last_id)
        parser = Parser(last_id=last_id)
        try:
            timeout = _read_until(http.timeout, until)
            with http.stream(
                "GET", "/events", params=params, headers=headers, timeout=timeout
            ) as response:
                if not response.is_success:
                    response.read()
                    raise response_error(response)
                if not response.headers.get("content-type", "").startswith(MEDIA_TYPE):
                    raise APIError("not an event stream", status=response.status_code)
                for line in response.iter_lines():
                    drops = 0
                    event = parser.feed(line)
                    if event is not None:
                        yield event
                        if event.event == "end":
                            return
                    if until is not None and time.monotonic() >= until:
                        return
        except httpx.TransportError as exc:
            if until is not None and time.monotonic() >= until:
                return
            if drops >= MAX_RESUMES:
                raise ServerUnreachableError(f"event stream: {type(exc).__name__}") from exc
        last_id = parser.last_id
        drops += 1
        time.sleep(_resume_pause(drops))


async def aiter_events(
    http: httpx.AsyncClient,
    task_id: str | None,
    batch_id: str | None,
    last_id: str | None = None,
    until: float | None = None,
) -> AsyncIterator[Event]:
    """The asyncio twin of `iter_events`."""
    drops = 0
    while until is None or time.monotonic() < until:
        params, headers = events_request(task_id, batch_id, last_id)
        parser = Parser(last_id=last_id)
        try:
            timeout = _read_until(http.timeout, until)
            async with http.stream(
                "GET", "/events", params=params, headers=headers, timeout=timeout
            ) as response:
                if not response.is_success:
                    await response.aread()
                    raise response_error(response)
                if not response.headers.get("content-type", "").startswith(MEDIA_TYPE):
                    raise APIError("not an event stream", status=response.status_code)
                async for line in response.aiter_lines():
                    drops = 0
                    event = parser.feed(line)
                    if event is not None:
                        yield event
                        if event.event == "end":
                            return
                    if until is not None and time.monotonic() >= until:
                        return
        except httpx.TransportError as exc:
            if until is not None and time.monotonic() >= until:
                return
            if drops >= MAX_RESUMES:
                raise ServerUnreachableError(f"event stream: {type(exc).__name__}") from exc
        last_id = parser.last_id
        drops += 1
        await asyncio.sleep(_resume_pause(drops))


def status_task(data: Any) -> Task:
    """A ``status`` event as a `Task` (its status and batch only: ``result`` has the rest)."""
    body = dict(data) if isinstance(data, dict) else {}
    return Task.from_json({**body, "shots": 0})
