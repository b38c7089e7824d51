"""Task tags: a small map of short strings a submit carries, checked against `[limits]`.

A tag is ``key: value``. Keys are identifiers (``^[A-Za-z0-9_.\\-/]+$``: no ``:``, so
``key:value`` in a query names one tag unambiguously); values are any printable text.
Both are bounded (``[limits] max_tags``, ``max_tag_key_chars``, ``max_tag_value_chars``)
because each tag is kept with its record and indexed per tenant
(`qmill.server.store.listing`) for as long as the task. One check serves ``POST /tasks``
and every task of ``POST /batches``; `parse_filter` reads ``GET /tasks?tag=key:value``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping

from pydantic import JsonValue

from qmill.server.config import LimitsSettings
from qmill.server.errors import InvalidRequest, LimitExceeded

KEY_PATTERN = re.compile(r"[A-Za-z0-9_.\-/]+")
# What openapi.json says of a ``tags`` object's keys (the checks are `check`'s).
KEYS_SCHEMA: dict[str, JsonValue] = {"propertyNames": {"pattern": f"^{KEY_PATTERN.pattern}$"}}
# C0 and C1 controls and DEL (a value ends up in logs, tables and terminals), and lone
# surrogates, which JSON can spell ("\ud800") but UTF-8, and so Redis, cannot store.
UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def check(tags: Mapping[str, str], limits: LimitsSettings) -> None:
    """Raise a 422 for the first tag over a limit or not well formed."""
    if len(tags) > limits.max_tags:
        raise LimitExceeded("tags", len(tags), limits.max_tags)
    for key, value in tags.items():
        if len(key) > limits.max_tag_key_chars:
            raise LimitExceeded("tag key characters", len(key), limits.max_tag_key_chars)
        if not KEY_PATTERN.fullmatch(key):
            raise InvalidRequest(
                f"tag key {key[:64]!r}: use letters, digits and _ . - / only (no ':')"
            )
        if len(value) > limits.max_tag_value_chars:
            raise LimitExceeded("tag value characters", len(value), limits.max_tag_value_chars)
        if UNPRINTABLE.search(value):
            raise InvalidRequest(f"tag {key!r}: the value has a control character")


def merged(
    batch: Mapping[str, str] | None, own: Mapping[str, str] | None, limits: LimitsSettings
) -> dict[str, str]:
    """A batch's tags with a task's own over them (its value wins per key), checked as a
    task's own are: the merged set is what the task is stored and indexed with, so it
    is what the limits bound (10 batch tags and 10 of its own are 20 on that task)."""
    tags = {**(batch or {}), **(own or {})}
    check(tags, limits)
    return tags


def parse_filter(raw: str, limits: LimitsSettings) -> tuple[str, str]:
    """``key:value`` (the value may be empty, or hold more ``:``) as (key, value); 422 if
    it is not a tag a task could have."""
    key, sep, value = raw.partition(":")
    if not sep:
        raise InvalidRequest(f"tag must be key:value, got {raw[:64]!r}")
    check({key: value}, limits)
    return key, value


def digest(key: str, value: str) -> str:
    """The tag as a short key-name part: any value, one fixed-width hex word."""
    return hashlib.sha256(f"{key}:{value}".encode()).hexdigest()[:32]
