"""Errors as data: RFC 9457 problem documents.

Service code raises `Problem` (or one of the helpers below); the web layer turns it into an
`application/problem+json` response. Nothing here knows about HTTP frameworks, so the service layer
can raise problems without importing web code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

PROBLEM_CONTENT_TYPE = "application/problem+json"
_TYPE_BASE = "https://veil.dev/problems/"


@dataclass(frozen=True)
class FieldError:
    """One validation failure: where (`loc`) and what (`msg`); never the offending value."""

    loc: tuple[str | int, ...]
    msg: str


@dataclass
class Problem(Exception):
    """An error a client can act on. `slug` names its type; `extra` adds top-level fields."""

    status: int
    detail: str
    slug: str | None = None
    title: str | None = None
    errors: list[FieldError] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.detail)

    def document(self) -> dict[str, Any]:
        phrase = HTTPStatus(self.status).phrase
        slug = self.slug or phrase.lower().replace(" ", "-").replace("'", "")
        doc: dict[str, Any] = {
            "type": _TYPE_BASE + slug,
            "title": self.title or phrase,
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors is not None:
            doc["errors"] = [{"loc": list(e.loc), "msg": e.msg} for e in self.errors]
        doc.update(self.extra)
        return doc


def not_found(detail: str = "The resource does not exist.") -> Problem:
    return Problem(404, detail)


def unauthorized(detail: str = "Missing, invalid or expired credentials.") -> Problem:
    return Problem(401, detail, headers={"WWW-Authenticate": "Bearer"})


def forbidden(detail: str) -> Problem:
    return Problem(403, detail)


def conflict(detail: str, **extra: Any) -> Problem:
    return Problem(409, detail, extra=extra)


def too_many_requests(retry_after_seconds: int) -> Problem:
    wait = max(1, retry_after_seconds)
    return Problem(
        429,
        f"Rate limit exceeded; retry in {wait} s.",
        headers={"Retry-After": str(wait)},
    )


def unavailable(detail: str = "A backing service is unavailable; retry shortly.") -> Problem:
    return Problem(503, detail, headers={"Retry-After": "5"})


def validation_failed(errors: list[FieldError]) -> Problem:
    return Problem(422, "The request does not match the schema.", slug="validation", errors=errors)


INTERNAL_ERROR = Problem(500, "An unexpected error occurred.", slug="internal")


class BackendUnavailable(Exception):
    """The database or object store cannot be reached in time. The web layer answers 503.

    Raised by adapters instead of their driver's exceptions so that callers never depend on a
    driver, and so that a security check that cannot be made fails closed.
    """
