"""``qmill``: one entry point for people and scripts.

Exit codes: 0 success, 1 the operation failed, 2 bad usage or configuration.
"""

from __future__ import annotations

import asyncio
import json
import sys

import click

from qmill import bus
from qmill.config import Settings, get_settings
from qmill.errors import ConfigError
from qmill.logs import setup_logging


def _settings_or_exit() -> Settings:
    try:
        return get_settings()
    except ConfigError as exc:
        click.echo(f"qmill: {exc}", err=True)
        sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """qmill runs OpenQASM circuits as a service."""


@main.command()
def up() -> None:
    """Start the whole system in the foreground (what `make run` does).

    Starts nats-server and redis-server (unless their URLs are remote), the three
    functions, the workers and the gateway on [server] host:port. Ctrl-C stops all.
    """
    from qmill import embedded

    settings = _settings_or_exit()
    setup_logging(settings.log, service="supervisor")
    click.echo(
        f"qmill: starting on http://{settings.server.host}:{settings.server.port} "
        f"(data in {settings.embedded.data_dir}/); Ctrl-C stops everything",
        err=True,
    )
    sys.exit(asyncio.run(embedded.up(settings)))


@main.command("config")
def show_config() -> None:
    """Print the effective settings (defaults < config.toml < QMILL_* env) as JSON."""
    settings = _settings_or_exit()
    data = settings.model_dump(mode="json")
    data["queue"] = bus.describe(settings)
    click.echo(json.dumps(data, indent=2))


@main.group()
def key() -> None:
    """Manage API keys (stored by the server only as SHA-256 hashes)."""


@key.command("new")
def key_new() -> None:
    """Print a new API key and the hash to configure for it.

    Give the key to its user; put the hash in [auth] api_key_hashes (or one per line
    in [auth] keys_file). The server never needs the key itself.
    """
    from qmill.auth import new_key

    api_key, key_hash = new_key()
    click.echo(f"key:  {api_key}")
    click.echo(f"hash: {key_hash}")
