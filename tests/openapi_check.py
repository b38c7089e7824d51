"""Validate HTTP responses against qmill's OpenAPI document (src/qmill/server/openapi/openapi.json).

`Conformance.problems` says what is wrong with one response: a status code the
document does not list for the operation, a body that does not match its schema, a
content type it does not list, or a required header (Retry-After, Allow,
WWW-Authenticate) that is missing or malformed. Paths the document does not list must
be 404s, and listed paths with unlisted methods 405s with ``Allow``, both with the
error body. ``/metrics``, ``/livez`` and ``/readyz`` are not part of the public API (each
process answers them about itself, `routes.PROCESS_PATHS`) and are not checked.

tests/e2e/conftest.py installs this on every httpx client an e2e test creates.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from qmill.server import openapi, routes

BASE = "urn:qmill-openapi"
NOT_PUBLIC = frozenset(routes.PROCESS_PATHS)


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


@dataclass(frozen=True)
class _Path:
    pattern: re.Pattern[str]
    template: str
    item: dict[str, Any]


class Conformance:
    def __init__(self, document: Mapping[str, Any] | None = None) -> None:
        self.document: dict[str, Any] = dict(document or openapi.document())
        resource = Resource.from_contents(self.document, default_specification=DRAFT202012)
        self._registry: Registry[Any] = Registry().with_resource(BASE, resource)
        self._validators: dict[str, Draft202012Validator] = {}
        self._paths = [
            _Path(
                re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(t)) + "$"),
                t,
                item,
            )
            for t, item in self.document["paths"].items()
        ]
        # Literal paths win over templated ones (OpenAPI's matching rule).
        self._paths.sort(key=lambda p: "{" in p.template)

    def _resolve(self, obj: dict[str, Any], pointer: str) -> tuple[dict[str, Any], str]:
        while "$ref" in obj:
            pointer = obj["$ref"].removeprefix("#")
            obj = self.document
            for part in pointer.strip("/").split("/"):
                obj = obj[part.replace("~1", "/").replace("~0", "~")]
        return obj, pointer

    def _validator(self, pointer: str) -> Draft202012Validator:
        if pointer not in self._validators:
            self._validators[pointer] = Draft202012Validator(
                {"$ref": f"{BASE}#{pointer}"},
                registry=self._registry,
                format_checker=Draft202012Validator.FORMAT_CHECKER,
            )
        return self._validators[pointer]

    def _match(self, path: str) -> _Path | None:
        return next((p for p in self._paths if p.pattern.match(path)), None)

    def problems(
        self, method: str, path: str, status: int, headers: httpx.Headers, body: bytes
    ) -> list[str]:
        """Everything that does not conform, as readable sentences ([] when it conforms)."""
        if path in NOT_PUBLIC:
            return []
        method = method.lower()
        found = self._match(path)
        if found is None:
            if status == 404:
                return self._check_response(
                    "/components/responses/NotFound", method, status, headers, body
                )
            return [f"{path} is not in the document, so it must be a 404, not {status}"]
        operation = found.item.get("get" if method == "head" else method)
        if operation is None:
            component = {405: "MethodNotAllowed", 413: "PayloadTooLarge"}.get(status)
            if component is None:
                return [f"{method.upper()} is not documented for {found.template}: expected 405"]
            return self._check_response(
                f"/components/responses/{component}", method, status, headers, body
            )
        op_pointer = f"/paths/{_escape(found.template)}/{'get' if method == 'head' else method}"
        responses = operation["responses"]
        key = str(status) if str(status) in responses else f"{str(status)[0]}XX"
        if key not in responses:
            key = "default"
        if key not in responses:
            return [
                f"{method.upper()} {found.template} answered {status}, which the document does "
                f"not list ({', '.join(responses)})"
            ]
        return self._check_response(f"{op_pointer}/responses/{key}", method, status, headers, body)

    def _check_response(
        self, pointer: str, method: str, status: int, headers: httpx.Headers, body: bytes
    ) -> list[str]:
        where = f"{method.upper()} -> {status}"
        response, pointer = self._resolve(self._get(pointer), pointer)
        found: list[str] = []
        for name, header in response.get("headers", {}).items():
            header_pointer = f"{pointer}/headers/{_escape(name)}"
            header, header_pointer = self._resolve(header, header_pointer)
            value = headers.get(name)
            if value is None:
                if header.get("required"):
                    found.append(f"{where}: missing required header {name}")
                continue
            errors = list(self._validator(f"{header_pointer}/schema").iter_errors(value))
            found += [f"{where}: header {name}={value!r}: {e.message}" for e in errors]
        content = response.get("content")
        if not content or method == "head":
            return found
        media = headers.get("content-type", "").split(";")[0].strip()
        if media not in content:
            return [*found, f"{where}: content type {media!r} is not one of {list(content)}"]
        if not media.endswith("json"):
            return found  # a picture or a page: its media type is what is checked
        try:
            data = json.loads(body)
        except ValueError as exc:
            return [*found, f"{where}: body is not JSON ({exc}): {body[:200]!r}"]
        schema_pointer = f"{pointer}/content/{_escape(media)}/schema"
        for error in self._validator(schema_pointer).iter_errors(data):
            location = "/".join(str(p) for p in error.absolute_path) or "(body)"
            found.append(f"{where}: body {location}: {error.message[:300]}")
        return found

    def _get(self, pointer: str) -> dict[str, Any]:
        obj: Any = self.document
        for part in pointer.strip("/").split("/"):
            obj = obj[part.replace("~1", "/").replace("~0", "~")]
        return dict(obj)

    def check(self, response: httpx.Response) -> list[str]:
        request = response.request
        return self.problems(
            request.method,
            request.url.path,
            response.status_code,
            response.headers,
            response.content,
        )


CONFORMANCE = Conformance()
_exempt: list[str] = []


@contextlib.contextmanager
def off_contract(reason: str) -> Iterator[None]:
    """Responses received inside are not checked: for requests that deliberately go
    around the public API (e.g. to one function directly, for another function's path)."""
    _exempt.append(reason)
    try:
        yield
    finally:
        _exempt.pop()


def exempt() -> bool:
    return bool(_exempt)
