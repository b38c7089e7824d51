"""Request ids, readiness answers and trace propagation: the pure parts (the processes'
side is tests/e2e/test_observability.py)."""

from __future__ import annotations

import json
import logging

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from qmill.server import constants, logs, telemetry
from qmill.server.probes import Readiness


@pytest.mark.parametrize(
    "given", ["abc", "0af7651916cd43dd8448eb211c80319c", "a.b:c/d+e=f-g_h", "x" * 128]
)
def test_a_valid_request_id_is_kept(given: str) -> None:
    assert logs.request_id_of(given) == given
    assert logs.request_id_of(given.encode()) == given


@pytest.mark.parametrize("given", [None, "", "two words", "x" * 129, "-lead", 'q"uote', "é"])
def test_any_other_is_replaced_by_a_new_one(given: str | None) -> None:
    made = logs.request_id_of(given)
    assert len(made) == 32 and int(made, 16) >= 0
    assert made != logs.request_id_of(given)


def test_every_line_logged_in_a_request_names_it(caplog: pytest.LogCaptureFixture) -> None:
    record = logging.LogRecord("qmill", logging.INFO, __file__, 1, "m", None, None)
    token = logs.REQUEST_ID.set("req-7")
    try:
        logs._RequestIdFilter().filter(record)
    finally:
        logs.REQUEST_ID.reset(token)
    assert record.request_id == "req-7"


def test_readiness_names_what_is_down() -> None:
    ready = Readiness({"nats": True, "redis": True})
    assert ready.status_code == 200
    assert json.loads(ready.body()) == {
        "status": "ready",
        "down": [],
        "checks": {"nats": True, "redis": True},
    }
    gateway = Readiness({"submit": True, "result": False}, {"result": ["redis"]})
    assert gateway.status_code == 503
    assert json.loads(gateway.body())["down"] == ["result: redis"]


def test_off_a_message_carries_the_request_id_and_no_trace() -> None:
    assert not telemetry.active()
    token = logs.REQUEST_ID.set("req-9")
    try:
        headers = telemetry.message_headers("t-1")
    finally:
        logs.REQUEST_ID.reset(token)
    assert headers == {"Nats-Msg-Id": "t-1", constants.REQUEST_ID_HEADER: "req-9"}
    assert telemetry.context_of(headers) is None


def test_on_the_worker_span_continues_the_publish(monkeypatch: pytest.MonkeyPatch) -> None:
    """The context a publish writes into the message is the one a consumer's span continues
    (W3C traceparent), with the SDK's in-memory exporter."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    # One process-wide provider: this test's, for this test only.
    monkeypatch.setattr(telemetry, "_TRACER", provider.get_tracer("qmill"))
    monkeypatch.setattr(telemetry, "_active", True)
    with telemetry.span("qmill.publish", telemetry.SpanKind.PRODUCER, {"qmill.task_id": "t"}):
        headers = telemetry.message_headers("t")
    assert headers["traceparent"].startswith("00-")
    consumer = telemetry.start_span(
        "qmill.execute", telemetry.SpanKind.CONSUMER, {}, telemetry.context_of(headers)
    )
    consumer.end()
    publish, execute = exporter.get_finished_spans()
    assert execute.parent is not None and publish.context is not None
    assert execute.parent.span_id == publish.context.span_id
    assert execute.context is not None
    assert execute.context.trace_id == publish.context.trace_id
