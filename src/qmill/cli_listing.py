"""``qmill ls``: the tasks of this API key, newest first, as a table or JSON.

Kept apart from `qmill.cli` (the commands about one task); registered there like the
operator commands. The table is a pure function of the summaries, so tests compare it.
"""

from __future__ import annotations

import json
import re
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import click

from qmill.cli_output import tag_pairs

if TYPE_CHECKING:
    from qmill.client_listing import TaskSummary

STATUSES = ("pending", "processing", "completed", "failed", "cancelled")
# The most one page of the server holds ([server] max_list_limit's default).
PAGE = 100
_AGO = re.compile(r"(\d{1,6})([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def since_value(raw: str | None) -> str | None:
    """``--since``: an RFC 3339 date-time, or an age (``30m``, ``2h``, ``7d``)."""
    if raw is None:
        return None
    ago = _AGO.fullmatch(raw.strip())
    if ago is None:
        return raw  # the server checks it (a 422 says what it wants)
    delta = timedelta(**{_UNITS[ago.group(2)]: int(ago.group(1))})
    return (datetime.now(UTC) - delta).isoformat()


def tasks_table(tasks: list[TaskSummary], now: datetime | None = None) -> list[str]:
    """One row per task: id, status, age, shots, qubits, batch, tags."""
    if not tasks:
        return ["(no tasks)"]
    now = now or datetime.now(UTC)
    rows = [("TASK", "STATUS", "CREATED", "SHOTS", "QUBITS", "BATCH", "TAGS")]
    for task in tasks:
        rows.append(
            (
                task.task_id,
                task.status,
                _age(task.created_at, now),
                str(task.shots),
                "-" if task.qubits is None else str(task.qubits),
                (task.batch_id or "-")[:8],
                ",".join(f"{k}:{v}" for k, v in sorted(task.tags.items())) or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


def _age(when: datetime | None, now: datetime) -> str:
    if when is None:
        return "-"
    seconds = max(0, int((now - when).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def add_to(group: click.Group) -> None:
    """Register ``qmill ls`` on the CLI; called by `qmill.cli` once the options and
    helpers every client command shares exist (so neither module imports the other
    at import time)."""
    from qmill.cli import EXIT_CODES, _client, _run, client_options

    @click.command("ls", epilog=EXIT_CODES, short_help="List your tasks, newest first.")
    @click.option(
        "--status",
        "statuses",
        multiple=True,
        type=click.Choice(STATUSES),
        help="Repeatable: any of.",
    )
    @click.option("--tag", "tags", multiple=True, metavar="KEY:VALUE", help="Repeatable: all of.")
    @click.option("--batch", metavar="ID", help="Only the tasks of this batch.")
    @click.option(
        "--since", metavar="WHEN", help="Created at or after: RFC 3339, or an age (2h, 7d)."
    )
    @click.option(
        "--limit",
        type=click.IntRange(min=1),
        default=20,
        show_default=True,
        help="Show at most this many (the newest).",
    )
    @client_options
    def ls(
        statuses: tuple[str, ...],
        tags: tuple[str, ...],
        batch: str | None,
        since: str | None,
        limit: int,
        url: str,
        api_key: str | None,
        retries: int,
        as_json: bool,
    ) -> None:
        """List the tasks of this API key (all tasks when the server has auth off), newest
        first, with their status, age, shots, qubits, batch and tags. --json prints
        {"tasks": [...]}, each task as the server sent it."""
        wanted = tag_pairs(tags)

        async def go() -> list[TaskSummary]:
            found: list[TaskSummary] = []
            async with _client(url, api_key, retries) as client:
                pages = client.iter_tasks(
                    status=list(statuses),
                    tags=wanted,
                    batch=batch,
                    since=since_value(since),
                    limit=min(limit, PAGE),
                )
                async with aclosing(pages):
                    async for task in pages:
                        found.append(task)
                        if len(found) == limit:
                            break
            return found

        found = _run(go(), as_json)
        if as_json:
            click.echo(json.dumps({"tasks": [t.raw for t in found]}))
            return
        for line in tasks_table(found):
            click.echo(line)

    group.add_command(ls)
