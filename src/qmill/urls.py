"""URLs as qmill prints and logs them: with any credentials they carry masked.

``[redis] url`` and ``[nats] url`` may hold a password (``redis://:pw@host``) or a token
(``nats://token@host``), and a client's ``--url`` basic-auth credentials; what qmill
shows (``qmill config``, ``qmill health``, logs) must not repeat them. Imports nothing
beyond the standard library, so the client CLI can use it without the server.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

MASK = "***"


def redact_url(url: str) -> str:
    """``url`` with its userinfo masked: ``user:***@`` where there is a password, ``***@``
    where there is only a user part (NATS reads that as a token); else unchanged. A
    comma-separated list of URLs (``[nats] url`` of a cluster) has each one masked."""
    if "," in url:
        return ",".join(redact_url(part) for part in url.split(","))
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK if "@" in url else url
    if "@" not in parts.netloc:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, has_password, _ = userinfo.partition(":")
    masked = f"{user}:{MASK}" if has_password else MASK
    return urlunsplit(parts._replace(netloc=f"{masked}@{hostport}"))


def redact_urls(value: object) -> object:
    """``value`` (JSON-like: dicts, lists, strings) with every URL in it redacted."""
    if isinstance(value, str):
        return redact_url(value) if "://" in value else value
    if isinstance(value, dict):
        return {key: redact_urls(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_urls(item) for item in value]
    return value
