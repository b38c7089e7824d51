"""infra/nginx/nginx.conf, the compose gateway, against the code.

nginx must route exactly the API (qmill.server.constants.ROUTES) to the right function, the
way qmill-gateway (the `make run` gateway) does: by path, leaving wrong verbs to the
functions. The config is read with crossplane, NGINX's own parser in Python (strict:
an unknown directive or a wrong argument count fails), and nginx's location matching is
replayed on it for every path the routing table suggests. test_runtime.py runs it in a
real nginx when one is installed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import crossplane  # type: ignore[import-untyped]
import gunicorn.config  # type: ignore[import-untyped]
import pytest

from qmill.server import constants, gateway, http, routes
from qmill.server.config import Settings
from tests.infra.conftest import NGINX_CONF, SettingsFrom, sample_path, seconds

Directive = dict[str, Any]


def parse_nginx(path: Path) -> list[Directive]:
    result = crossplane.parse(
        str(path), strict=True, check_ctx=True, check_args=True, comments=False
    )
    assert result["status"] == "ok", result["errors"]
    (conf,) = result["config"]
    parsed: list[Directive] = conf["parsed"]
    return parsed


def find(block: list[Directive], name: str) -> list[Directive]:
    return [d for d in block if d["directive"] == name]


def one(block: list[Directive], name: str) -> Directive:
    (found,) = find(block, name)
    return found


@dataclass(frozen=True)
class Location:
    modifier: str  # "=", "~", "~*", "^~", "" (prefix) or "@" (named)
    pattern: str
    block: list[Directive]

    @property
    def function(self) -> str | None:
        """The upstream it proxies to, or None when nginx answers itself."""
        passes = find(self.block, "proxy_pass")
        if not passes:
            return None
        (target,) = passes[0]["args"]
        return str(target).removeprefix("http://")


def locations(server: list[Directive]) -> list[Location]:
    out = []
    for loc in find(server, "location"):
        args = loc["args"]
        if len(args) == 2:
            modifier, pattern = args
        else:
            (pattern,) = args
            modifier = "@" if pattern.startswith("@") else ""
        out.append(Location(modifier, pattern, loc["block"]))
    return out


def select(locs: list[Location], path: str) -> Location | None:
    """nginx's choice of location for a URI: an exact match; else the longest prefix if it
    is ^~; else the first regex that matches, in file order; else the longest prefix."""
    for loc in locs:
        if loc.modifier == "=" and loc.pattern == path:
            return loc
    prefixes = [loc for loc in locs if loc.modifier in {"", "^~"} and path.startswith(loc.pattern)]
    longest = max(prefixes, key=lambda loc: len(loc.pattern), default=None)
    if longest is not None and longest.modifier == "^~":
        return longest
    for loc in locs:
        flags = re.IGNORECASE if loc.modifier == "~*" else 0
        if loc.modifier in {"~", "~*"} and re.search(loc.pattern, path, flags):
            return loc
    return longest


def nginx_location(pattern: str) -> tuple[str, str]:
    """The (modifier, pattern) of the nginx location that routes a ROUTES pattern."""
    if "{id}" in pattern:
        head, tail = pattern.split("{id}", 1)
        return "~", f"^{re.escape(head)}[^/]+{re.escape(tail)}$"
    if pattern.endswith("/") and pattern != "/":
        return "~", f"^{pattern}[^/]+$"
    return "=", pattern


def route_samples() -> list[str]:
    """Every path the routing table suggests, and the near misses around each."""
    paths = {"/", "/unknown", "/healthz", "/health/", "/TASKS", "/tasksx", "/tasks/a/b"}
    for _method, pattern, _function in constants.ROUTES:
        if "{id}" in pattern:
            head, tail = pattern.split("{id}", 1)
            paths |= {head + "3f2c" + tail, head + tail, head + "a/b" + tail}
            paths |= {head + "3f2c" + tail + "x", head + "3f2c" + tail.replace(".", "x")}
        elif pattern.endswith("/") and pattern != "/":
            stem = pattern.rstrip("/")
            paths |= {pattern, pattern + "3f2c", pattern + "a/b", pattern + "id/", stem}
        else:
            paths |= {pattern, pattern + "/", pattern + "x", pattern + "/x"}
    return sorted(paths)


@pytest.fixture(scope="module")
def http_block() -> list[Directive]:
    block: list[Directive] = one(parse_nginx(NGINX_CONF), "http")["block"]
    return block


@pytest.fixture(scope="module")
def public(http_block: list[Directive], services: dict[str, Any]) -> list[Directive]:
    """The server block on the port compose publishes."""
    (port,) = {int(p["target"]) for p in services["gateway"]["ports"]}
    (server,) = [
        s["block"]
        for s in find(http_block, "server")
        if one(s["block"], "listen")["args"][0] == str(port)
    ]
    return server


@pytest.fixture
def function_settings(services: dict[str, Any], settings_from: SettingsFrom) -> Settings:
    """What the functions behind the gateway run with (they share one configuration)."""
    env = {k: str(v) for k, v in services["submit"]["environment"].items()}
    return settings_from(env)


def test_compose_mounts_this_file(services: dict[str, Any], compose: dict[str, Any]) -> None:
    (mount,) = services["gateway"]["configs"]
    assert mount["target"] == "/etc/nginx/nginx.conf"
    assert Path(compose["configs"][mount["source"]]["file"]) == NGINX_CONF


@pytest.mark.parametrize("path", route_samples())
def test_nginx_routes_like_qmill_gateway(public: list[Directive], path: str) -> None:
    chosen = select(locations(public), path)
    assert chosen is not None, f"no location for {path}"
    assert chosen.function == gateway.route(path)


@pytest.mark.parametrize(("method", "pattern", "function"), constants.ROUTES)
def test_every_seed_route_reaches_its_function(
    public: list[Directive], method: str, pattern: str, function: str
) -> None:
    path = sample_path(pattern)
    chosen = select(locations(public), path)
    assert chosen is not None and chosen.function == function, (method, path)


def test_routes_are_exactly_the_seed_routes(public: list[Directive]) -> None:
    """Nothing but the routing table is proxied, and anything else is nginx's JSON 404."""
    proxied = {(loc.modifier, loc.pattern, loc.function) for loc in locations(public)}
    proxied = {p for p in proxied if p[2] is not None}
    expected = {(*nginx_location(pattern), function) for _m, pattern, function in constants.ROUTES}
    assert proxied == expected
    answered = {loc.modifier for loc in locations(public) if loc.function is None}
    assert answered == {"", "@"}
    (fallback,) = [loc for loc in locations(public) if loc.modifier == ""]
    assert fallback.pattern == "/"
    assert one(fallback.block, "return")["args"] == ["404", http.not_found().body.decode()]


