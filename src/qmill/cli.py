"""``qmill``: one entry point for people and scripts.

User commands (this module, installed with plain ``pip install qmill``): ``submit``,
``get``, ``cancel``, ``health`` talk to a running system over HTTP (``--url`` /
$QMILL_URL) and need only httpx and click. Operator commands (``up``, ``config``,
``key``, ``bench``) live in `qmill.server.cli` and need ``qmill[server]``; they are
listed here either way, and say what to install when it is missing.

Exit codes are part of the interface (scripts branch on them), see `EXIT_CODES`.
Imports are deferred into the commands: ``qmill get`` should not pay for loading the
server's settings, NATS client and qiskit.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

import click

from qmill.cli_output import (
    bar_chars,
    counts_table,
    describe,
    describe_batch,
    tag_pairs,
    task_fields,
)
from qmill.urls import redact_url

if TYPE_CHECKING:
    from qmill.client import AsyncClient, Batch, QmillClientError, Task

EXIT_OK = 0  # done: the task completed, the cancel happened, the system is healthy
EXIT_TASK_FAILED = 1  # the task failed or was cancelled; cancel: it had already finished
EXIT_USAGE = 2  # bad arguments, file, configuration or API key; a request the server refused
EXIT_UNAVAILABLE = 3  # no answer from the server, 503/429 after retries, or unhealthy
EXIT_NOT_FOUND = 4  # no such task (or it expired)
EXIT_TIMEOUT = 5  # --wait ran out of time; the task is still running
EXIT_CODES = f"""\b
Exit codes:
  {EXIT_OK}  success: the task completed (or was queued, or cancelled); healthy
  {EXIT_TASK_FAILED}  the task failed or was cancelled; cancel: it had already finished
  {EXIT_USAGE}  usage error: bad arguments, file or config; the server refused the
     request (invalid circuit 400, too large 413, invalid 422, API key 401)
  {EXIT_UNAVAILABLE}  server unreachable or unavailable (503/429 after retries), unhealthy
  {EXIT_NOT_FOUND}  task not found (unknown id, or its result expired)
  {EXIT_TIMEOUT}  timed out waiting; the task keeps running (qmill get ID --wait)
"""
DEFAULT_URL = "http://127.0.0.1:8000"


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EXIT_CODES,
)
def main() -> None:
    """qmill runs OpenQASM circuits as a service.

    \b
    qmill up                          start the whole system (what `make run` does)
    qmill submit bell.qasm --wait     run a circuit, show its counts
    qmill get ID | wait ID | cancel ID | health
    qmill ls --status failed          your tasks, newest first (--tag, --batch, --since)
    qmill COMMAND --help              the options of one command
    """


# --- client commands: they talk to a running system over HTTP ---------------------------

F = TypeVar("F", bound=Callable[..., Any])


def client_options(command: F) -> F:
    """The options every client command shares, each with an environment twin."""
    options = [
        click.option(
            "--url",
            envvar="QMILL_URL",
            default=DEFAULT_URL,
            show_default=True,
            show_envvar=True,
            help="The qmill server (its gateway).",
        ),
        click.option(
            "--api-key",
            envvar="QMILL_API_KEY",
            show_envvar=True,
            help="Sent as 'Authorization: Bearer KEY'; needed only if the server asks.",
        ),
        click.option(
            "--retries",
            envvar="QMILL_RETRIES",
            type=click.IntRange(0, 20),
            default=5,
            show_default=True,
            show_envvar=True,
            help="Retries, with backoff, when the server answers 503/429 or cannot be reached.",
        ),
        click.option(
            "--json",
            "as_json",
            is_flag=True,
            envvar="QMILL_JSON",
            show_envvar=True,
            help="Machine output: one JSON document on stdout (errors too).",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def wait_options(command: F) -> F:
    command = click.option(
        "--timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=300.0,
        show_default=True,
        envvar="QMILL_TIMEOUT",
        show_envvar=True,
        help="With --wait: give up waiting after this many seconds (exit 5).",
    )(command)
    command = click.option(
        "--quiet", "-q", is_flag=True, help="No progress display on stderr while waiting."
    )(command)
    command = click.option(
        "--top",
        type=click.IntRange(min=1),
        default=32,
        show_default=True,
        help="Show at most this many outcomes (the most frequent).",
    )(command)
    command = click.option(
        "--sort",
        type=click.Choice(["count", "outcome"]),
        default="count",
        show_default=True,
        help="Order the counts table by count (most frequent first) or by outcome.",
    )(command)
    return command


def _client(url: str, api_key: str | None, retries: int) -> AsyncClient:
    from qmill.client import AsyncClient, RetryPolicy

    return AsyncClient(url, api_key=api_key or None, retry=RetryPolicy(retries=retries))


T = TypeVar("T")


def _run(coroutine: Awaitable[T], as_json: bool, task_id: str | None = None) -> T:
    """Run one command's coroutine; a client error becomes its message and exit code."""
    from qmill.client import QmillClientError

    async def main() -> T:
        return await coroutine

    try:
        return asyncio.run(main())
    except QmillClientError as exc:
        _fail(exc, as_json)
    except KeyboardInterrupt:
        if task_id:
            click.echo(f"\nqmill: stopped waiting; {task_id} keeps running", err=True)
        sys.exit(130)


