"""Base types for wire models (request and response bodies).

Wire models are kept apart from tables and domain objects: a field added here reaches the network
and nothing else. Requests are strict (no coercion, unknown fields refused) so that a stray
`is_admin` or `plaintext` is a 422, never silently dropped.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, PlainSerializer, WithJsonSchema


def format_timestamp(value: datetime) -> str:
    """RFC 3339 UTC with milliseconds, e.g. `2026-01-01T00:00:00.000Z`."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


Timestamp = Annotated[
    datetime,
    PlainSerializer(format_timestamp, return_type=str, when_used="json"),
    # Without this the published schema of a response timestamp would be a bare string.
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


class RequestModel(BaseModel):
    """A request body: strict types, no unknown fields."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class ResponseModel(BaseModel):
    """A response body: exactly the documented fields (`additionalProperties: false`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
