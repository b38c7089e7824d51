"""The OpenAPI 3.1 document of qmill's HTTP API (``openapi.json`` beside this module).

One file in the repo is the contract: the health function serves it at
``GET /openapi.json``, the e2e tests validate every response against it, and
schemathesis fuzzes the running system from it. The only thing that differs by
deployment is whether an API key is required: with ``[auth] enabled`` off (the local
``make run``), the served copy adds the empty requirement ``{}``, i.e. keys optional.
"""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from importlib import resources
from typing import Any


@lru_cache(maxsize=1)
def _load() -> dict[str, Any]:
    text = resources.files("qmill.server").joinpath("openapi.json").read_text(encoding="utf-8")
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
