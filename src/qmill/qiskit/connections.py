"""The one HTTP client a backend or primitive holds, and who closes it.

`QmillBackend`, `SamplerV2` and `EstimatorV2` each hold a `qmill.client.Client` (one
connection pool, the client's retries and errors). One made from ``url`` and
``api_key`` is theirs to close, with ``close()`` or at the end of a ``with`` block; one
passed in as ``client=`` (shared by several of them) stays its owner's. Jobs keep using
the client of whatever made them, so they cannot be read once it is closed.
"""

from __future__ import annotations

from typing import Self

from qmill.client import Client


class Connected:
    """A holder of a `Client`: ``client``, ``close()`` and the context manager."""

    def _connect(self, url: str | None, api_key: str | None, client: Client | None) -> None:
        self._owns_client = client is None
        self._client = client if client is not None else Client(url, api_key=api_key)

    @property
    def client(self) -> Client:
        return self._client

    def close(self) -> None:
        """Close the HTTP connections, unless the client was given."""
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
