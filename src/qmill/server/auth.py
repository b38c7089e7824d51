"""API keys, tenants and per-key rate limits.

Keys are random tokens, so qmill stores only their SHA-256 (as GitHub does for its
tokens): a leaked config or Redis dump reveals no usable key. A key's tenant id is a
prefix of its hash; tasks carry it as their owner, and another tenant asking for
them gets 404, exactly as for a task that does not exist. Rate limits and in-flight
caps live in Redis, so every function instance shares them.

Revocation: ``[auth] keys_file`` is re-read when its identity (inode, size, mtime,
ctime) changes, looked at no more often than every ``keys_file_check_seconds``, so a
key removed from the file is refused within that bound, and one added works, without
a restart. A file that becomes unreadable or malformed fails closed: every keyed
request gets 503 (and an error is logged) until the file is good again. Keeping the
last good set instead would go on accepting a key the operator was revoking.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from qmill.server.config import AuthSettings
from qmill.server.errors import ConfigError, DependencyUnavailable, Unauthorized
from qmill.server.store.limits import Limits

log = logging.getLogger(__name__)

_TENANT_ID_CHARS = 16
_HEX = frozenset("0123456789abcdef")

# What identifies one version of the keys file: a rewrite in place changes the size or
# the times, an atomic replace (a Kubernetes secret's symlink swap) the inode.
_FileIdentity = tuple[int, int, int, int, int]


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh API key and the hash line to configure for it."""
    key = "qm_" + secrets.token_urlsafe(32)
    return key, hash_key(key)


def tenant_of(key_hash: str) -> str:
    return key_hash[:_TENANT_ID_CHARS]


def _checked(hashes: set[str], where: str) -> frozenset[str]:
    bad = next((h for h in hashes if len(h) != 64 or not set(h) <= _HEX), None)
    if bad is not None:
        raise ConfigError(f"{where}: key hashes must be 64 lowercase hex characters: {bad!r}")
    return frozenset(hashes)


def parse_keys_file(text: str) -> set[str]:
    """The hashes of a keys file: the first word of each line; ``#`` starts a comment."""
    hashes = set()
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if words:
            hashes.add(words[0])
    return hashes


@dataclass
class KeyRing:
    """The known key hashes: the inline ones and the keys file's, kept current.

    ``known()`` stats the file at most every ``check_seconds`` and re-reads it only when
    its identity changed. After a failed read no identity is kept, so the next check
    reads again; until one succeeds ``known()`` raises (503), never returns a stale set.
    """

    inline: frozenset[str]
    keys_file: str
    check_seconds: float
    clock: Callable[[], float] = time.monotonic
    _hashes: frozenset[str] | None = None
    _identity: _FileIdentity | None = None
    _checked_at: float = float("-inf")
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def known(self) -> frozenset[str]:
        if not self.keys_file:
            return self.inline
        with self._lock:  # functions may call from threads (sync handlers, tests)
            now = self.clock()
            if now - self._checked_at >= self.check_seconds:
                self._checked_at = now
                self._refresh()
            if self._hashes is None:
                raise DependencyUnavailable("auth", "the API key list cannot be read")
            return self._hashes

    def _refresh(self) -> None:
        try:
            st = os.stat(self.keys_file)
            identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            if identity == self._identity:
                return
            with open(self.keys_file, encoding="utf-8") as handle:
                text = handle.read()
            hashes = self.inline | _checked(parse_keys_file(text), "[auth] keys_file")
        except (OSError, UnicodeDecodeError, ConfigError) as exc:
            self._hashes, self._identity = None, None
            log.error(
                "API keys unavailable: every keyed request is refused (503) until the "
                "keys file is readable and well-formed",
                extra={"error": f"[auth] keys_file {self.keys_file}: {exc}"},
            )
            return
        if self._hashes is not None:
            log.info(
                "API keys reloaded",
                extra={"keys": len(hashes), "removed": len(self._hashes - hashes)},
            )
        self._hashes, self._identity = hashes, identity


@lru_cache(maxsize=8)
def _ring(inline: tuple[str, ...], keys_file: str, check_seconds: float) -> KeyRing:
    return KeyRing(_checked(set(inline), "[auth] api_key_hashes"), keys_file, check_seconds)


def key_ring(settings: AuthSettings) -> KeyRing:
    """The process's key ring for these settings (one per settings, so one per process)."""
    return _ring(
        tuple(settings.api_key_hashes), settings.keys_file, settings.keys_file_check_seconds
    )


def known_hashes(settings: AuthSettings) -> frozenset[str]:
    return key_ring(settings).known()


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