def exit_code(exc: QmillClientError) -> int:
    """The documented exit code for a client error (see `EXIT_CODES`)."""
    from qmill import client as c

    if isinstance(exc, c.ResultTimeoutError | c.BatchTimeoutError):
        return EXIT_TIMEOUT
    if isinstance(exc, c.TaskFailedError | c.ConflictError):
        return EXIT_TASK_FAILED
    if isinstance(exc, c.TaskNotFoundError):
        return EXIT_NOT_FOUND
    if isinstance(exc, c.ServerUnreachableError | c.ServiceUnavailableError | c.RateLimitedError):
        return EXIT_UNAVAILABLE
    if isinstance(exc, c.APIError) and exc.status >= 500:
        return EXIT_UNAVAILABLE
    return EXIT_USAGE


def _fail(exc: QmillClientError, as_json: bool) -> NoReturn:
    from qmill.client import APIError, InvalidCircuitError

    message = str(exc)
    if isinstance(exc, InvalidCircuitError) and isinstance(exc.detail, str):
        message = exc.detail  # already says "invalid OpenQASM: line L, column C: ..."
    click.echo(f"qmill: {message}", err=True)
    if as_json:
        out: dict[str, Any] = {"error": type(exc).__name__, "message": message}
        if isinstance(exc, APIError):
            out["status"] = exc.status
            if isinstance(exc.body, dict):
                out.update({k: v for k, v in exc.body.items() if k not in out})
        for name in ("task", "batch"):
            item = getattr(exc, name, None)
            if item is not None:
                out[name] = item.raw
        click.echo(json.dumps(out))
    sys.exit(exit_code(exc))


class Progress:
    """Shows a task's status on stderr while the CLI waits for it.

    On a terminal: one line, redrawn ten times a second (spinner, status, elapsed).
    Elsewhere (CI logs, pipes): one line per status change, so logs stay readable.
    """

    FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

    def __init__(self, task_id: str, *, enabled: bool, tty: bool) -> None:
        self.task_id = task_id
        self.enabled = enabled
        self.tty = tty and enabled
        self.status = "pending"
        self.started = time.monotonic()
        self._frame = 0
        self._drawn = False

    def update(self, task: Task) -> None:
        if task.status != self.status and self.enabled and not self.tty:
            click.echo(f"qmill: {self.task_id} {task.status}", err=True)
        self.status = task.status
        if self.tty:
            self.draw()

    def draw(self) -> None:
        frame = self.FRAMES[self._frame % len(self.FRAMES)]
        self._frame += 1
        elapsed = time.monotonic() - self.started
        line = f"{frame} {self.task_id} {self.status} {elapsed:.1f} s"
        click.echo(f"\r{line}\x1b[K", err=True, nl=False)
        self._drawn = True

    async def spin(self) -> None:
        while True:
            self.draw()
            await asyncio.sleep(0.1)

    def start(self) -> None:
        if self.enabled and not self.tty:
            click.echo(f"qmill: {self.task_id} {self.status}", err=True)

    def finish(self) -> None:
        if self._drawn:
            click.echo("\r\x1b[K", err=True, nl=False)


