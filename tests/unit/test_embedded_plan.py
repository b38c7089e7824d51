"""What `qmill up` starts: its own servers, or none when told it runs against others."""

from __future__ import annotations

from pathlib import Path

import pytest

from qmill.server import embedded
from qmill.server.config import Settings
from qmill.server.errors import ConfigError


def names(settings: Settings) -> list[str]:
    return [service.name for service in embedded.services(settings)]


def settings(tmp_path: Path, **embedded_config: object) -> Settings:
    return Settings.model_validate(
        {"embedded": {"data_dir": str(tmp_path), **embedded_config}, "worker": {"processes": 1}}
    )


def test_local_servers_are_started_by_default(tmp_path: Path) -> None:
    assert names(settings(tmp_path))[:2] == ["nats", "redis"]


@pytest.mark.parametrize(
    ("flags", "absent"),
    [
        ({"start_nats": False}, {"nats"}),
        ({"start_redis": False}, {"redis"}),
        ({"start_nats": False, "start_redis": False}, {"nats", "redis"}),
    ],
)
def test_servers_it_did_not_start(tmp_path: Path, flags: dict[str, bool], absent: set[str]) -> None:
    planned = names(settings(tmp_path, **flags))
    assert absent.isdisjoint(planned)
    assert {"nats", "redis"} - absent <= set(planned)
    assert "worker-1" in planned and "api" in planned


def test_flags_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("QMILL_EMBEDDED__START_NATS", "false")
    monkeypatch.setenv("QMILL_EMBEDDED__START_REDIS", "0")
    loaded = Settings(embedded={"data_dir": tmp_path})  # type: ignore[arg-type]
    assert not loaded.embedded.start_nats and not loaded.embedded.start_redis
    assert {"nats", "redis"}.isdisjoint(names(loaded))


def test_no_redis_is_started_behind_sentinel(tmp_path: Path) -> None:
    behind = Settings.model_validate(
        {
            "embedded": {"data_dir": str(tmp_path)},
            "redis": {"sentinels": "127.0.0.1:26379,127.0.0.1:26380"},
        }
    )
    assert "redis" not in names(behind)
    assert "nats" in names(behind)


CLUSTER = "nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224"


def test_a_server_list_is_not_started_as_one_server(tmp_path: Path) -> None:
    """`qmill up` cannot start a cluster: a list with start_nats on is refused, naming
    the way out, instead of starting one nats-server for the first URL."""
    listed = Settings.model_validate(
        {"embedded": {"data_dir": str(tmp_path)}, "nats": {"url": CLUSTER}}
    )
    with pytest.raises(ConfigError, match=r"lists 3 servers.*start_nats = false"):
        embedded.services(listed)
    against = listed.model_copy(
        update={"embedded": listed.embedded.model_copy(update={"start_nats": False})}
    )
    assert "nats" not in [service.name for service in embedded.services(against)]
