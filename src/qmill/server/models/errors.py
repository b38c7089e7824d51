"""Error bodies: what `qmill.server.http.error_response` sends."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    Field,
)
from pydantic.json_schema import SkipJsonSchema

from qmill.server.models.common import (
    OpenModel,
    TaskStatus,
)


class ValidationIssue(OpenModel):
    """One problem with a request body, as pydantic reports it."""

    type: str
    loc: list[str | int]
    msg: str


# The optional fields of an error body are left out when they do not apply, never null:
# SkipJsonSchema[None] keeps null out of the schema.
class ErrorBody(OpenModel):
    """Every error is JSON with a `detail`; the other fields come with some errors."""

    detail: (
        Annotated[str, Field(min_length=1)] | Annotated[list[ValidationIssue], Field(min_length=1)]
    )
    line: Annotated[int, Field(ge=1)] | SkipJsonSchema[None] = None
    column: Annotated[int, Field(ge=1)] | SkipJsonSchema[None] = None
    limit: str | SkipJsonSchema[None] = Field(
        default=None, description="With a 422 over a limit, or a 429 over a quota: which one."
    )
    allowed: Any = Field(
        default=None,
        description="With a 422 over a limit or a 429 over a quota: the allowed value; with a "
        "405: the allowed methods; with a 415: the accepted media type.",
    )
    service: str | SkipJsonSchema[None] = Field(
        default=None,
        description="With a 503: `nats`, `redis`, or `auth` (the keys file cannot be read).",
    )
    index: Annotated[int, Field(ge=0)] | SkipJsonSchema[None] = Field(
        default=None,
        description="With an error about one task of a batch: its position in `tasks`.",
    )


class CircuitError(ErrorBody):
    """A program that does not parse; `line` and `column` are 1-based when known."""

    detail: Annotated[str, Field(pattern="^invalid OpenQASM: ")]


class NoCounts(ErrorBody):
    """A histogram asked of a task without counts: `status` says what it is."""

    status: TaskStatus
