"""The OpenAPI document itself: valid OpenAPI 3.1, and in step with the code."""

from __future__ import annotations

import httpx
from openapi_spec_validator import validate

from qmill.server import errors, openapi, routes
from qmill.server.models import ErrorBody, TaskView
from tests.openapi_check import Conformance


def test_the_document_is_valid_openapi_3_1() -> None:
    validate(openapi.document())
    validate(openapi.document(auth_enabled=False))


def test_every_routed_path_and_method_is_documented() -> None:
    paths = openapi.document()["paths"]
    for route in routes.ROUTES:
        method, template = route.method, route.path
        assert method.lower() in paths[template], (method, template)


def test_keys_are_optional_only_when_auth_is_off() -> None:
    assert {} not in openapi.document(auth_enabled=True)["security"]
    assert {} in openapi.document(auth_enabled=False)["security"]
    assert openapi.document()["paths"]["/health"]["get"]["security"] == []


def test_the_checker_catches_what_does_not_conform() -> None:
    check = Conformance().problems
    json_headers = httpx.Headers({"content-type": "application/json"})
    assert check("GET", "/health", 200, json_headers, b'{"status":"healthy","services":{}}')
    assert check("POST", "/tasks", 500, json_headers, b'{"detail":"internal error"}')
    assert check("POST", "/tasks", 429, json_headers, b'{"detail":"slow down"}')  # Retry-After
    assert check("PUT", "/tasks", 405, json_headers, b'{"detail":"no"}')  # no Allow
    assert check("GET", "/nowhere", 200, json_headers, b"{}")
    ok = httpx.Headers({"content-type": "application/json", "retry-after": "2"})
    assert check("POST", "/batches", 429, ok, b'{"detail":"slow down"}') == []


def test_the_committed_document_is_the_generated_one() -> None:
    """openapi.json is generated from the models, the route table and the errors; a change
    to any of them must be regenerated into the file that is served and reviewed."""
    committed = openapi.source_path().read_text(encoding="utf-8")
    assert committed == openapi.render(openapi.build()), (
        f"src/qmill/server/openapi/openapi.json is stale; regenerate it with: {openapi.REGENERATE}"
    )


def test_error_responses_use_the_errors_own_status() -> None:
    responses = openapi.document()["paths"]["/tasks"]["post"]["responses"]
    assert responses[str(errors.InvalidCircuit.status_code)]["$ref"].endswith("/InvalidCircuit")
    assert responses[str(errors.RateLimited.status_code)]["$ref"].endswith("/RateLimited")
    assert "Retry-After" in responses[str(errors.IdempotencyInProgress.status_code)]["headers"]


def test_schemas_come_from_the_models() -> None:
    schemas = openapi.document()["components"]["schemas"]
    assert set(schemas["TaskView"]["properties"]) == set(TaskView.model_fields) - {"owner"}
    assert "quantum_circuit" not in schemas["TaskView"]["required"]
    assert set(schemas["ErrorBody"]["properties"]) == set(ErrorBody.model_fields)


def test_every_reference_resolves() -> None:
    document = openapi.document()

    def refs(node: object) -> list[str]:
        if isinstance(node, dict):
            own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
            return own + [r for value in node.values() for r in refs(value)]
        if isinstance(node, list):
            return [r for value in node for r in refs(value)]
        return []

    for ref in refs(document):
        _, section, kind, name = ref.split("/")
        assert name in document[section][kind], ref
