"""Operator commands of ``qmill``: ``up``, ``config``, ``key new``, ``bench``.

They run or configure the server, so they need ``qmill[server]`` (and ``qmill[worker,local]``
for ``up`` to start workers and local servers). This module imports only click at load time,
so the user CLI can list these commands without the server installed; each command says
what to install when a dependency is missing.
"""

from __future__ import annotations

import asyncio
import functools
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from qmill.server.config import Settings

F = TypeVar("F", bound=Callable[..., Any])


def _exit_usage() -> int:
    from qmill.cli import EXIT_USAGE

    return EXIT_USAGE


def needs_server(command: F) -> F:
    """Turn a missing server dependency into a usage error that says what to install."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ModuleNotFoundError as exc:
            click.echo(
                f"qmill: this command needs the server ({exc.name} is not installed); "
                "pip install 'qmill[server,worker,local]'",
                err=True,
            )
            sys.exit(_exit_usage())

    return wrapper  # type: ignore[return-value]


def _settings_or_exit() -> Settings:
    from qmill.server.config import get_settings
    from qmill.server.errors import ConfigError

    try:
        return get_settings()
    except ConfigError as exc:
        click.echo(f"qmill: {exc}", err=True)
        sys.exit(_exit_usage())


# What `qmill up` says it runs, by [embedded] topology.
_TOPOLOGIES = {
    "combined": "topology combined: one API process serves the three functions",
    "split": "topology split: qmill-gateway in front of a process per function",
}


@click.command(short_help="Start the whole system in the foreground (make run).")
@needs_server
def up() -> None:
    """Start the whole system in the foreground (what `make run` does).

    Starts nats-server and redis-server (unless their URLs are remote), the workers
    and the API on [server] host:port: one process serving the three functions
    ([embedded] topology = "combined", the default), or the gateway in front of a
    process per function ("split", as compose runs them). Ctrl-C stops all.
    """
    from qmill.server import embedded
    from qmill.server.errors import ConfigError
    from qmill.server.logs import setup_logging

    settings = _settings_or_exit()
    try:
        plan = embedded.services(settings)
    except ConfigError as exc:  # settings valid alone, not for `qmill up` (a NATS cluster)
        click.echo(f"qmill: {exc}", err=True)
        sys.exit(_exit_usage())
    setup_logging(settings.log, service="supervisor")
    topology = _TOPOLOGIES[settings.embedded.topology]
    click.echo(
        f"qmill: starting on http://{settings.server.host}:{settings.server.port} "
        f"(data in {settings.embedded.data_dir}/; {topology}); Ctrl-C stops everything",
        err=True,
    )
    if settings.server.host in ("0.0.0.0", "::") and "*" not in settings.server.allowed_hosts:
        names = ", ".join(settings.server.allowed_hosts) or "none"
        click.echo(
            "qmill: listening on every interface, but only requests addressed to the "
            f"loopback names or [server] allowed_hosts ({names}) are answered (others get "
            "421); add the names clients use (QMILL_SERVER__ALLOWED_HOSTS)",
            err=True,
        )
    sys.exit(asyncio.run(embedded.up(plan)))


def source_root() -> Path:
    """The source checkout to benchmark: the current directory (bench/ is not installed)."""
    return Path.cwd()


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    epilog="Arguments after `--` (or any this command does not know) go to bench.run; "
    "`qmill bench -- --help` shows them. The exit code is bench.run's.",
    short_help="Run the benchmark suite (bench/run.py).",
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args: tuple[str, ...]) -> None:
    """Run the benchmark suite (python -m bench.run) from the source tree."""
    root = source_root()
    package = root / "bench"
    if not ((package / "run.py").is_file() or (package / "run" / "__main__.py").is_file()):
        click.echo(
            f"qmill: no benchmark suite at {package}/run.py; `qmill bench` needs a source "
            "checkout of qmill that has bench/",
            err=True,
        )
        sys.exit(_exit_usage())
    completed = subprocess.run([sys.executable, "-m", "bench.run", *args], cwd=root, check=False)
    sys.exit(completed.returncode)


@click.command("config", short_help="Print the effective settings as JSON.")
@needs_server
def show_config() -> None:
    """Print the effective settings (defaults < config.toml < QMILL_* env) as JSON.

    Passwords and tokens in URLs (``[redis] url``, ``[nats] url``) are masked: the output
    is meant to be pasted into issues and read over shoulders.
    """
    from qmill.server import bus
    from qmill.urls import redact_urls

    settings = _settings_or_exit()
    data = settings.model_dump(mode="json")
    data["queue"] = bus.describe(settings)
    click.echo(json.dumps(redact_urls(data), indent=2))


@click.group()
def key() -> None:
    """Manage API keys (stored by the server only as SHA-256 hashes)."""


@key.command("new")
@needs_server
def key_new() -> None:
    """Print a new API key and the hash to configure for it.

    Give the key to its user; put the hash in [auth] api_key_hashes (or one per line
    in [auth] keys_file). The server never needs the key itself.
    """
    from qmill.server.auth import new_key

    api_key, key_hash = new_key()
    click.echo(f"key:  {api_key}")
    click.echo(f"hash: {key_hash}")


COMMANDS = (up, show_config, key, bench)
