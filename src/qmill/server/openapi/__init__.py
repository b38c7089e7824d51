"""The OpenAPI 3.1 document of qmill's HTTP API (``openapi.json`` beside this module).

One file in the repo is the contract: the health function serves it at
``GET /openapi.json``, the e2e tests validate every response against it, and
schemathesis fuzzes the running system from it. The only thing that differs by
deployment is whether an API key is required: with ``[auth] enabled`` off (the local
``make run``), the served copy adds the empty requirement ``{}``, i.e. keys optional.

The file is generated, not written: `build` takes the schemas from the pydantic wire
models, the paths from the route table (`qmill.server.routes`), the error statuses from
the errors themselves, and only the prose, parameters and examples from
`qmill.server.openapi.components` (shared parts) and `qmill.server.openapi.paths` (each
operation). The file is committed (and shipped in the package) so a
function serves it without building it, and so a change to the API shows in review;
tests/unit/test_openapi.py fails when it is stale. Regenerate it with::

    python -m qmill.server.openapi --write
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, models_json_schema
from pydantic_core import core_schema

from qmill.server import models, routes
from qmill.server.openapi import components, paths

FILE_NAME = "openapi.json"
REGENERATE = "python -m qmill.server.openapi --write"
REF_TEMPLATE = "#/components/schemas/{model}"

# Each body the API reads or sends, in the direction it travels: a request is read
# (validation), a response written (serialization).
SCHEMA_MODELS: tuple[tuple[type[BaseModel], JsonSchemaMode], ...] = (
    (models.SubmitRequest, "validation"),
    (models.SubmitResponse, "serialization"),
    (models.BatchRequest, "validation"),
    (models.BatchResponse, "serialization"),
    (models.BatchView, "serialization"),
    (models.TaskView, "serialization"),
    (models.HealthView, "serialization"),
    (models.ErrorBody, "serialization"),
    (models.NoCounts, "serialization"),
    (models.CircuitError, "serialization"),
    (models.BackendView, "serialization"),
    (models.TaskList, "serialization"),
)


class _Schema(GenerateJsonSchema):
    """pydantic's schemas, written the way a reader of the API document wants them."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False  # "title": "Task Id" beside "task_id" says nothing

    def nullable_schema(self, schema: core_schema.NullableSchema) -> Any:
        # {"type": ["integer", "null"]} rather than an anyOf, so the constraints a field
        # adds (minimum, items) sit beside the type they constrain.
        inner = self.generate_inner(schema["schema"])
        if isinstance(inner.get("type"), str):
            return {**inner, "type": [inner["type"], "null"]}
        return super().nullable_schema(schema)

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> Any:
        generated = super().default_schema(schema)
        if self.mode == "serialization":
            # A response field is always sent or deliberately left out: a default says
            # nothing to a reader and, for a field left out, would be null where null
            # is not allowed.
            generated.pop("default", None)
        return generated


def schemas() -> dict[str, Any]:
    """components/schemas, generated from `SCHEMA_MODELS`."""
    _, generated = models_json_schema(
        SCHEMA_MODELS, ref_template=REF_TEMPLATE, schema_generator=_Schema
    )
    found: dict[str, Any] = generated["$defs"]
    for schema in found.values():
        schema.pop("title", None)  # the component's name already says it
    return found


def build() -> dict[str, Any]:
    """The whole document, as ``--write`` stores it (security as with auth on)."""
    return {
        "openapi": "3.1.0",
        "info": components.INFO,
        "security": [{"bearerAuth": []}, {"apiKeyHeader": []}],
        "paths": paths.paths(routes.ROUTES),
        "components": {
            "securitySchemes": components.SECURITY_SCHEMES,
            "headers": components.HEADERS,
            "responses": components.error_responses(),
            "schemas": schemas(),
        },
    }


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def source_path() -> Path:
    """Where the committed file is (this package's directory, in a source checkout)."""
    return Path(__file__).with_name(FILE_NAME)


@lru_cache(maxsize=1)
def _load() -> dict[str, Any]:
    text = resources.files("qmill.server.openapi").joinpath(FILE_NAME).read_text(encoding="utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


def document(auth_enabled: bool = True) -> dict[str, Any]:
    """A copy of the document; with auth off, the security requirement made optional."""
    result = copy.deepcopy(_load())
    if not auth_enabled:
        result["security"] = [*result["security"], {}]
    return result


@lru_cache(maxsize=2)
def document_bytes(auth_enabled: bool) -> bytes:
    """The served body, encoded once per process."""
    return json.dumps(document(auth_enabled), separators=(",", ":")).encode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m qmill.server.openapi",
        description="Generate qmill's OpenAPI document from the models and the route table.",
    )
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true", help=f"rewrite {source_path()}")
    action.add_argument(
        "--check", action="store_true", help="exit 1 if the committed file is not the generated one"
    )
    args = parser.parse_args(argv)
    text = render(build())
    if args.write:
        source_path().write_text(text, encoding="utf-8")
    elif args.check:
        if source_path().read_text(encoding="utf-8") != text:
            print(f"{source_path()} is stale; run: {REGENERATE}", file=sys.stderr)
            return 1
    else:
        sys.stdout.write(text)
    return 0