def test_verbs_are_left_to_the_functions() -> None:
    """qmill-gateway routes by path only and each function answers a wrong verb (405 with
    Allow); nginx must not filter methods itself (limit_except would answer 403)."""
    text = NGINX_CONF.read_text(encoding="utf-8")
    assert "limit_except" not in text and "$request_method" not in text.split("log_format")[0]


def test_upstreams_are_the_function_containers(
    http_block: list[Directive], public: list[Directive], services: dict[str, Any]
) -> None:
    used = {loc.function for loc in locations(public)} - {None}
    assert used == set(constants.FUNCTION_NAMES)
    upstreams = {u["args"][0]: u["block"] for u in find(http_block, "upstream")}
    assert set(upstreams) == used
    for name, block in upstreams.items():
        server = one(block, "server")["args"]
        host, _, port = server[0].partition(":")
        (exposed,) = services[name]["expose"]
        assert (host, port) == (name, str(exposed))
        # Re-resolved while nginx runs, so a recreated container is found again.
        assert "resolve" in server[1:] and find(block, "zone")
        # An idle connection is dropped by nginx before the function drops it: its uvicorn
        # workers close idle connections after gunicorn's keepalive.
        idle = seconds(one(block, "keepalive_timeout")["args"][0])
        assert idle < gunicorn.config.Keepalive.default
    assert one(http_block, "resolver")["args"][0] == "127.0.0.11"


