"""Path and query parameters, parsed the same way everywhere: a malformed id is the same 404 as a
missing resource (no oracle), a malformed number a 422 naming the parameter."""

from __future__ import annotations

import uuid
from typing import overload

from starlette.requests import Request

from veil.core.problems import FieldError, not_found, validation_failed


def path_uuid(request: Request, name: str) -> uuid.UUID:
    try:
        return uuid.UUID(request.path_params[name])
    except ValueError:
        raise not_found() from None


@overload
def query_int(request: Request, name: str, low: int, high: int, default: int) -> int: ...


@overload
def query_int(request: Request, name: str, low: int, high: int, default: None = None) -> int | None: ...


def query_int(request: Request, name: str, low: int, high: int, default: int | None = None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise validation_failed([FieldError(("query", name), f"Must be an integer from {low} to {high}.")])
    return int(raw)


def uuid_cursor(request: Request) -> uuid.UUID | None:
    """A `?cursor=` that is an id from an earlier page (lists ordered by id), or None."""
    raw = request.query_params.get("cursor")
    try:
        return uuid.UUID(raw) if raw else None
    except ValueError:
        raise validation_failed([FieldError(("query", "cursor"), "Not a cursor from this API.")]) from None
