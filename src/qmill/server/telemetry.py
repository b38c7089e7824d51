"""OpenTelemetry traces from submit to result, exported over OTLP/HTTP when configured.

Spans: the function's HTTP request (`qmill.server.http.serve`, a SERVER span continuing a
caller's W3C ``traceparent``), the task's publish (a PRODUCER span in `Bus.publish`, its
context written into the NATS message headers with the request id), the worker's
handling of the delivery (a CONSUMER span continuing that context), and the result read
(the result function's SERVER span for ``GET /tasks/{id}``).

With ``[telemetry] otlp_endpoint`` empty (the default) no SDK is set up, and `span`,
`context_of` and `message_headers` do not call into OpenTelemetry at all: the API's own
no-op spans cost ~11 us of CPU a request (contexts attached and detached, os.environ
read), this ~1. When it is set, each process exports its spans in batches to
``<endpoint>/v1/traces`` under the service name ``qmill-<service>``; a test's SDK (an
in-memory exporter) is set with `use`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from contextlib import AbstractContextManager

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind

from qmill.server.config import TelemetrySettings
from qmill.server.constants import REQUEST_ID_HEADER
from qmill.server.logs import REQUEST_ID

__all__ = [
    "SpanKind",
    "active",
    "context_of",
    "message_headers",
    "setup_tracing",
    "span",
    "start_span",
    "tracer",
    "use",
]

log = logging.getLogger(__name__)

# The OTLP/HTTP path for spans under a collector's base URL (the OTLP specification's).
TRACES_PATH = "/v1/traces"
_configured = False


def setup_tracing(settings: TelemetrySettings, *, service: str) -> None:
    """Export this process's spans to ``settings.otlp_endpoint``; nothing when it is empty.

    Called once per process, next to `qmill.server.logs.setup_logging` (after any fork:
    the functions' gunicorn workers each set up their own).
    """
    global _configured
    if _configured or not settings.otlp_endpoint:
        return
    _configured = True
    # Imported only when on: a process that does not trace never loads the SDK.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    endpoint = settings.otlp_endpoint.rstrip("/") + TRACES_PATH
    provider = TracerProvider(resource=Resource.create({"service.name": f"qmill-{service}"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    use(provider)
    log.info("exporting traces", extra={"endpoint": endpoint})


# A proxy: it follows the global provider whenever one is set, so it can be made once.
_TRACER = trace.get_tracer("qmill")
# What `span` gives when nothing traces: reusable, it enters as the invalid span.
_NO_SPAN = contextlib.nullcontext(trace.INVALID_SPAN)


_active = False


def use(provider: trace.TracerProvider) -> None:
    """Record spans with ``provider`` from now on (`setup_tracing`'s, or a test's)."""
    global _active
    trace.set_tracer_provider(provider)
    _active = True


def active() -> bool:
    """Whether spans are recorded. A flag of ours: asking the API
    (`trace.get_tracer_provider`) reads os.environ each time, ~2 us."""
    return _active


def tracer() -> trace.Tracer:
    """qmill's tracer (the global provider's: a no-op one until one is set)."""
    return _TRACER


def span(
    name: str,
    kind: SpanKind,
    attributes: Mapping[str, str | int],
    context: otel_context.Context | None = None,
) -> AbstractContextManager[trace.Span]:
    """A span made current while the block runs, or nothing at all when nothing traces."""
    if not active():
        return _NO_SPAN
    return _TRACER.start_as_current_span(name, context=context, kind=kind, attributes=attributes)


def start_span(
    name: str,
    kind: SpanKind,
    attributes: Mapping[str, str | int],
    context: otel_context.Context | None = None,
) -> trace.Span:
    """A span to `end` explicitly (not made current), or the invalid span."""
    if not active():
        return trace.INVALID_SPAN
    return _TRACER.start_span(name, context=context, kind=kind, attributes=attributes)


def context_of(headers: Mapping[str, str] | None) -> otel_context.Context | None:
    """The trace context a message or request carries (``traceparent``), if any."""
    if not active():
        return None
    return propagate.extract(headers or {})


def message_headers(task_id: str) -> dict[str, str]:
    """The NATS headers of a task's message: its dedup id, the request id of the request
    that submitted it, and the current span's trace context (W3C ``traceparent``)."""
    headers = {"Nats-Msg-Id": task_id}
    request_id = REQUEST_ID.get()
    if request_id is not None:
        headers[REQUEST_ID_HEADER] = request_id
    if active():
        propagate.inject(headers)
    return headers
