"""API keys, tenants and per-key rate limits.

Keys are random tokens, so qmill stores only their SHA-256 (as GitHub does for its
tokens): a leaked config or Redis dump reveals no usable key. A key's tenant id is a
prefix of its hash; tasks carry it as their owner, and another tenant asking for
them gets 404, exactly as for a task that does not exist. Rate limits and in-flight
caps live in Redis, so every function instance shares them.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

from qmill.server.config import AuthSettings
from qmill.server.errors import ConfigError, Unauthorized
from qmill.server.store.limits import Limits

_TENANT_ID_CHARS = 16


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh API key and the hash line to configure for it."""
    key = "qm_" + secrets.token_urlsafe(32)
    return key, hash_key(key)


def tenant_of(key_hash: str) -> str:
    return key_hash[:_TENANT_ID_CHARS]


@lru_cache(maxsize=8)
def _hashes(inline: tuple[str, ...], keys_file: str) -> frozenset[str]:
    hashes = set(inline)
    if keys_file:
        try:
            lines = Path(keys_file).read_text().splitlines()
        except OSError as exc:
            raise ConfigError(f"[auth] keys_file {keys_file}: {exc}") from None
        for line in lines:
            word = line.split("#", 1)[0].strip().split()
            if word:
                hashes.add(word[0])
    bad = [h for h in hashes if len(h) != 64 or any(c not in "0123456789abcdef" for c in h)]
    if bad:
        raise ConfigError(f"[auth] key hashes must be 64 lowercase hex characters: {bad[0]!r}")
    return frozenset(hashes)


def known_hashes(settings: AuthSettings) -> frozenset[str]:
    return _hashes(tuple(settings.api_key_hashes), settings.keys_file)


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key from ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``."""
    authorization = headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get("x-api-key") or None


async def authorize(
    headers: Mapping[str, str], settings: AuthSettings, limits: Limits, cost: int = 1
) -> str | None:
    """The caller's tenant id (None when auth is off); 401 or 429 otherwise.

    ``cost`` is what the request counts against the rate limit (a batch counts each task).
    """
    if not settings.enabled:
        return None
    key = presented_key(headers)
    if key is None:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    key_hash = hash_key(key)
    if not secrets.compare_digest(key_hash, _match(key_hash, known_hashes(settings))):
        raise Unauthorized("unknown API key")
    tenant = tenant_of(key_hash)
    if settings.rate_per_second > 0:
        await limits.take_tokens(tenant, settings.rate_per_second, settings.burst, cost)
    return tenant


def _match(key_hash: str, known: frozenset[str]) -> str:
    # Set membership is not constant-time, but the attacker controls only the preimage
    # of the hash, not the hash, so timing reveals nothing useful; compare anyway.
    return key_hash if key_hash in known else ""
