"""``GET /tasks``: the caller's tasks, newest first, a page at a time, filtered.

The query is read here (every value checked: a bad one is a 422 that says what is
wrong, never a 500 or a silently ignored filter), and the page comes from the tenant's
indexes (`qmill.server.store.listing`). Filters: ``status`` (repeatable: any of),
``tag=key:value`` (repeatable: all of), ``batch``, ``since`` (RFC 3339 with a zone),
``limit`` (default 20, at most ``[server] max_list_limit``) and ``cursor``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from starlette.datastructures import QueryParams

from qmill.server import tags
from qmill.server.config import Settings
from qmill.server.errors import InvalidRequest, LimitExceeded
from qmill.server.models import TaskList, TaskStatus
from qmill.server.store import Stores
from qmill.server.store.listing import Query, check_cursor

DEFAULT_LIMIT = 20
# RFC 3339's date-time (section 5.6): a zone is required, "T" and "Z" in either case,
# a leap second (":60") read as the second before it.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
STATUSES = ", ".join(s.value for s in TaskStatus)


def _one(params: QueryParams, name: str) -> str | None:
    values = params.getlist(name)
    if len(values) > 1:
        raise InvalidRequest(f"{name} may be given once, got {len(values)} values")
    return values[0] if values else None


def parse_since(raw: str) -> datetime:
    """An RFC 3339 date-time with a zone (``2026-12-03T10:00:00Z``), as UTC."""
    found = _RFC3339.fullmatch(raw)
    if found is None:
        raise InvalidRequest(
            f"since must be an RFC 3339 date-time with a zone, like 2026-12-03T10:00:00Z "
            f"(a '+' offset is sent as %2B), got {raw[:64]!r}"
        )
    year, month, day, hour, minute, second = (int(g) for g in found.groups()[:6])
    fraction, _zulu, sign, zone_hours, zone_minutes = found.groups()[6:]
    micros = int((fraction or ".0")[1:7].ljust(6, "0"))
    offset = timedelta(hours=int(zone_hours or 0), minutes=int(zone_minutes or 0))
    try:
        local = datetime(year, month, day, hour, minute, min(second, 59), micros)
    except ValueError:
        raise InvalidRequest(f"since: not a valid date-time: {raw[:64]!r}") from None
    if offset >= timedelta(hours=24):
        raise InvalidRequest(f"since: not a valid zone offset: {raw[:64]!r}")
    try:
        utc = local - offset if sign != "-" else local + offset
    except OverflowError:  # within a day of year 1 or 9999: as early or late as it gets
        utc = datetime.max if sign == "-" else datetime.min
    return utc.replace(tzinfo=UTC)


def parse_limit(raw: str | None, cap: int) -> int:
    if raw is None:
        return min(DEFAULT_LIMIT, cap)
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9:
        raise InvalidRequest(f"limit must be a whole number from 1 to {cap}, got {raw[:32]!r}")
    value = int(raw)
    if value < 1:
        raise InvalidRequest(f"limit must be a whole number from 1 to {cap}, got {raw}")
    if value > cap:
        raise LimitExceeded("limit", value, cap)
    return value


def parse_query(params: QueryParams, settings: Settings) -> Query:
    """The page a query string asks for; the first bad value is a 422 naming it."""
    statuses = set()
    for raw in params.getlist("status"):
        try:
            statuses.add(TaskStatus(raw))
        except ValueError:
            raise InvalidRequest(
                f"status: unknown status {raw[:32]!r}; one of {STATUSES}",
                allowed=[s.value for s in TaskStatus],
            ) from None
    wanted = params.getlist("tag")
    if len(wanted) > settings.limits.max_tags:
        raise LimitExceeded("tag filters", len(wanted), settings.limits.max_tags)
    pairs = tuple(dict.fromkeys(tags.parse_filter(raw, settings.limits) for raw in wanted))
    batch = _one(params, "batch")
    if batch is not None:
        if not _UUID.fullmatch(batch):
            raise InvalidRequest(f"batch: not a batch id, got {batch[:64]!r}")
        batch = batch.lower()
    since = _one(params, "since")
    cursor = _one(params, "cursor")
    return Query(
        limit=parse_limit(_one(params, "limit"), settings.server.max_list_limit),
        statuses=frozenset(statuses),
        tags=pairs,
        batch_id=batch,
        since=parse_since(since) if since is not None else None,
        cursor=check_cursor(cursor) if cursor is not None else None,
    )


async def list_tasks(stores: Stores, query: Query, owner: str | None = None) -> TaskList:
    """One page of the ``owner``'s tasks (None: auth off, the tasks submitted so)."""
    page = await stores.listing.page(owner, query)
    return TaskList(tasks=page.tasks, next_cursor=page.next_cursor)
