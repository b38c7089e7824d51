"""The one launcher (`qmill.server.launcher`) keeps what the fault campaign relies on: a
server killed with SIGKILL comes back on its port with its data, a frozen one answers
nothing until it is resumed, and `stop` leaves nothing running, not even a grandchild
that left its process group."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis

from qmill.server.launcher import MARK_ENV, Launcher
from qmill.server.processes import Process
from tests.conftest import REPO


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    system = Launcher(tmp_path, cwd=REPO)
    try:
        yield system
    finally:
        system.stop()


def test_a_killed_server_restarts_on_its_port_with_its_data(launcher: Launcher) -> None:
    launcher.redis.start()
    client = redis.Redis.from_url(launcher.redis_url, socket_timeout=2)
    try:
        client.set("kept", "yes")
        launcher.redis.kill()
        assert not launcher.redis.alive()
        launcher.redis.start()
        assert client.get("kept") == b"yes"  # appendfsync always: acknowledged is on disk
    finally:
        client.close()


def test_a_paused_server_answers_nothing_until_resumed(launcher: Launcher) -> None:
    launcher.redis.start()
    client = redis.Redis.from_url(launcher.redis_url, socket_timeout=0.5)
    try:
        launcher.redis.pause()
        with pytest.raises(redis.TimeoutError):
            client.ping()
        launcher.redis.resume()
        assert client.ping()
    finally:
        client.close()


def test_stop_leaves_nothing_running(launcher: Launcher, tmp_path: Path) -> None:
    # A child that starts a grandchild in a session of its own: killing the child's
    # process group does not reach it; the mark it inherited does.
    escape = (
        "import subprocess, time; "
        "subprocess.Popen(['sleep', '300'], start_new_session=True); time.sleep(300)"
    )
    assert launcher.env[MARK_ENV] == launcher.mark
    argv = [sys.executable, "-c", escape]
    child = Process("escape", argv, env=launcher.env, log=tmp_path / "escape.log")
    child.spawn()
    launcher.services.append(child)
    launcher.redis.start()
    deadline = time.monotonic() + 10
    while not any("sleep 300" in line for line in launcher.leftovers()):
        assert time.monotonic() < deadline, "the grandchild never started"
        time.sleep(0.05)
    left = launcher.stop()
    assert any("sleep 300" in line for line in left), left
    assert launcher.leftovers() == []


def test_stop_reaches_a_descendant_that_overwrote_its_environment(
    launcher: Launcher, tmp_path: Path
) -> None:
    # redis-server sets its title over its environment, so the mark it inherited is gone
    # and only its parent says whose it is. `env -i` does the same to the grandchild.
    spawn = (
        "import subprocess, time; "
        "subprocess.Popen(['env', '-i', 'sleep', '301'], start_new_session=True); "
        "time.sleep(300)"
    )
    child = Process(
        "parent", [sys.executable, "-c", spawn], env=launcher.env, log=tmp_path / "p.log"
    )
    child.spawn()
    launcher.services.append(child)
    deadline = time.monotonic() + 10
    while not any("sleep 301" in line for line in launcher.leftovers()):
        assert time.monotonic() < deadline, "the grandchild never started"
        time.sleep(0.05)
    launcher.stop(kill=True)
    assert not [
        p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", "301"]
    ]
