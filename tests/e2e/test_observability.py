"""What operators see of a running system, read from the real processes: probes on every
HTTP server, one request id from the gateway to the function's and the worker's log
lines, and one trace from submit to result exported over OTLP/HTTP.

One system in the split topology (qmill-gateway, a process per function, a worker), as
deployments run it, with ``[telemetry] otlp_endpoint`` pointing at `Receiver`: a tiny
OTLP/HTTP collector on loopback that decodes what the SDK's real exporter POSTs.
"""

from __future__ import annotations

import gzip
import os
import signal
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from qmill.server.launcher import Launcher
from qmill.server.processes import Process
from qmill.server.telemetry import TRACES_PATH
from tests.conftest import BELL, REPO, free_port, wait_until

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]


class Receiver(ThreadingHTTPServer):
    """Takes ``POST /v1/traces`` (OTLP/HTTP, protobuf) and keeps every span."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.spans: list[Span] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def take(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes = {
                        a.key: getattr(a.value, a.value.WhichOneof("value"))
                        for a in span.attributes
                    }
                    with self.lock:
                        self.spans.append(
                            Span(
                                resource["service.name"],
                                span.name,
                                span.kind,
                                span.trace_id.hex(),
                                span.span_id.hex(),
                                span.parent_span_id.hex(),
                                attributes,
                            )
                        )


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        status = 404
        if self.path == TRACES_PATH and self.headers["Content-Type"] == "application/x-protobuf":
            self.server.take(body)
            status = 200
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[Launcher]:
    config = {
        "embedded": {"topology": "split"},
        "log": {"format": "json"},
        "telemetry": {"otlp_endpoint": receiver.url},
        "worker": {"metrics_port": free_port()},
    }
    with pytest.MonkeyPatch.context() as env:
        # The SDK's batch processor exports every 5 s by default; a test waits less.
        env.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
        launcher = Launcher(tmp_path_factory.mktemp("observability"), config, cwd=REPO)
    try:
        launcher.start(workers=1)
        launcher.wait_healthy()
        yield launcher
    finally:
        launcher.stop(kill=True)


def service(system: Launcher, name: str) -> Process:
    (process,) = [p for p in system.services if p.name == name]
    return process


def test_a_request_id_and_a_trace_from_submit_to_result(
    system: Launcher, receiver: Receiver
) -> None:
    request_id = f"e2e-{uuid.uuid4()}"
    with httpx.Client(base_url=system.url, timeout=30) as client:
        created = client.post(
            "/tasks",
            json={"quantum_circuit": BELL, "shots": 16},
            headers={"X-Request-ID": request_id},
        )
        assert created.status_code == 201
        assert created.headers["x-request-id"] == request_id
        task_id = created.json()["task_id"]
        done = client.get(f"/tasks/{task_id}", params={"wait": 20})
        assert done.json()["status"] == "completed"
        # Without one, or with one that is not valid, the gateway makes one.
        for given in ({}, {"X-Request-ID": "two words"}, {"X-Request-ID": "x" * 129}):
            made = client.get("/health", headers=given)
            assert len(made.headers["x-request-id"]) == 32, given
        # Refused by the gateway itself: the answer carries it too.
        assert (
            client.get("/nowhere", headers={"X-Request-ID": "r404"}).headers["x-request-id"]
            == "r404"
        )

    # Every line the submit function and the worker logged about the task names the request.
    submit_lines = [e for e in service(system, "submit").events() if e.get("task_id") == task_id]
    assert [e["message"] for e in submit_lines] == ["task accepted"]
    assert {e.get("request_id") for e in submit_lines} == {request_id}
    wait_until(lambda: any(e.get("task_id") == task_id for e in system.workers[0].events()), 10)
    worker_lines = [e for e in system.workers[0].events() if e.get("task_id") == task_id]
    assert {"task started", "task completed"} <= {e["message"] for e in worker_lines}
    assert {e.get("request_id") for e in worker_lines} == {request_id}

    # One trace: submit's request -> the publish -> the worker's execution; and the read.
    def spans() -> dict[str, Span]:
        with receiver.lock:
            return {s.name: s for s in receiver.spans if task_id in s.attributes.values()}

    wanted = {"qmill.publish", "qmill.execute", "GET /tasks/{task_id}"}
    wait_until(lambda: wanted <= set(spans()), 15, lambda: receiver.spans)
    got = spans()
    with receiver.lock:
        request = next(
            s for s in receiver.spans if s.attributes.get("qmill.request_id") == request_id
        )
    publish, execute, read = got["qmill.publish"], got["qmill.execute"], got["GET /tasks/{task_id}"]
    assert (request.service, request.name, request.kind) == ("qmill-functions", "POST /tasks", 2)
    assert publish.trace_id == execute.trace_id == request.trace_id
    assert publish.parent_id == request.span_id and publish.kind == 4  # PRODUCER
    assert execute.parent_id == publish.span_id and execute.kind == 5  # CONSUMER
    assert execute.service == "qmill-worker"
    assert read.service == "qmill-functions" and read.kind == 2  # SERVER
    assert read.attributes["http.response.status_code"] == 200


def test_every_process_answers_its_probes(system: Launcher) -> None:
    worker_port = system.settings.worker.metrics_port
    with httpx.Client(timeout=10) as client:
        for base in (system.url, f"http://127.0.0.1:{worker_port}"):
            live = client.get(f"{base}/livez")
            assert (live.status_code, live.json()) == (200, {"status": "alive"}), base
            assert client.get(f"{base}/readyz").json()["status"] == "ready", base
        assert client.get(f"{system.url}/readyz").json()["checks"] == {
            "submit": True,
            "result": True,
            "health": True,
        }
        # A function behind the gateway gone: the gateway is not ready, and says which.
        result = service(system, "result")
        os.killpg(result.pid, signal.SIGKILL)  # gunicorn's arbiter and its workers
        assert result.proc is not None
        result.proc.wait()
        unready = client.get(f"{system.url}/readyz")
        assert unready.status_code == 503
        assert unready.json()["down"] == ["result"]
        assert client.get(f"{system.url}/livez").status_code == 200
