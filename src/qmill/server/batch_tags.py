"""A batch's ``tags``: checked on their own, then merged into every task's (its own win).

The shape of a tag (a key of ``[A-Za-z0-9_.\\-/]`` characters, no ``:``, so ``tag=k:v``
filters split once; a printable value) and the limits on how many and how long are the
issue-14 contract, the same as for a task's own ``tags``. The merged set is what a
task is stored with, so it is what the limits bound: 10 batch tags and 10 of a task's
own are 20 tags on that task.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from qmill.server.errors import LimitExceeded

TAG_KEY = re.compile(r"^[A-Za-z0-9_.\-/]+$")
# Control characters (C0, DEL, C1): a value is echoed in listings, tables and logs.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True, slots=True)
class TagLimits:
    """How many tags a task may carry, and how long a key and a value may be."""

    # The contract's `[limits]` defaults (max_tags, max_tag_key_chars,
    # max_tag_value_chars); the listing branch makes them settings.
    max_tags: int = 16
    max_key_chars: int = 64
    max_value_chars: int = 256


def batch_tags(value: object) -> object:
    """The shape of ``BatchRequest.tags`` (a pydantic before-validator): an object of
    string keys of the allowed characters to printable string values. Counts and
    lengths are checked on the merged set (`merged`), against the settings."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError("tags must be an object of string keys to string values")
    for key, tag in value.items():
        if not isinstance(key, str) or not TAG_KEY.match(key):
            raise ValueError(
                f"tag key {str(key)[:64]!r} must be letters, digits and _ . - / only (no ':')"
            )
        if not isinstance(tag, str):
            raise ValueError(f"tag {key[:64]!r} must have a string value")
        if _CONTROL.search(tag):
            raise ValueError(f"tag {key[:64]!r} has a control character in its value")
    return value


def merged(
    batch: Mapping[str, str] | None, own: Mapping[str, str] | None, limits: TagLimits
) -> dict[str, str]:
    """The batch's tags with the task's own over them (a task's own value wins per key),
    checked against ``limits``; a `RequestError` (422) names the limit it passes."""
    tags = {**(batch or {}), **(own or {})}
    if len(tags) > limits.max_tags:
        raise LimitExceeded("tags", len(tags), limits.max_tags)
    for key, value in tags.items():
        if len(key) > limits.max_key_chars:
            raise LimitExceeded("tag key length", len(key), limits.max_key_chars)
        if len(value) > limits.max_value_chars:
            raise LimitExceeded(f"length of tag {key!r}", len(value), limits.max_value_chars)
    return tags


def check_batch(batch: Mapping[str, str] | None, limits: TagLimits) -> None:
    """The batch's own tags within the limits (before any task's are merged in)."""
    if batch:
        merged(batch, None, limits)
