"""The client's event-stream reader (`qmill.client_events`), against mock servers."""

from __future__ import annotations

import json

import httpx

from qmill.client import Client
from qmill.client_events import Event, parse
from tests.unit.test_client import FAST, TASK_ID, Recorder, answer, view


def sse(*frames: str) -> httpx.Response:
    body = "".join(frames).encode()
    return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})


def status(name: str, seq: int, with_id: bool = True) -> str:
    data = json.dumps({"task_id": TASK_ID, "status": name, "batch_id": None, "seq": seq})
    return (f"id: {seq}\n" if with_id else "") + f"event: status\ndata: {data}\n\n"


def result(seq: int) -> str:
    return f"id: {seq}\nevent: result\ndata: {json.dumps(view('completed'))}\n\n"


END = 'event: end\ndata: {"tasks":1}\n\n'


def test_the_parser_follows_the_sse_rules() -> None:
    lines = ["retry: 2000", "", ": ping", "", "id: 7", "event: status", 'data: {"a":', "data: 1}"]
    lines += ["", "data:plain", "", "id: 9", ""]
    assert list(parse(lines)) == [
        Event("status", {"a": 1}, "7"),
        Event("message", "plain"),
    ]


def test_wait_reads_the_stream_and_resumes_where_it_dropped() -> None:
    """The first stream drops after 'processing' (id 5): the second asks from 5 on."""
    server = Recorder(
        sse("retry: 2000\n\n", status("pending", 3), status("processing", 5)),
        sse(status("completed", 6, with_id=False), result(6), END),
        streams=True,
    )
    seen: list[str] = []
    with Client("http://qmill.test", transport=httpx.MockTransport(server), retry=FAST) as qm:
        task = qm.wait(TASK_ID, timeout=30, on_update=lambda t: seen.append(t.status))
    assert task.counts == {"00": 512, "11": 512}
    assert seen == ["pending", "processing", "completed", "completed"]
    first, second = server.requests
    assert first.url.params["task"] == TASK_ID and "last-event-id" not in first.headers
    assert second.headers["last-event-id"] == "5"


def test_wait_long_polls_when_the_stream_is_refused() -> None:
    server = Recorder(
        answer(429, {"detail": "too many streams"}, **{"Retry-After": "1"}),
        answer(200, view("completed")),
        streams=True,
    )
    with Client("http://qmill.test", transport=httpx.MockTransport(server), retry=FAST) as qm:
        assert qm.result(TASK_ID).counts == {"00": 512, "11": 512}
    assert [r.url.path for r in server.requests] == ["/events", f"/tasks/{TASK_ID}"]


def test_events_yields_each_change_until_end() -> None:
    server = Recorder(
        sse(status("processing", 5), status("completed", 6, False), result(6), END), streams=True
    )
    with Client("http://qmill.test", transport=httpx.MockTransport(server), retry=FAST) as qm:
        kinds = [event.event for event in qm.events(task=TASK_ID)]
    assert kinds == ["status", "status", "result", "end"]