def test_body_limit_is_the_functions_limit(
    public: list[Directive], function_settings: Settings
) -> None:
    limit = function_settings.limits.max_body_bytes
    assert one(public, "client_max_body_size")["args"] == [str(limit)]
    (too_large,) = [loc for loc in locations(public) if loc.pattern == "@too_large"]
    status, body = one(too_large.block, "return")["args"]
    assert status == "413" and str(limit) in body
    assert ["413", "=", "@too_large"] in [e["args"] for e in find(public, "error_page")]


def test_header_limits_are_qmill_gateways(
    public: list[Directive], function_settings: Settings
) -> None:
    """nginx holds a client to what qmill-gateway does: the head's size (431, the same
    JSON) and the time it may take over its headers and between parts of its body."""
    server = function_settings.server
    count, size = one(public, "large_client_header_buffers")["args"]
    assert int(count) * int(size.removesuffix("k")) * 1024 == server.max_header_bytes
    assert ["494", "=431", "@headers_too_large"] in [e["args"] for e in find(public, "error_page")]
    (too_large,) = [loc for loc in locations(public) if loc.pattern == "@headers_too_large"]
    status, body = one(too_large.block, "return")["args"]
    assert status == "431" and json.loads(body)["allowed"] == server.max_header_bytes
    for timeout in ("client_header_timeout", "client_body_timeout"):
        assert seconds(one(public, timeout)["args"][0]) == server.client_timeout_seconds


def test_long_polls_end_at_the_function(
    public: list[Directive], function_settings: Settings
) -> None:
    read_timeout = seconds(one(public, "proxy_read_timeout")["args"][0])
    assert read_timeout > function_settings.server.max_wait_seconds


def test_event_streams_are_passed_on_unbuffered_and_outlive_their_heartbeats(
    public: list[Directive], function_settings: Settings
) -> None:
    server = function_settings.server
    for _method, pattern, _function in constants.ROUTES:
        if not routes.streaming(pattern):
            continue
        location = select(locations(public), pattern)
        assert location is not None and location.function == "result"
        assert one(location.block, "proxy_buffering")["args"] == ["off"]
        read_timeout = seconds(one(location.block, "proxy_read_timeout")["args"][0])
        assert read_timeout > server.max_event_stream_seconds
        assert read_timeout > 2 * server.event_heartbeat_seconds


def test_unavailable_function_is_a_json_503(public: list[Directive]) -> None:
    pages = [e["args"] for e in find(public, "error_page")]
    assert ["502", "503", "504", "=", "@unavailable"] in pages
    (unavailable,) = [loc for loc in locations(public) if loc.pattern == "@unavailable"]
    status, body = one(unavailable.block, "return")["args"]
    assert status == "503" and "$function" in body
    assert one(unavailable.block, "add_header")["args"] == ["Retry-After", "1", "always"]


def test_health_check_server_is_loopback_only(
    http_block: list[Directive], services: dict[str, Any]
) -> None:
    url = services["gateway"]["healthcheck"]["test"][-1]
    match = re.fullmatch(r"http://(127\.0\.0\.1:\d+)(/\S*)", url)
    assert match, url
    (server,) = [
        s["block"]
        for s in find(http_block, "server")
        if one(s["block"], "listen")["args"][0] == match.group(1)
    ]
    assert [loc.pattern for loc in locations(server)] == [match.group(2)]
    published = {str(p["target"]) for p in services["gateway"]["ports"]}
    assert match.group(1).split(":")[1] not in published
