"""Settings precedence (defaults < config.toml < env) and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from qmill.server.config import load_settings
from qmill.server.errors import ConfigError


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no ./config.toml unless a test writes one
    for name in list(__import__("os").environ):
        if name.startswith("QMILL_"):
            monkeypatch.delenv(name)


def test_defaults() -> None:
    settings = load_settings()
    assert settings.server.port == 8000
    assert settings.nats.url == "nats://127.0.0.1:4222"
    assert settings.redis.result_ttl_seconds == 7 * 24 * 3600
    assert settings.worker.concurrency >= 1


def test_toml_overrides_defaults_and_env_overrides_toml(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "config.toml").write_text(
        '[server]\nport = 9000\nhost = "0.0.0.0"\n[worker]\nmax_concurrent_tasks = 3\n'
    )
    assert load_settings().server.port == 9000
    monkeypatch.setenv("QMILL_SERVER__PORT", "18000")
    settings = load_settings()
    assert settings.server.port == 18000  # env wins
    assert settings.server.host == "0.0.0.0"  # toml still applies to other keys
    assert settings.worker.concurrency == 3


def test_qmill_config_names_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere.toml"
    other.write_text('[redis]\nurl = "redis://10.0.0.5:6379"\n')
    monkeypatch.setenv("QMILL_CONFIG", str(other))
    assert load_settings().redis.url == "redis://10.0.0.5:6379"
    monkeypatch.setenv("QMILL_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match=r"missing\.toml"):
        load_settings()


@pytest.mark.parametrize(
    ("env", "value", "names"),
    [
        ("QMILL_WORKER__MAX_CONCURRENT_TASKS", "many", "[worker] max_concurrent_tasks"),
        ("QMILL_SERVER__PORT", "70000", "QMILL_SERVER__PORT"),
        ("QMILL_NATS__URL", "http://x:4222", "[nats] url"),
        ("QMILL_WORKER__EXECUTOR", "gpu", "QMILL_WORKER__EXECUTOR"),
        ("QMILL_REDIS__SENTINELS", "10.0.0.1", "[redis] sentinels"),
        ("QMILL_REDIS__SENTINELS", "10.0.0.1:26379,", "[redis] sentinels"),
        ("QMILL_REDIS__SENTINELS", "10.0.0.1:70000", "[redis] sentinels"),
        ("QMILL_REDIS__SENTINELS", "a b:26379", "[redis] sentinels"),
        ("QMILL_REDIS__SENTINEL_MASTER", "my master", "[redis] sentinel_master"),
        ("QMILL_REDIS__REPLICA_ACK_TIMEOUT_SECONDS", "0", "[redis] replica_ack_timeout_seconds"),
    ],
)
def test_bad_value_names_the_key(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, names: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert names in str(info.value)


def test_unknown_key_in_toml_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("[worker]\nmax_concurent_tasks = 3\n")
    with pytest.raises(ConfigError, match="max_concurent_tasks"):
        load_settings()


def test_env_names_cover_every_setting() -> None:
    from qmill.server.config import env_names

    names = env_names()
    assert "QMILL_WORKER__MAX_CONCURRENT_TASKS" in names
    assert "QMILL_NATS__URL" in names
    assert "QMILL_CONFIG" in names
    assert "QMILL_WORKER__NOPE" not in names


def test_worker_memory_follows_budget_and_slots(monkeypatch: pytest.MonkeyPatch) -> None:
    from qmill.server.config import PROCESS_OVERHEAD_BYTES

    monkeypatch.setenv("QMILL_WORKER__MAX_CONCURRENT_TASKS", "2")
    monkeypatch.setenv("QMILL_WORKER__MEMORY_BUDGET_MB", "1024")
    small = load_settings().worker_memory_bytes
    monkeypatch.setenv("QMILL_WORKER__MEMORY_BUDGET_MB", "3072")
    assert load_settings().worker_memory_bytes - small == 2048 * 1024 * 1024
    monkeypatch.setenv("QMILL_WORKER__MAX_CONCURRENT_TASKS", "3")
    assert load_settings().worker_memory_bytes - small == 2048 * 1024 * 1024 + (
        PROCESS_OVERHEAD_BYTES
    )


@pytest.mark.parametrize(
    ("budget_mb", "max_qubits", "limit"),
    [(2048, 26, 26), (2048, 30, 27), (1024, 30, 26), (16, 30, 20)],
)
def test_statevector_qubit_limit_follows_memory(
    monkeypatch: pytest.MonkeyPatch, budget_mb: int, max_qubits: int, limit: int
) -> None:
    monkeypatch.setenv("QMILL_WORKER__MEMORY_BUDGET_MB", str(budget_mb))
    monkeypatch.setenv("QMILL_LIMITS__MAX_QUBITS", str(max_qubits))
    settings = load_settings()
    assert settings.statevector_qubit_limit == limit
    assert 16 * 2**limit <= settings.memory_budget_bytes


def test_sentinels_are_host_port_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().redis.sentinel_addresses == []  # empty: Redis at `url` directly
    monkeypatch.setenv("QMILL_REDIS__SENTINELS", " s-0.svc:26379, 10.0.0.2:26380,[::1]:26381")
    assert load_settings().redis.sentinel_addresses == [
        ("s-0.svc", 26379),
        ("10.0.0.2", 26380),
        ("::1", 26381),
    ]


def test_replica_ack_must_answer_before_the_call_times_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QMILL_REDIS__MIN_REPLICAS_TO_ACK", "1")
    monkeypatch.setenv("QMILL_REDIS__REPLICA_ACK_TIMEOUT_SECONDS", "1.0")
    with pytest.raises(ConfigError, match="replica_ack_timeout_seconds must be below"):
        load_settings()


def test_nats_url_takes_a_list_of_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QMILL_NATS__URL", " nats://a:4222, tls://b:4222 ,nats://c:4222")
    nats = load_settings().nats
    assert nats.servers == ["nats://a:4222", "tls://b:4222", "nats://c:4222"]
    assert nats.url == "nats://a:4222,tls://b:4222,nats://c:4222"


@pytest.mark.parametrize(
    ("url", "named"),
    [("nats://a:4222,http://b:4222", "http://b:4222"), (" , ", "no server")],
)
def test_every_listed_nats_server_is_checked(
    monkeypatch: pytest.MonkeyPatch, url: str, named: str
) -> None:
    monkeypatch.setenv("QMILL_NATS__URL", url)
    with pytest.raises(ConfigError, match=r"\[nats\] url") as raised:
        load_settings()
    assert named in str(raised.value)
