"""Per-tenant indexes of task records, and the pages of ``GET /tasks`` read from them.

Each tenant (the API key's tenant id, or `constants.ANONYMOUS_TENANT` with auth off) has
one sorted set of every task it submitted, and one per tag it used (named by a hash of
the tag). Every score is 0 and a member is::

    <creation time: 14 hex digits of microseconds since the epoch>
    <position in its batch: 6 hex digits, 0xffffff minus the position>
    <task id>

so ``ZRANGE ... BYLEX REV`` reads newest first, the tasks of one batch in submission
order, and a page's cursor is simply the last member it dealt with: the next page
starts below it, and tasks submitted meanwhile (newer) can neither repeat nor hide one.
A cursor is checked against that exact shape and only ever positions a range read of
the caller's own index, so a tampered one can do no more than an honest one.

The entries are written by the script that writes the records (`new_tasks.CREATE`) and
removed by the one that undoes them (`new_tasks.DELETE`), so a refused submit leaves
none. They expire with what they point to: a record lives at most `horizon` after its
creation (a provisional TTL, then ``result_ttl`` from its confirmation, renewed for
``result_ttl`` once more when it finishes), so every index write trims entries older
than that and sets the key's TTL to it; a page drops the entries it meets whose record
has gone. A page never shows a task whose record it did not just read.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from qmill.server import constants, tags
from qmill.server.errors import DependencyUnavailable, InvalidRequest
from qmill.server.models import TaskStatus, TaskSummary
from qmill.server.store.client import RedisClient, guard

log = logging.getLogger(__name__)

TIME_DIGITS = 14  # microseconds since 1970 in hex: enough until the year 4253
POSITION_DIGITS = 6
LAST_POSITION = 16**POSITION_DIGITS - 1
PREFIX_CHARS = TIME_DIGITS + POSITION_DIGITS
_HEX = "[0-9a-f]"
_UUID = f"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}"
# A member, and so a cursor: exactly what `member` writes.
CURSOR_PATTERN = f"^{_HEX}{{{PREFIX_CHARS}}}{_UUID}$"
_CURSOR = re.compile(CURSOR_PATTERN)
# Index entries one page examines at most (read in chunks, each chunk's records read in
# one pipelined round trip of HMGETs). A filter that matches little (a status, a second
# tag) would otherwise read a tenant's whole history for one page: past this the page
# ends short, or empty, with a next_cursor to carry on from. Measured here: a page of a
# status that 10 of 10^4 tasks have, 19 ms (`_SCAN` judges the records in Redis).
SCAN_ENTRIES = 1000
# The longest a record may live before its result TTL starts: the provisional TTL of an
# unconfirmed submit (`enqueue.PROVISIONAL_TTL_SECONDS`, 300 s), with room to spare.
PROVISIONAL_BOUND_SECONDS = 3600
# What a listing reads of each record: the summary, never the program or the answer.
SUMMARY_FIELDS = (
    "id",
    "status",
    "created_at",
    "started_at",
    "completed_at",
    "shots",
    "qubits",
    "method",
    "tags",
    "batch_id",
    "error",
    "owner",
    "listed",
)


def horizon(result_ttl_seconds: int) -> int:
    """Seconds after its creation a task record is surely gone: provisional, then the
    result TTL from its confirmation, then the result TTL again from when it finished
    (a task may stay queued until its first TTL is nearly out)."""
    return 2 * result_ttl_seconds + PROVISIONAL_BOUND_SECONDS


def time_prefix(when: datetime) -> str:
    """The member prefix of a creation time (clamped to what the digits hold)."""
    micros = (when - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    return f"{min(max(micros, 0), 16**TIME_DIGITS - 1):0{TIME_DIGITS}x}"


def prefix(created: datetime, position: int) -> str:
    """What a record stores as ``listed``: its member without the id."""
    return time_prefix(created) + f"{LAST_POSITION - position:0{POSITION_DIGITS}x}"


def tenant_of(owner: str | None) -> str:
    return owner or constants.ANONYMOUS_TENANT


def index_keys(owner: str | None, tag_pairs: Iterable[tuple[str, str]]) -> list[str]:
    """The tenant's index, then one per distinct tag (in first-seen order)."""
    tenant = tenant_of(owner)
    keys = [constants.listing_key(tenant)]
    for key, value in tag_pairs:
        name = constants.listing_tag_key(tenant, tags.digest(key, value))
        if name not in keys:
            keys.append(name)
    return keys


def positions(
    owner: str | None, task_tags: Sequence[Mapping[str, str] | None]
) -> dict[str, list[int]]:
    """Index key -> the positions (in ``task_tags``) of the tasks it lists: every task
    in the tenant's index, each also in the index of each of its tags."""
    tenant = tenant_of(owner)
    found: dict[str, list[int]] = {constants.listing_key(tenant): list(range(len(task_tags)))}
    for position, pairs in enumerate(task_tags):
        for key, value in (pairs or {}).items():
            name = constants.listing_tag_key(tenant, tags.digest(key, value))
            found.setdefault(name, []).append(position)
    return found


