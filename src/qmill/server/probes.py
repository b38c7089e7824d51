"""``/livez`` and ``/readyz``: what each process says about itself (`routes.PROBES`).

``/livez`` answers 200 as soon as the process serves HTTP and asks nothing else, so a
Redis or NATS outage never gets healthy processes restarted. ``/readyz`` answers 200
when what the process depends on answers, else 503 with a JSON body naming what does
not (``{"status": "unready", "down": ["redis"], "checks": {...}}``): a function and
the combined server check NATS and Redis, the gateway the functions behind it, a worker
its NATS connection and its last Redis heartbeat (`qmill_worker.probes`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass

import httpx
from starlette.responses import Response

from qmill.server import connections, routes, tasks

JSON_TYPE = "application/json"
LIVE_BODY = b'{"status":"alive"}'


@dataclass(frozen=True)
class Readiness:
    """Each check by name, and what failed it (``detail``: the names within it that did,
    for a check that is itself a process with checks, as a function is to the gateway)."""

    checks: Mapping[str, bool]
    detail: Mapping[str, list[str]] | None = None

    @property
    def ready(self) -> bool:
        return all(self.checks.values())

    @property
    def status_code(self) -> int:
        return 200 if self.ready else 503

    @property
    def down(self) -> list[str]:
        detail = self.detail or {}
        named = []
        for name, ok in self.checks.items():
            if not ok:
                inner = detail.get(name)
                named.append(f"{name}: {', '.join(inner)}" if inner else name)
        return named

    def body(self) -> bytes:
        status = "ready" if self.ready else "unready"
        answer = {"status": status, "down": self.down, "checks": dict(self.checks)}
        return json.dumps(answer, separators=(",", ":")).encode()


async def dependencies() -> Readiness:
    """This process's NATS and Redis clients answer (as ``GET /health`` checks them)."""
    view = await tasks.health(connections.stores(), connections.bus())
    return Readiness(view.services)


async def answer(path: str) -> Response:
    """A function's answer to a probe path."""
    if path == routes.LIVEZ_PATH:
        return Response(LIVE_BODY, media_type=JSON_TYPE)
    readiness = await dependencies()
    return Response(readiness.body(), status_code=readiness.status_code, media_type=JSON_TYPE)


async def functions_ready(
    upstreams: Mapping[str, str], client: httpx.AsyncClient, timeout: float
) -> Readiness:
    """The gateway's readiness: each function behind it answers its own ``/readyz`` 200
    within ``timeout`` (what a function reports down is named: ``"result: redis"``)."""

    async def ask(base: str) -> tuple[bool, list[str]]:
        try:
            answer = await client.get(base + routes.READYZ_PATH, timeout=timeout)
        except httpx.HTTPError:
            return False, []
        if answer.status_code == 200:
            return True, []
        try:
            down = answer.json().get("down", [])
        except ValueError:
            down = []
        return False, [str(name) for name in down] if isinstance(down, list) else []

    names = list(upstreams)
    results = await asyncio.gather(*(ask(upstreams[name]) for name in names))
    checks = {name: ok for name, (ok, _) in zip(names, results, strict=True)}
    detail = {name: down for name, (_, down) in zip(names, results, strict=True) if down}
    return Readiness(checks, detail)
