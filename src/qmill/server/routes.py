"""The route table: every (method, path) of the public API, who answers it, and how it is named.

One table serves every router. qmill-gateway picks the function for a path from it,
each function dispatches its own share of it to handlers registered by operation name,
the OpenAPI document lists its paths from it, and `constants.ROUTES` derives from it the
form that nginx, the Kubernetes Ingress and the Cloud Run URL map are checked against.
All of them match a path with `Route.match`, so a path one router takes, the others
take too.

A path template has literal segments and at most one ``{name}`` segment, which stands
for exactly one non-empty path segment (an id). ``/`` is exact: the page, not every path.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Final

_PARAM = re.compile(r"\{([a-z_]+)\}")
# A path with a control character (``/tasks/%0d%0a...``) is nobody's: no id contains one,
# and echoing it into a header or a log line is how responses get split.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Nor is a path with a "." or ".." segment: a proxy or client that normalises it
# (httpx, a browser) asks for another path than the one routed: ``/tasks/..`` was routed
# to the result function as the task "..", and httpx forwarded it as ``/``, the page.
_DOT_SEGMENT = re.compile(r"(^|/)\.\.?(/|$)")


@dataclass(frozen=True)
class Route:
    """One operation: ``method`` on paths fitting ``path``, answered by ``function``.

    ``operation`` is the OpenAPI ``operationId`` and the name the function registers
    its handler under, so a handler, its documentation and its route are one name.
    """

    method: str
    path: str
    function: str
    operation: str
    # The query parameters it takes; any other is refused (422), never ignored.
    query: tuple[str, ...] = ()
    # Answered as a stream that stays open (Server-Sent Events): proxies pass it on as it
    # comes, without buffering it or timing it out between events.
    streams: bool = False

    def __post_init__(self) -> None:
        if len(_PARAM.findall(self.path)) > 1 or not self.path.startswith("/"):
            raise ValueError(f"{self.path!r}: a route path has at most one {{name}} segment")

    @cached_property
    def _parts(self) -> tuple[str, str | None, str]:
        found = _PARAM.search(self.path)
        if found is None:
            return self.path, None, ""
        return self.path[: found.start()], found.group(1), self.path[found.end() :]

    @property
    def param(self) -> str | None:
        """The name of the id segment (``task_id``), or None for an exact path."""
        return self._parts[1]

    def match(self, path: str) -> dict[str, str] | None:
        """The path parameters (``{"task_id": "3f2c"}``) if ``path`` fits, else None."""
        head, name, tail = self._parts
        if _CONTROL.search(path) or _DOT_SEGMENT.search(path):
            return None
        if name is None:
            return {} if path == head else None
        if len(path) <= len(head) + len(tail) or not path.startswith(head):
            return None
        if not path.endswith(tail):
            return None
        value = path[len(head) : len(path) - len(tail)]
        return None if "/" in value else {name: value}

    @property
    def proxied(self) -> tuple[str, str, str]:
        """(method, pattern, function) as the proxies in front of the functions route it.

        A trailing id segment becomes a prefix (``/tasks/``: an Ingress Prefix path, a
        URL map ``/tasks/*``); one inside the path becomes ``{id}``, which nginx matches
        with a regular expression and the Ingress covers with the prefix above it.
        """
        head, name, tail = self._parts
        if name is None:
            return self.method, self.path, self.function
        return self.method, head if not tail else head + "{id}" + tail, self.function


# In match order. The result function owns the task resource: it reads (GET) and cancels
# (DELETE) it, draws its counts and its circuit, and serves the page that uses all of
# this. The health function serves the OpenAPI document and the backend's description
# because it is the one function open without a key: both say what the deployment is,
# before any task.
ROUTES: Final = (
    Route("POST", "/tasks", "submit", "submitTask"),
    Route("GET", "/tasks/{task_id}", "result", "getTask", ("wait", "include")),
    Route("DELETE", "/tasks/{task_id}", "result", "cancelTask"),
    Route("POST", "/batches", "submit", "submitBatch"),
    Route("GET", "/batches/{batch_id}", "result", "getBatch", ("wait",)),
    Route("DELETE", "/batches/{batch_id}", "result", "cancelBatch"),
    Route("GET", "/health", "health", "health"),
    Route("GET", "/openapi.json", "health", "openapi"),
    Route("GET", "/backend", "health", "getBackend"),
    Route("GET", "/tasks/{task_id}/histogram.svg", "result", "getHistogram", ("wait",)),
    Route("GET", "/tasks/{task_id}/diagram.txt", "result", "getDiagram"),
    # The submit function lists tasks: it owns the exact path /tasks (proxies route by
    # path only), and a listing reads indexes its submits write.
    Route(
        "GET",
        "/tasks",
        "submit",
        "listTasks",
        ("status", "tag", "batch", "since", "limit", "cursor"),
    ),
    Route("GET", "/events", "result", "streamEvents", ("task", "batch"), streams=True),
    Route("GET", "/", "result", "page"),
)


# Paths every qmill process answers about itself, on its own address, before any route:
# its metrics, and its probes (`qmill.server.probes`): ``/livez`` (the process serves;
# nothing else is asked) and ``/readyz`` (what it depends on answers: 200, else 503
# naming what does not). They are not routes: no proxy sends them to a function, since
# a proxy would pick one replica of one function to answer for all of them, and they
# are not in the OpenAPI document (the public API); kubelet, Cloud Run and Prometheus
# ask each instance directly. The gateway answers them for itself (its /readyz asks the
# functions behind it).
METRICS_PATH: Final = "/metrics"
LIVEZ_PATH: Final = "/livez"
READYZ_PATH: Final = "/readyz"
PROBES: Final = (LIVEZ_PATH, READYZ_PATH)
PROCESS_PATHS: Final = (METRICS_PATH, *PROBES)


def matching(path: str, function: str | None = None) -> Iterator[tuple[Route, dict[str, str]]]:
    """The routes (of one function, or all) that fit ``path``, in match order."""
    for route in ROUTES:
        if function is not None and route.function != function:
            continue
        params = route.match(path)
        if params is not None:
            yield route, params


def function_for(path: str) -> str | None:
    """The function that owns a path (whatever the method), or None: a 404."""
    return next((route.function for route, _ in matching(path)), None)


def allowed_methods(path: str, function: str | None = None) -> list[str]:
    """The methods routed for a path, in table order: what a 405's ``Allow`` lists."""
    return list(dict.fromkeys(route.method for route, _ in matching(path, function)))


def streaming(path: str) -> bool:
    """Whether the route of a path answers with a stream (`Route.streams`)."""
    return any(route.streams for route, _ in matching(path))


def by_operation(operation: str) -> Route:
    """The route of an operation (``getTask``); KeyError if there is none."""
    for route in ROUTES:
        if route.operation == operation:
            return route
    raise KeyError(operation)
