"""The worker's HTTP server on ``[worker] metrics_port``: ``/metrics``, ``/livez``, ``/readyz``.

It runs in a thread of its own (as prometheus_client's ``start_http_server`` did, which
it replaces), so it answers while the event loop is busy or frozen (the thread
executor freezes it while Aer runs). So ``/readyz`` asks nothing itself: it reads what
the loop last saw. NATS: the connection is up now. Redis: it took the worker's
heartbeat (every `HEARTBEAT_SECONDS`) within `HEARTBEAT_STALE_SECONDS`, the staleness
``qmill-worker --check`` also allows. Any other path is the metrics, as before.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

from qmill.server import metrics, routes
from qmill.server.probes import JSON_TYPE, LIVE_BODY, Readiness
from qmill_worker.consumer import HEARTBEAT_STALE_SECONDS, Worker

StartResponse = Callable[..., Any]


def readiness(worker: Worker) -> Readiness:
    """NATS connected, and Redis took a heartbeat lately (see the module docstring)."""
    seen = worker.redis_answered_at
    redis_ok = seen is not None and time.monotonic() - seen <= HEARTBEAT_STALE_SECONDS
    return Readiness({"nats": worker.bus.connected, "redis": redis_ok})


def app(worker: Worker) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    """The WSGI app: the probes by path, the Prometheus registry on any other."""
    exposition = make_wsgi_app(metrics.EXPOSED)

    def answer(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path not in routes.PROBES:
            return exposition(environ, start_response)  # type: ignore[no-any-return]
        if path == routes.LIVEZ_PATH:
            status, body = "200 OK", LIVE_BODY
        else:
            state = readiness(worker)
            status = "200 OK" if state.ready else "503 Service Unavailable"
            body = state.body()
        headers = [("Content-Type", JSON_TYPE), ("Content-Length", str(len(body)))]
        start_response(status, headers)
        return [body]

    return answer


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Not a line per scrape or probe on stderr."""


def start(port: int, worker: Worker, host: str = "0.0.0.0") -> WSGIServer:
    """Serve in a daemon thread; every interface, as ``start_http_server`` did (the
    scraper and kubelet come from outside the container)."""
    server = make_server(host, port, app(worker), _Server, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name="qmill-metrics", daemon=True).start()
    return server
