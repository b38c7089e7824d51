"""qmill: run OpenQASM circuits as a service.

``from qmill import Client`` (or ``AsyncClient``) is all a user needs. The clients are
imported on first use, so ``import qmill`` (which every server process does) stays
cheap and never pulls in httpx or qiskit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qmill.client import AsyncClient, Client

__all__ = ["AsyncClient", "Client"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from qmill import client

        return getattr(client, name)
    raise AttributeError(f"module 'qmill' has no attribute {name!r}")
