"""What every wire model shares: the task statuses, the base classes (open to unknown
fields, or refusing them), JSON's integers and ids.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    WithJsonSchema,
)


class TaskStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})


class OpenModel(BaseModel):
    model_config = ConfigDict(extra="ignore")


class AnswerModel(OpenModel):
    """A response body: every field with a default is still always sent, so the schema
    lists it as required (pydantic would otherwise mark it optional)."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)


Uuid = Annotated[str, WithJsonSchema({"type": "string", "format": "uuid"})]
# A measured outcome: one bit per clbit, registers separated by spaces.
OUTCOME_PATTERN = "^[01 ]+$"


def json_integer(value: object) -> object:
    """JSON's integers, as JSON Schema (and so openapi.json) defines them: ``5`` and
    ``5.0`` are the same integer, ``"5"``, ``true`` and ``5.5`` are not. pydantic's lax
    mode accepted ``"5"`` and ``true`` (schemathesis' negative data found it)."""
    if value is None:
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be an integer")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("must be an integer")
        return int(value)
    return value


JsonInt = Annotated[int, BeforeValidator(json_integer)]


class RequestModel(BaseModel):
    # A public request body: an unknown field is refused, never ignored
    # (`qmill.server.tasks` turns pydantic's error into one that lists the fields).
    model_config = ConfigDict(extra="forbid")


def utcnow() -> datetime:
    return datetime.now(UTC)
