"""The NATS VMs' configuration, as cloud-init writes it, run by a real nats-server: a
client without the password is refused, one with the URL from Secret Manager's format
gets in and uses JetStream.

The Cloud Run module renders templates/nats.conf.tftpl into templates/nats-cloud-init.yaml
.tftpl with the user and the bcrypt hash of random_password.nats; this test renders the
same two templates with Terraform itself (addresses, ports and paths local), writes the
files cloud-init would write, and starts the server on them.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import nats
import pytest
import yaml

from qmill.server import constants
from qmill.server.embedded import binary
from qmill.server.ports import free_port
from qmill.server.processes import Process
from tests.conftest import require_binary
from tests.infra.hcl import MODULES

TEMPLATES = MODULES / "cloudrun" / "templates"
USER = "qmill"
PASSWORD = "correct-horse-battery-staple-0123"  # random_password: 32 alphanumerics


def console(expression: str) -> str:
    """What `terraform console` prints for expression (a string, decoded)."""
    env = {**os.environ, "TF_CLI_CONFIG_FILE": os.devnull, "CHECKPOINT_DISABLE": "1"}
    out = subprocess.run(
        ["terraform", "console"],
        input=f"jsonencode({expression})",
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=TEMPLATES,
        timeout=60,
    ).stdout
    value: str = json.loads(json.loads(out))
    return value


@pytest.fixture
def vm_config(tmp_path: Path) -> tuple[Path, int]:
    """/etc/nats of one NATS VM, with local ports and paths: (config file, client port)."""
    require_binary("terraform", "renders the NATS VM's cloud-init as the module does")
    client, monitor = free_port(), free_port()
    nats_conf = {
        "server_name": "nats-0",
        "host": "127.0.0.1",
        "client_port": client,
        "monitor_port": monitor,
        "client_advertise": f"127.0.0.1:{client}",
        "store_dir": str(tmp_path / "jetstream"),
        "sync_interval": constants.NATS_SYNC_INTERVAL,
        "cluster_name": "qmill-nats",
        "cluster_port": free_port(),
        "cluster_advertise": "127.0.0.1:1",
        "routes": [],
    }
    user_data = console(
        f"templatefile({json.dumps(str(TEMPLATES / 'nats-cloud-init.yaml.tftpl'))}, {{"
        f'image = "nats", auth_user = {json.dumps(USER)}, '
        f"auth_password_hash = bcrypt({json.dumps(PASSWORD)}), "
        f"nats_conf = templatefile({json.dumps(str(TEMPLATES / 'nats.conf.tftpl'))}, "
        f"jsondecode({json.dumps(json.dumps(nats_conf))}))}})"
    )
    assert user_data.startswith("#cloud-config\n")
    etc = tmp_path / "etc-nats"
    etc.mkdir()
    written = {}
    for item in yaml.safe_load(user_data)["write_files"]:
        if item["path"].startswith("/etc/nats/") and item["path"].endswith(".conf"):
            target = etc / Path(item["path"]).name
            target.write_text(item["content"])
            written[target.name] = item["content"]
    assert set(written) == {"nats.conf", "auth.conf"}
    assert PASSWORD not in written["auth.conf"]  # only its bcrypt hash
    return etc / "nats.conf", client


def refused(port: int, credentials: dict[str, str]) -> dict[str, Any]:
    """CONNECT with credentials, PING: the server answers Authorization Violation.
    Returns the server's INFO."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        stream = sock.makefile("rwb")
        line = stream.readline().decode()
        assert line.startswith("INFO "), line
        info: dict[str, Any] = json.loads(line[5:])
        connect = {"verbose": False, "pedantic": False, "protocol": 1, **credentials}
        stream.write(f"CONNECT {json.dumps(connect)}\r\nPING\r\n".encode())
        stream.flush()
        answer = stream.readline().decode()
        assert answer.startswith("-ERR") and "Authorization Violation" in answer, answer
        stream.close()
    return info


async def test_the_nats_vm_refuses_clients_without_the_password(
    vm_config: tuple[Path, int], tmp_path: Path
) -> None:
    conf, port = vm_config
    server = Process(
        "nats-vm",
        [binary("nats-server"), "--config", str(conf)],
        port=port,
        log=tmp_path / "nats.log",
    )
    server.spawn()
    try:
        server.wait_ready()
        # The protocol itself (nats.py leaves sockets open on a refused connect).
        info = refused(port, {})
        assert info["auth_required"] is True
        refused(port, {"user": USER, "pass": "wrong"})
        client = await nats.connect(f"nats://{USER}:{PASSWORD}@127.0.0.1:{port}", connect_timeout=2)
        try:
            js = client.jetstream()
            await js.add_stream(name="AUTH_CHECK", subjects=["auth.check"])
            ack = await js.publish("auth.check", b"x")
            assert ack.seq == 1
        finally:
            await client.close()
    finally:
        server.stop()