def index_bytes(task_tags: Mapping[str, str]) -> int:
    """What a task's index entries (and its `listed` field) take in Redis, for its
    storage quota. Measured with MEMORY USAGE: 161 bytes an entry in a large index, the
    `listed` field 72; a tag used by this task alone costs a small index key of its own
    (~220 bytes). Rounded up: 250 an entry."""
    return 250 * (1 + len(task_tags)) + sum(len(k) + len(v) + 8 for k, v in task_tags.items())


@dataclass(frozen=True, slots=True)
class Entries:
    """What one submit adds to its tenant's indexes: members per index key."""

    members: dict[str, list[str]]
    cutoff: str  # ZREMRANGEBYLEX bound: entries below it are older than any record


def entries(
    owner: str | None,
    listed: Sequence[tuple[str, str, Mapping[str, str] | None]],
    created: datetime,
    result_ttl_seconds: int,
) -> Entries:
    """The index entries of a submit's records, given (task id, listed prefix, tags)."""
    ids = [head + task_id for task_id, head, _ in listed]
    members = {
        key: [ids[i] for i in found]
        for key, found in positions(owner, [t for _, _, t in listed]).items()
    }
    oldest = created - timedelta(seconds=horizon(result_ttl_seconds))
    return Entries(members, "(" + time_prefix(oldest))


def check_cursor(raw: str) -> str:
    """A cursor as a page gave it; anything else is a 422 (never a 500)."""
    if len(raw) > 128 or not _CURSOR.fullmatch(raw):
        raise InvalidRequest("cursor: not a cursor this server gave (pass next_cursor as is)")
    return raw


@dataclass(frozen=True, slots=True)
class Query:
    """What a page asks for; every field already checked (`qmill.server.listing`)."""

    limit: int
    statuses: frozenset[TaskStatus] = frozenset()
    tags: tuple[tuple[str, str], ...] = ()
    batch_id: str | None = None
    since: datetime | None = None
    cursor: str | None = None

    def matches(self, summary: TaskSummary) -> bool:
        if self.statuses and summary.status not in self.statuses:
            return False
        return all(summary.tags.get(key) == value for key, value in self.tags)


@dataclass(slots=True)
class Page:
    tasks: list[TaskSummary] = field(default_factory=list)
    next_cursor: str | None = None


def _summary(row: Sequence[str | None]) -> TaskSummary | None:
    """A record's summary fields as a listing shows them; None if the record is gone."""
    f = dict(zip(SUMMARY_FIELDS, row, strict=True))
    if not f["id"] or not f["status"] or not f["created_at"]:
        return None
    return TaskSummary(
        task_id=f["id"],
        status=TaskStatus(f["status"]),
        created_at=datetime.fromisoformat(f["created_at"]),
        started_at=datetime.fromisoformat(f["started_at"]) if f["started_at"] else None,
        completed_at=datetime.fromisoformat(f["completed_at"]) if f["completed_at"] else None,
        shots=int(f["shots"] or 0),
        qubits=int(f["qubits"]) if f["qubits"] else None,
        method=f["method"] or None,
        tags=json.loads(f["tags"]) if f["tags"] else {},
        batch_id=f["batch_id"] or None,
        error=f["error"] or None,
    )


# One chunk of a page, judged where the records are: reads up to ARGV[3] members of the
# index KEYS[1] between ARGV[1] and ARGV[2] (ZRANGE BYLEX REV bounds), stops after the
# ARGV[4]th match, and answers {members examined, verdicts}: per member 'm' (its record
# matches), 'n' (it does not) or 'g' (its record is gone). ARGV[5]: the task key
# prefix; ARGV[6]: the owner a record must have ('' for none); ARGV[7]: its batch (''
# for any); ARGV[8]: the statuses wanted, as ',a,b,' ('' for any); then tag key/value
# pairs the record must all have. One round trip for a thousand entries (~1 ms of
# Redis), where reading each record back was ~360 ms of reply parsing. The records it
# reads are named by the index, not declared in KEYS: like the rest of qmill it needs
# one Redis, not a Redis Cluster.
_SCAN = """
local members = redis.call('ZRANGE', KEYS[1], ARGV[1], ARGV[2], 'BYLEX', 'REV', 'LIMIT', 0,
  tonumber(ARGV[3]))
local need, statuses, batch = tonumber(ARGV[4]), ARGV[8], ARGV[7]
local seen, verdicts, found = {}, {}, 0
for i, member in ipairs(members) do
  local f = redis.call('HMGET', ARGV[5] .. string.sub(member, 21), 'status', 'owner', 'tags',
    'batch_id')
  local verdict = 'm'
  if not f[1] then
    verdict = 'g'
  elseif (f[2] or '') ~= ARGV[6] or (batch ~= '' and f[4] ~= batch) then
    verdict = 'n'
  elseif statuses ~= '' and not string.find(statuses, ',' .. f[1] .. ',', 1, true) then
    verdict = 'n'
  elseif #ARGV > 8 then
    local tags = f[3] and cjson.decode(f[3]) or {}
    for a = 9, #ARGV, 2 do
      if tags[ARGV[a]] ~= ARGV[a + 1] then verdict = 'n' end
    end
  end
  seen[i] = member
  verdicts[i] = verdict
  if verdict == 'm' then
    found = found + 1
    if found == need then break end
  end
end
return {seen, table.concat(verdicts)}
"""


