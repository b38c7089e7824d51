"""What qmill shows must not disclose more than it needs to (issue 13, item 11): the
credentials in URLs it prints, which host and process ran a task, and a page that other
sites could frame or inject script into."""

from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from qmill import cli
from qmill.server.functions import result
from qmill.urls import redact_url
from qmill_worker.consumer import default_worker_id


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@redis:6379/0", "redis://:***@redis:6379/0"),
        ("rediss://default:s3cret@redis.example:6380", "rediss://default:***@redis.example:6380"),
        ("nats://t0ken@nats:4222", "nats://***@nats:4222"),
        ("nats://user:p%40ss@nats:4222", "nats://user:***@nats:4222"),
        ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
        ("unix:///run/redis.sock", "unix:///run/redis.sock"),
        ("http://u:p@[::1]:8000/x?y=1", "http://u:***@[::1]:8000/x?y=1"),
        ("nats://a:pw@n1:4222,nats://n2:4222", "nats://a:***@n1:4222,nats://n2:4222"),
    ],
)
def test_urls_are_shown_without_their_credentials(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_qmill_config_masks_the_redis_and_nats_passwords(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QMILL_REDIS__URL", "redis://:hunter2@redis.internal:6379/0")
    monkeypatch.setenv("QMILL_NATS__URL", "nats://sekrit-token@nats.internal:4222")
    from qmill.server.config import get_settings

    get_settings.cache_clear()
    try:
        out = CliRunner().invoke(cli.main, ["config"])
    finally:
        get_settings.cache_clear()
    assert out.exit_code == 0, out.output
    assert "hunter2" not in out.output and "sekrit-token" not in out.output
    shown = json.loads(out.output)
    assert shown["redis"]["url"] == "redis://:***@redis.internal:6379/0"
    assert shown["nats"]["url"] == "nats://***@nats.internal:4222"


def test_worker_ids_are_opaque_and_fixed_per_process() -> None:
    ids = {default_worker_id() for _ in range(100)}
    assert len(ids) == 100 and all(re.fullmatch(r"w-[0-9a-f]{12}", i) for i in ids)
    assert not any(socket.gethostname() in i or str(os.getpid()) in i for i in ids)


def test_the_page_policy_allows_exactly_its_own_inline_script_and_style() -> None:
    """No browser here proves it (tests/e2e/test_web.py does where Chromium is): the
    policy's hashes are those of the page's one script and one style, and the page has
    nothing else inline that a strict policy would block."""
    page = result._page().decode()
    policy = {}
    for directive in result.page_csp().split("; "):
        name, _, value = directive.partition(" ")
        policy[name] = value
    assert policy["default-src"] == "'none'" and policy["frame-ancestors"] == "'none'"
    assert policy["connect-src"] == "'self'" and "unsafe" not in result.page_csp()
    assert len(re.findall(r"<script\b", page)) == 1 and len(re.findall(r"<style\b", page)) == 1
    assert len(policy["script-src"].split()) == 1 and len(policy["style-src"].split()) == 1
    # Inline event handlers, style attributes and javascript: URLs need 'unsafe-inline'.
    assert not re.search(r"\son[a-z]+\s*=|\sstyle\s*=|javascript:", page, re.IGNORECASE)


async def test_the_page_is_served_with_the_policy_and_no_framing() -> None:
    response = await result._get_page(None)  # type: ignore[arg-type]
    assert response.headers["content-security-policy"] == result.page_csp()
    assert response.headers["x-frame-options"] == "DENY"
