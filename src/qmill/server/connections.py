"""Per-process Redis and NATS clients, created on first use and reused.

Functions call these from their handlers, never at import time, so a cold start with
a dependency down still imports and answers 503 instead of crashing.
"""

from __future__ import annotations

from collections.abc import Mapping

from qmill.server import auth, telemetry
from qmill.server.bus import Bus
from qmill.server.config import Settings, get_settings
from qmill.server.logs import setup_logging
from qmill.server.store import Stores

_stores: Stores | None = None
_bus: Bus | None = None
_configured = False


def settings() -> Settings:
    global _configured
    current = get_settings()
    if not _configured:
        setup_logging(current.log, service="functions")
        telemetry.setup_tracing(current.telemetry, service="functions")
        _configured = True
    return current


def stores() -> Stores:
    global _stores
    if _stores is None:
        cfg = settings()
        _stores = Stores.connect(cfg.redis, socket_timeout=cfg.redis.socket_timeout_seconds)
    return _stores


async def tenant(headers: Mapping[str, str]) -> str | None:
    """The caller's tenant id, after checking its API key and rate limit (see qmill.server.auth)."""
    return await auth.authorize(headers, settings().auth, stores().limits)


def bus() -> Bus:
    global _bus
    if _bus is None:
        _bus = Bus(settings(), name="qmill-functions")
    return _bus
