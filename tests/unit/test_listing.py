"""Reading ``GET /tasks``' query and checking tags: every bad value a 422 that says what
is wrong; and the client's `TaskSummary` in step with the server's."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
from starlette.datastructures import QueryParams

from qmill.client_listing import TaskPage, TaskSummary, list_call
from qmill.server import models, tags
from qmill.server.config import LimitsSettings, Settings
from qmill.server.errors import InvalidRequest, LimitExceeded
from qmill.server.listing import parse_query, parse_since
from qmill.server.models import TaskStatus
from qmill.server.store import listing

SETTINGS = Settings()
TASK = "7496f621-a003-42ec-8a48-92412acb19b4"


def query(text: str) -> listing.Query:
    return parse_query(QueryParams(text), SETTINGS)


def test_a_full_query_is_read() -> None:
    member = listing.prefix(datetime(2026, 12, 3, tzinfo=UTC), 2) + TASK
    q = query(
        f"status=pending&status=failed&tag=project:bell&tag=note:a:b%20c&batch={TASK.upper()}"
        f"&since=2026-12-03T10:00:00.5%2B01:00&limit=100&cursor={member}"
    )
    assert q.statuses == {TaskStatus.PENDING, TaskStatus.FAILED}
    assert q.tags == (("project", "bell"), ("note", "a:b c"))
    assert q.batch_id == TASK
    assert q.since == datetime(2026, 12, 3, 9, 0, 0, 500000, tzinfo=UTC)
    assert (q.limit, q.cursor) == (100, member)
    assert query("").limit == 20


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("status=done", "unknown status"),
        ("status=", "unknown status"),
        ("tag=project", "key:value"),
        ("tag=pro%20ject:x", "tag key"),
        ("tag=:x", "tag key"),
        ("tag=k:%07", "control character"),
        ("batch=not-a-uuid", "batch"),
        (f"batch={TASK}&batch={TASK}", "once"),
        ("since=2026-12-03T10:00:00", "RFC 3339"),
        ("since=2026-12-03T10:00:00 01:00", "%2B"),
        ("since=2026-13-03T10:00:00Z", "not a valid"),
        ("since=yesterday", "RFC 3339"),
        ("limit=0", "limit"),
        ("limit=-1", "limit"),
        ("limit=1.5", "limit"),
        ("limit=%D9%A3", "limit"),  # an Arabic-Indic 3: a digit to str.isdigit
        ("limit=99999999999999999999", "limit"),
        ("cursor=x", "cursor"),
        ("cursor=" + "0" * 20 + TASK + "x", "cursor"),
        ("cursor=" + "0" * 20 + TASK.upper(), "cursor"),
        ("cursor=" + "a" * 100_000, "cursor"),
    ],
)
def test_a_bad_value_is_a_422_that_names_it(text: str, says: str) -> None:
    with pytest.raises(InvalidRequest, match=says):
        query(text)


def test_over_a_limit_is_a_422_naming_the_limit() -> None:
    with pytest.raises(LimitExceeded) as over:
        query("limit=101")
    assert (over.value.limit, over.value.allowed) == ("limit", 100)
    with pytest.raises(LimitExceeded):
        query("&".join(f"tag=k{i}:v" for i in range(17)))


def test_leap_seconds_lower_case_and_far_dates_are_read() -> None:
    assert parse_since("2016-12-31t23:59:60z") == datetime(2016, 12, 31, 23, 59, 59, tzinfo=UTC)
    far = parse_since("9999-12-31T23:59:59-23:59")
    assert listing.time_prefix(far) == "f" * listing.TIME_DIGITS  # lists nothing, no error
    assert listing.time_prefix(parse_since("0001-01-01T00:00:00Z")) == "0" * listing.TIME_DIGITS


def test_tags_are_checked_against_the_limits() -> None:
    limits = LimitsSettings()
    tags.check({"project": "bell", "a.b/c-d_e": "any text: ünïcode, spaces"}, limits)
    cases: list[tuple[dict[str, str], type[Exception], str]] = [
        ({f"k{i}": "" for i in range(17)}, LimitExceeded, "tags is 17"),
        ({"k" * 65: ""}, LimitExceeded, "tag key characters"),
        ({"k": "v" * 257}, LimitExceeded, "tag value characters"),
        ({"a:b": "v"}, InvalidRequest, "no ':'"),
        ({"": "v"}, InvalidRequest, "tag key"),
        ({"k": "line\nbreak"}, InvalidRequest, "control"),
        ({"k": "\x85"}, InvalidRequest, "control"),
        ({"k": "\ud800"}, InvalidRequest, "control"),
    ]
    for value, error, says in cases:
        with pytest.raises(error, match=says):
            tags.check(value, limits)


def test_members_sort_newest_first_and_a_batch_in_order() -> None:
    early, late = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)
    members = [listing.prefix(late, 0), listing.prefix(late, 1), listing.prefix(early, 0)]
    assert sorted(members, reverse=True) == members
    assert all(len(m) == listing.PREFIX_CHARS for m in members)
    assert listing.check_cursor(members[0] + TASK) == members[0] + TASK
    # Any record is gone by the horizon: both TTLs and the provisional one.
    assert listing.horizon(60) == 120 + listing.PROVISIONAL_BOUND_SECONDS
    from qmill.server.enqueue import PROVISIONAL_TTL_SECONDS

    assert listing.PROVISIONAL_BOUND_SECONDS > PROVISIONAL_TTL_SECONDS


def test_the_client_summary_has_the_server_fields() -> None:
    client = {f.name for f in dataclasses.fields(TaskSummary)} - {"raw"}
    assert client == set(models.TaskSummary.model_fields)
    now = datetime(2026, 12, 3, tzinfo=UTC)
    sent = models.TaskList(
        tasks=[
            models.TaskSummary(
                task_id=TASK,
                status=TaskStatus.COMPLETED,
                created_at=now,
                started_at=now,
                completed_at=now,
                shots=10,
                qubits=2,
                method="statevector",
                tags={"k": "v"},
                batch_id=TASK,
                error=None,
            )
        ],
        next_cursor="c",
    ).model_dump(mode="json")
    page = TaskPage.from_json(sent)
    assert page.next_cursor == "c" and page.tasks[0].done
    for name in client:
        expected = sent["tasks"][0][name]
        got = getattr(page.tasks[0], name)
        assert (got.isoformat().replace("+00:00", "Z") if isinstance(got, datetime) else got) == (
            expected
        ), name


def test_the_client_sends_filters_as_the_server_reads_them() -> None:
    call = list_call(
        status=["pending", "failed"],
        tags={"project": "bell"},
        batch=TASK,
        since=datetime(2026, 12, 3, tzinfo=UTC),
        limit=5,
    )
    assert call.params is not None
    q = parse_query(QueryParams(str(call.params)), SETTINGS)
    assert q.statuses == {TaskStatus.PENDING, TaskStatus.FAILED}
    assert q.tags == (("project", "bell"),) and q.limit == 5
    assert q.since == datetime(2026, 12, 3, tzinfo=UTC)
    with pytest.raises(ValueError, match="time zone"):
        list_call(since=datetime(2026, 12, 3))


def test_qmill_ls_table_and_ages() -> None:
    from datetime import timedelta

    from qmill.cli_listing import since_value, tasks_table

    now = datetime(2026, 12, 3, 12, tzinfo=UTC)
    rows = tasks_table(
        [
            TaskSummary(TASK, "completed", now - timedelta(hours=3), shots=5, tags={"p": "b"}),
            TaskSummary(TASK, "pending", now, shots=10, qubits=2, batch_id=TASK),
        ],
        now,
    )
    assert rows[0].split() == ["TASK", "STATUS", "CREATED", "SHOTS", "QUBITS", "BATCH", "TAGS"]
    assert rows[1].split() == [TASK, "completed", "3h", "ago", "5", "-", "-", "p:b"]
    assert rows[2].split() == [TASK, "pending", "0s", "ago", "10", "2", TASK[:8], "-"]
    assert tasks_table([]) == ["(no tasks)"]
    recent = since_value("2h")
    assert recent is not None and parse_since(recent) < datetime.now(UTC) - timedelta(minutes=119)
    assert since_value("2026-12-03T10:00:00Z") == "2026-12-03T10:00:00Z"
