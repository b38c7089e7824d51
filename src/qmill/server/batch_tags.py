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

from qmill.server import tags as task_tags
from qmill.server.config import LimitsSettings

TAG_KEY = re.compile(f"^{task_tags.KEY_PATTERN.pattern}$")


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
        if task_tags.UNPRINTABLE.search(tag):
            raise ValueError(f"tag {key[:64]!r} has a control character in its value")
    return value


def merged(
    batch: Mapping[str, str] | None, own: Mapping[str, str] | None, limits: LimitsSettings
) -> dict[str, str]:
    """The batch's tags with the task's own over them (a task's own value wins per key),
    checked against ``limits`` as a task's own are (`qmill.server.tags.check`); a
    `RequestError` (422) names the limit it passes."""
    tags = {**(batch or {}), **(own or {})}
    task_tags.check(tags, limits)
    return tags


def check_batch(batch: Mapping[str, str] | None, limits: LimitsSettings) -> None:
    """The batch's own tags within the limits (before any task's are merged in)."""
    if batch:
        merged(batch, None, limits)
