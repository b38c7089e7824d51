"""Every HTTP response an e2e test receives must conform to the OpenAPI document.

An autouse fixture adds a response hook to every httpx client created during an e2e
test (sync and async), so existing tests are checked without being rewritten: a
response whose status code, body or required headers the document does not describe
fails the test where it was received, with what did not conform.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.system import System, running_system
from tests.openapi_check import CONFORMANCE, exempt


class NonConforming(AssertionError):
    pass


def _streams(response: httpx.Response) -> bool:
    """An event stream (GET /events): its status and headers are checked, its body is
    the test's to read as it comes (reading it here would wait for its end)."""
    return response.headers.get("content-type", "").startswith("text/event-stream")


def _fail_if_nonconforming(response: httpx.Response, seen: list[str]) -> None:
    if exempt():
        return
    if _streams(response) and not response.is_stream_consumed:
        request = response.request
        problems = CONFORMANCE.problems(
            request.method, request.url.path, response.status_code, response.headers, b""
        )
    else:
        problems = CONFORMANCE.check(response)
    if problems:
        request = response.request
        message = f"{request.method} {request.url} does not conform to openapi.json: " + "; ".join(
            problems
        )
        seen.append(message)
        raise NonConforming(message)


@pytest.fixture(autouse=True)
def openapi_conformance(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Check every response; also fail at teardown if a test swallowed the error."""
    seen: list[str] = []
    responses: list[int] = []

    def sync_hook(response: httpx.Response) -> None:
        if not _streams(response):
            response.read()
        responses.append(response.status_code)
        _fail_if_nonconforming(response, seen)

    async def async_hook(response: httpx.Response) -> None:
        if not _streams(response):
            await response.aread()
        responses.append(response.status_code)
        _fail_if_nonconforming(response, seen)

    def hooked(cls: Any, hook: Any) -> Any:
        original = cls.__init__

        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            hooks = dict(kwargs.pop("event_hooks", None) or {})
            hooks["response"] = [*hooks.get("response", []), hook]
            original(self, *args, event_hooks=hooks, **kwargs)

        return __init__

    monkeypatch.setattr(httpx.Client, "__init__", hooked(httpx.Client, sync_hook))
    monkeypatch.setattr(httpx.AsyncClient, "__init__", hooked(httpx.AsyncClient, async_hook))
    yield seen
    assert not seen, "\n".join(seen)


@pytest.fixture(scope="package")
def default_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """The system as `make run` starts it, shared by the modules that need nothing else
    of it (each start costs a few seconds of the suite's budget). Stopped when the e2e
    tests end: later tests check that no simulation or parse process is running."""
    with running_system(tmp_path_factory.mktemp("default")) as running:
        yield running