class Listing:
    """Pages of one tenant's tasks, read from its indexes and checked on its records."""

    def __init__(self, client: RedisClient) -> None:
        self._redis = client.redis
        self._scan = client.script(_SCAN)

    async def page(self, owner: str | None, query: Query, scan: int = SCAN_ENTRIES) -> Page:
        """The tasks of ``owner`` (None: auth off) that ``query`` asks for, newest first.

        Examines at most ``scan`` index entries: a page may then be short, even empty,
        with a next_cursor. A batch's page walks only its batch's slice of the index.
        """
        tenant = tenant_of(owner)
        # A tag's index holds only tasks with that tag: the smallest set to walk.
        drive = index_keys(owner, query.tags[:1])[-1]
        top = "(" + query.cursor if query.cursor else "+"
        lowest = "[" + time_prefix(query.since) if query.since is not None else "-"
        if query.batch_id is not None:
            # A batch's tasks share one creation time: its slice of the caller's index
            # (another tenant's batch is in no index of the caller's: nothing).
            created = await self._batch_time(query.batch_id)
            if created is None:
                return Page()
            top = min(top, "(" + created + "g") if query.cursor else "(" + created + "g"
            lowest = max(lowest, "[" + created) if lowest != "-" else "[" + created
        statuses = "".join(f",{s.value}" for s in sorted(query.statuses))
        filters = [constants.TASK_KEY_PREFIX, owner or "", query.batch_id or ""]
        filters += [statuses + "," if statuses else ""]
        filters += [part for pair in query.tags[1:] for part in pair]
        # Unfiltered, a page needs one entry more than it shows (is there a next page?).
        filtered = query.statuses or query.tags[1:] or query.batch_id
        chunk = scan if filtered else query.limit + 1
        examined, next_cursor = 0, None
        matched: list[str] = []
        stale: list[str] = []
        while True:
            want = min(chunk, scan - examined)
            if want <= 0:
                next_cursor = top[1:]
                break
            need = query.limit + 1 - len(matched)
            async with guard():
                members, verdicts = await self._scan(
                    keys=[drive], args=[top, lowest, want, need, *filters]
                )
            for member, verdict in zip(members, str(verdicts), strict=True):
                if verdict == "m" and len(matched) == query.limit:
                    next_cursor = top[1:]  # one more match: there is a next page
                    break
                if verdict == "m":
                    matched.append(str(member))
                elif verdict == "g":
                    stale.append(str(member))
                top = "(" + str(member)
                examined += 1
            if next_cursor is not None or len(members) < want:  # the end of the range
                break
        await self._drop(tenant, drive, stale)
        rows = await self._rows(constants.task_key(m[PREFIX_CHARS:]) for m in matched)
        # A record that expired since the scan read it is left out, not shown half.
        tasks = [summary for row in rows if (summary := _summary(row)) is not None]
        return Page(tasks, next_cursor)

    async def _batch_time(self, batch_id: str) -> str | None:
        """The creation-time prefix its batch's members share (None: no such batch)."""
        async with guard():
            first = await self._redis.lindex(constants.batch_key(batch_id), 0)
            if first is None:
                return None
            listed = await self._redis.hget(constants.task_key(str(first)), "listed")
        return str(listed)[:TIME_DIGITS] if listed else None

    async def _rows(self, keys: Iterable[str]) -> list[list[str | None]]:
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.hmget(key, SUMMARY_FIELDS)
        async with guard():
            return list(await pipe.execute())

    async def _drop(self, tenant: str, drive: str, stale: list[str]) -> None:
        """Remove entries whose record has expired (best effort: the trim on the next
        write, or the key's own TTL, removes them otherwise)."""
        if not stale:
            return
        try:
            async with guard():
                await self._redis.zrem(drive, *stale)
                if drive != constants.listing_key(tenant):
                    await self._redis.zrem(constants.listing_key(tenant), *stale)
        except DependencyUnavailable as exc:
            log.warning("stale index entries kept", extra={"error": str(exc)})