async def _wait(client: AsyncClient, task_id: str, timeout: float, show_progress: bool) -> Task:
    progress = Progress(task_id, enabled=show_progress, tty=sys.stderr.isatty())
    progress.start()
    spinner = asyncio.create_task(progress.spin()) if progress.tty else None
    try:
        # Short long-polls while someone watches, so "processing" shows when it starts;
        # a finished task still answers at once.
        return await client.wait(
            task_id,
            timeout=timeout,
            long_poll=2.0 if show_progress else 30.0,
            on_update=progress.update,
        )
    finally:
        if spinner is not None:
            spinner.cancel()
        progress.finish()


def _show_task(task: Task, as_json: bool, top: int = 32, order: str = "count") -> NoReturn:
    """Print a task (and its counts) and exit with the code its status stands for."""
    if as_json:
        click.echo(json.dumps(task.raw))
    else:
        for line in describe(task):
            click.echo(line)
        if task.counts is not None:
            full, _ = bar_chars()
            click.echo("")
            for line in counts_table(task.counts, top=top, order=order, unicode=full != "#"):
                click.echo(line)
    failed = task.status in ("failed", "cancelled")
    sys.exit(EXIT_TASK_FAILED if failed else EXIT_OK)


def _read_program(source: str) -> str:
    try:
        if source == "-":
            return sys.stdin.read()
        return Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"cannot read {source}: {exc}", param_hint="FILE") from None


@main.command(epilog=EXIT_CODES, short_help="Run an OpenQASM file; --wait prints its counts.")
@click.argument("file", metavar="FILE")
@click.option(
    "--shots",
    "-s",
    type=click.IntRange(min=1),
    default=1024,
    show_default=True,
    help="How many times to run the circuit.",
)
@click.option("--seed", type=click.IntRange(min=0), help="Simulator seed: same seed, same counts.")
@click.option("--method", help="Aer's method: statevector, density_matrix, stabilizer, ...")
@click.option(
    "--set",
    "fields",
    multiple=True,
    metavar="FIELD=JSON",
    help="Any other task field, its value as JSON (a bare word is a string): "
    "--set 'parameters={\"theta\": [0, 1.57]}' --set 'noise={\"readout\": 0.01}'. "
    "Repeatable. GET /backend lists the fields.",
)
@click.option(
    "--tag",
    "tags",
    multiple=True,
    metavar="KEY:VALUE",
    help="Tag the task (repeatable): find it again with `qmill ls --tag KEY:VALUE`.",
)
@click.option("--wait", "-w", is_flag=True, help="Wait for the counts and print them.")
@wait_options
@client_options
def submit(
    file: str,
    shots: int,
    seed: int | None,
    method: str | None,
    fields: tuple[str, ...],
    tags: tuple[str, ...],
    wait: bool,
    timeout: float,
    quiet: bool,
    top: int,
    sort: str,
    url: str,
    api_key: str | None,
    retries: int,
    as_json: bool,
) -> None:
    """Queue the OpenQASM program in FILE ('-' reads stdin).

    Prints the task id (so `ID=$(qmill submit bell.qasm)` works). With --wait, shows
    progress on stderr, then the counts as a table with a bar per outcome (or the
    expectation values, or a sweep's size; --json has everything).
    """
    program = _read_program(file)
    options = task_fields(fields)  # the server refuses a field it does not know
    if seed is not None:
        options["seed"] = seed
    if method is not None:
        options["method"] = method
    if tags:
        cast(dict[str, Any], options)["tags"] = tag_pairs(tags)

    async def go() -> tuple[str, Task | None]:
        async with _client(url, api_key, retries) as client:
            task_id = await client.submit(program, shots, **options)
            if not wait:
                return task_id, None
            return task_id, await _wait(client, task_id, timeout, not quiet)

    task_id, task = _run(go(), as_json)
    if task is not None:
        _show_task(task, as_json, top, sort)
    click.echo(json.dumps({"task_id": task_id, "status": "pending"}) if as_json else task_id)


@main.command(epilog=EXIT_CODES, short_help="Show a task and its counts.")
@click.argument("task_id", metavar="ID")
@click.option("--wait", "-w", is_flag=True, help="Wait until the task has finished.")
@wait_options
@client_options
def get(
    task_id: str,
    wait: bool,
    timeout: float,
    quiet: bool,
    top: int,
    sort: str,
    url: str,
    api_key: str | None,
    retries: int,
    as_json: bool,
) -> None:
    """Show a task: its status, details and, once completed, its counts.

    Exits 0 while the task is pending or processing too; --wait waits for the end.
    """

    async def go() -> Task:
        async with _client(url, api_key, retries) as client:
            if wait:
                return await _wait(client, task_id, timeout, not quiet)
            return await client.get(task_id)

    _show_task(_run(go(), as_json, task_id if wait else None), as_json, top, sort)


