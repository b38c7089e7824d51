"""Cross-site requests with auth off (issue 13, item 10): which Host and Origin a request
may carry and which body types are read. The same cases go through the real system in
the abuse corpus (tests/e2e/test_abuse.py `cross_site`)."""

from __future__ import annotations

import asyncio
import json

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from qmill.server import hosts, routes
from qmill.server.config import ServerSettings
from qmill.server.errors import ForeignOrigin, MisdirectedRequest, UnsupportedMediaType
from qmill.server.http import Router, read_json, serve

LOCAL = ServerSettings()


@pytest.mark.parametrize(
    "host",
    ["localhost", "localhost:8000", "LOCALHOST.", "127.0.0.1:8000", "[::1]:8000", "[::1]"],
)
def test_loopback_names_are_allowed_by_default(host: str) -> None:
    hosts.check("POST", {"host": host, "origin": f"http://{host}"}, LOCAL)


@pytest.mark.parametrize(
    "host",
    ["evil.example", "evil.example:8000", "localhost.evil.example", "127.0.0.2", "", "a b", "x@y"],
)
def test_any_other_host_is_misdirected(host: str) -> None:
    with pytest.raises(MisdirectedRequest) as info:
        hosts.check("GET", {"host": host}, LOCAL)
    assert info.value.status_code == 421


@pytest.mark.parametrize(
    "origin", ["https://evil.example", "http://localhost.evil.example", "null", "x", "file://"]
)
def test_a_foreign_origin_may_read_but_not_write(origin: str) -> None:
    headers = {"host": "localhost:8000", "origin": origin}
    hosts.check("GET", headers, LOCAL)
    for method in ("POST", "DELETE"):
        with pytest.raises(ForeignOrigin) as info:
            hosts.check(method, headers, LOCAL)
        assert info.value.status_code == 403


def test_configured_names_domains_and_the_wildcard() -> None:
    server = ServerSettings(host="0.0.0.0", allowed_hosts=[".example.com", "Q.Example.Org"])
    assert hosts.allowed_names(server) == (*hosts.LOOPBACK, ".example.com", "q.example.org")
    for host in ("example.com", "api.example.com:443", "q.example.org", "127.0.0.1:8080"):
        hosts.check("POST", {"host": host, "origin": f"https://{host}"}, server)
    for host in ("badexample.com", "example.com.evil.net", "0.0.0.0"):
        with pytest.raises(MisdirectedRequest):
            hosts.check("GET", {"host": host}, server)
    # [server] host is served, whatever the list says.
    own = ServerSettings(host="qmill.lan", allowed_hosts=[])
    hosts.check("POST", {"host": "qmill.lan:8000", "origin": "http://qmill.lan:8000"}, own)
    anything = ServerSettings(allowed_hosts=["*"])
    hosts.check("POST", {"host": "evil.example", "origin": "null"}, anything)
    hosts.check("POST", {}, LOCAL)  # HTTP/1.0 without Host: not a browser


class _Body:
    def __init__(self, content_type: str | None) -> None:
        self.headers = {} if content_type is None else {"content-type": content_type}

    async def stream(self):  # type: ignore[no-untyped-def]
        yield b'{"a": 1}'


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"]
)
def test_json_bodies_are_read(content_type: str) -> None:
    assert asyncio.run(read_json(_Body(content_type), 1024)) == {"a": 1}  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "content_type",
    [None, "", "text/plain", "application/x-www-form-urlencoded", "text/json", "application/jsonx"],
)
def test_other_bodies_are_415_naming_the_accepted_type(content_type: str | None) -> None:
    with pytest.raises(UnsupportedMediaType) as info:
        asyncio.run(read_json(_Body(content_type), 1024))  # type: ignore[arg-type]
    assert info.value.status_code == 415 and info.value.allowed == ["application/json"]


async def test_a_misdirected_request_is_421_on_every_path_before_routing() -> None:
    async def handler(request: Request) -> Response:
        return JSONResponse({})

    operations = [r.operation for r in routes.ROUTES if r.function == "result"]
    router = Router("result", dict.fromkeys(operations, handler))
    for path in ("/", "/tasks/x", "/nowhere"):
        scope = {
            "type": "http",
            "method": "GET",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": [(b"host", b"rebound.evil.example")],
        }
        response = await serve(Request(scope), router)
        assert response.status_code == 421
        assert "allowed_hosts" in json.loads(bytes(response.body))["detail"]
