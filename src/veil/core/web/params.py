"""Path and query parameters, parsed the same way everywhere: a malformed id is the same 404 as a
missing resource (no oracle), a malformed query parameter a 422 naming the parameter.

A query parameter is declared once, as an `IntQuery` or a `UuidQuery` in the endpoint's `query`:
the endpoint parses every declared parameter before its handler runs (`parse_query`) and the
OpenAPI document describes the same declaration, so what the server accepts and what it publishes
cannot drift, and fuzzers exercise exactly the parameters the code reads. Handlers read the parsed
value with `PARAM(request)`; reading a parameter the endpoint did not declare is a programming
error, not something a client can cause.

Parsing is strict on purpose. `str.isdigit()` accepts '²' and other Unicode digits that `int()`
refuses (a 500), and `int()` itself accepts '٣', '+5', ' 5', '5_000' and takes quadratic time on
numbers thousands of digits long; `uuid.UUID()` accepts braces, URNs and Unicode digits. Here an
integer is 1 to 19 ASCII digits (every value fits a PostgreSQL bigint) and a uuid is its canonical
8-4-4-4-12 hexadecimal form, and anything else is refused before it is converted.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from starlette.requests import Request

from veil.core.problems import FieldError, not_found, validation_failed

# The largest PostgreSQL bigint: every id, seq and cursor fits in one.
MAX_BIGINT = 2**63 - 1
_DIGITS = re.compile(r"[0-9]{1,19}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

D = TypeVar("D", int, None)


def parse_uuid(raw: str) -> uuid.UUID | None:
    """The uuid in canonical form, or None for anything else."""
    return uuid.UUID(raw) if _UUID.fullmatch(raw) else None


def path_uuid(request: Request, name: str) -> uuid.UUID:
    value = parse_uuid(request.path_params[name])
    if value is None:
        raise not_found()
    return value


class QueryParam(Protocol):
    """What an endpoint needs of a declared query parameter: its name, how to parse one value
    (`ValueError` with a message for the client when it is malformed) and how to describe it in
    the OpenAPI document."""

    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...

    def parse(self, raw: str) -> Any: ...

    def default_value(self) -> Any: ...

    def schema(self) -> dict[str, Any]: ...

    @property
    def required(self) -> bool: ...


def _parsed(request: Request, name: str) -> Any:
    values: dict[str, Any] | None = getattr(request.state, "query", None)
    if values is None or name not in values:
        raise LookupError(f"query parameter {name!r} is not declared by this endpoint")
    return values[name]


@dataclass(frozen=True)
class IntQuery(Generic[D]):
    """An integer from `low` to `high` (at most `MAX_BIGINT`); `default` when absent."""

    name: str
    low: int
    high: int
    default: D
    description: str
    # Absent is a 422 (and the OpenAPI document says `required`); `default` is then unused.
    required: bool = False

    def __post_init__(self) -> None:
        assert 0 <= self.low <= self.high <= MAX_BIGINT, "ASCII digits cannot say a negative number"

    def parse(self, raw: str) -> int:
        if _DIGITS.fullmatch(raw) is None or not self.low <= int(raw) <= self.high:
            raise ValueError(f"Must be an integer from {self.low} to {self.high}.")
        return int(raw)

    def default_value(self) -> D:
        return self.default

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "integer", "minimum": self.low, "maximum": self.high}
        if self.default is not None:
            schema["default"] = self.default
        return schema

    def __call__(self, request: Request) -> int | D:
        value: int | D = _parsed(request, self.name)
        return value


@dataclass(frozen=True)
class UuidQuery:
    """A uuid in canonical form (a cursor from an earlier page, an id to look up); None when absent."""

    name: str
    description: str
    message: str = "Must be a UUID."
    required: bool = False

    def parse(self, raw: str) -> uuid.UUID:
        value = parse_uuid(raw)
        if value is None:
            raise ValueError(self.message)
        return value

    def default_value(self) -> None:
        return None

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "format": "uuid"}

    def __call__(self, request: Request) -> uuid.UUID | None:
        value: uuid.UUID | None = _parsed(request, self.name)
        return value


def parse_query(request: Request, declared: tuple[QueryParam, ...]) -> dict[str, Any]:
    """Every declared parameter, parsed, or a 422 listing each bad one. A parameter given twice is
    refused rather than resolved by picking one: the server and a cache or proxy in front of it
    could pick differently. Undeclared parameters are ignored, as HTTP caches and tools add them."""
    values: dict[str, Any] = {}
    errors: list[FieldError] = []
    for param in declared:
        raw = request.query_params.getlist(param.name)
        if len(raw) > 1:
            errors.append(FieldError(("query", param.name), "Give this parameter at most once."))
            continue
        if not raw and param.required:
            errors.append(FieldError(("query", param.name), "This parameter is required."))
            continue
        try:
            values[param.name] = param.parse(raw[0]) if raw else param.default_value()
        except ValueError as exc:
            errors.append(FieldError(("query", param.name), str(exc)))
    if errors:
        raise validation_failed(errors)
    return values


# The parameters every list shares (API.md: `?limit=` default 50, max 200; `?cursor=` from the
# previous page's `next_cursor`).
LIMIT = IntQuery("limit", 1, 200, 50, "How many items to return at most (1 to 200, default 50).")
ID_CURSOR = UuidQuery(
    "cursor",
    "The `next_cursor` of the previous page; omit it for the first page.",
    "Not a cursor from this API.",
)