@main.command("wait", epilog=EXIT_CODES, short_help="Wait until a task or a batch has finished.")
@click.argument("item_id", metavar="ID")
@wait_options
@client_options
def wait_command(
    item_id: str,
    timeout: float,
    quiet: bool,
    top: int,
    sort: str,
    url: str,
    api_key: str | None,
    retries: int,
    as_json: bool,
) -> None:
    """Wait until the task ID, or every task of the batch ID, has finished; show it as
    `qmill get` does (a batch: a line per task).

    Exits 0 when every task completed, 1 when one failed or was cancelled, 5 when
    --timeout ran out first (the tasks keep running).
    """
    from qmill.client import Batch, TaskNotFoundError

    async def go() -> Task | Batch:
        async with _client(url, api_key, retries) as client:
            try:
                await client.get(item_id)
            except TaskNotFoundError:  # not a task: a batch? (else its 404, exit 4)
                return await _wait_batch(client, item_id, timeout, not quiet)
            return await _wait(client, item_id, timeout, not quiet)

    done = _run(go(), as_json, item_id)
    if isinstance(done, Batch):
        _show_batch(done, as_json)
    _show_task(done, as_json, top, sort)


async def _wait_batch(
    client: AsyncClient, batch_id: str, timeout: float, show_progress: bool
) -> Batch:
    """`AsyncClient.wait_batch`, with a line on stderr each time more tasks finished."""
    finished = -1

    def update(batch: Batch) -> None:
        nonlocal finished
        now = sum(1 for task in batch.tasks if task.done)
        if show_progress and now != finished:
            click.echo(f"qmill: batch {batch_id} {now}/{len(batch.tasks)} finished", err=True)
        finished = now

    long_poll = 2.0 if show_progress else 30.0
    return await client.wait_batch(batch_id, timeout=timeout, long_poll=long_poll, on_update=update)


def _show_batch(batch: Batch, as_json: bool) -> NoReturn:
    """Print a finished batch and exit 0 if every task completed, else 1."""
    if as_json:
        click.echo(json.dumps(batch.raw))
    else:
        for line in describe_batch(batch):
            click.echo(line)
    failed = any(task.status in ("failed", "cancelled") for task in batch.tasks)
    sys.exit(EXIT_TASK_FAILED if failed else EXIT_OK)


@main.command(epilog=EXIT_CODES, short_help="Cancel a pending or running task.")
@click.argument("task_id", metavar="ID")
@client_options
def cancel(task_id: str, url: str, api_key: str | None, retries: int, as_json: bool) -> None:
    """Cancel a pending or running task (exit 1 if it had already finished)."""

    async def go() -> Task:
        async with _client(url, api_key, retries) as client:
            return await client.cancel(task_id)

    task = _run(go(), as_json)
    click.echo(json.dumps(task.raw) if as_json else f"task {task.task_id} {task.status}")


@main.command(epilog=EXIT_CODES, short_help="Check that the system is up (exit 0) or not (3).")
@client_options
def health(url: str, api_key: str | None, retries: int, as_json: bool) -> None:
    """Check the system: exit 0 when NATS and Redis both answer, else 3."""

    async def go() -> dict[str, Any]:
        async with _client(url, api_key, retries) as client:
            return await client.health()

    view = _run(go(), as_json)
    healthy = view.get("status") == "healthy"
    if as_json:
        click.echo(json.dumps(view))
    else:
        services = view.get("services") or {}
        parts = [f"{name} {'ok' if up else 'DOWN'}" for name, up in services.items()]
        click.echo(f"{view.get('status')}  {'  '.join(parts)}  ({redact_url(url)})")
    sys.exit(EXIT_OK if healthy else EXIT_UNAVAILABLE)


def _add_operator_commands() -> None:
    from qmill.server import cli as operator

    for command in operator.COMMANDS:
        main.add_command(command)


_add_operator_commands()


def _add_listing_command() -> None:
    from qmill import cli_listing

    cli_listing.add_to(main)


_add_listing_command()
