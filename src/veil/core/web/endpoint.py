"""Declaring an HTTP operation once: its route, body model, responses and documented errors.

An `Endpoint` becomes a Starlette route and an OpenAPI operation from the same declaration, so the
published document cannot drift from what the server accepts. Handlers stay thin: parse (done
here), one service call, a response.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from veil.core.problems import FieldError, Problem, unauthorized, validation_failed
from veil.core.security.authn import Principal
from veil.core.security.tokens import InvalidToken
from veil.core.web.params import QueryParam, parse_query

if TYPE_CHECKING:
    from veil.core.resources import Resources

Handler = Callable[..., Awaitable[Response]]
Guard = Callable[[Request, Principal], Awaitable[None]]
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    body: type[BaseModel] | None = None
    # False: the body may be left out altogether (no bytes), and the handler then gets None.
    body_required: bool = True
    # Success statuses and their body models (None: no body).
    responses: Mapping[int, type[BaseModel] | None] = field(default_factory=lambda: {200: None})
    # Problem statuses this operation may answer with, beyond those implied below.
    errors: tuple[int, ...] = ()
    authenticated: bool = True
    rate_limited: bool = False
    touches_backend: bool = True
    # Runs after authentication, before the body or the query is read: a caller it refuses learns
    # nothing from validation errors (the operator API is a 404 to everyone else).
    guard: Guard | None = None
    # Every query parameter the handler reads: parsed before it runs (a 422 for a bad one) and
    # published in the OpenAPI document from this same declaration.
    query: tuple[QueryParam, ...] = ()
    # For the OpenAPI document: what `summary` leaves out (the rules, the side effects, when to
    # call it). Who may call it and its rate limit are added from the fields above.
    description: str = ""
    # An example request body, when the body model's own example (its `examples`, or one built from
    # its schema) does not show the operation well.
    example: Any = None
    # A success response that is not a JSON model (text, HTML, a document built elsewhere): its
    # media type and an example of it.
    produces: str = "application/json"
    response_example: Any = None

    def documented_errors(self) -> list[int]:
        implied = set(self.errors)
        if self.body is not None:
            implied |= {413, 415, 422}
        if self.query:
            implied.add(422)
        if self.authenticated:
            implied.add(401)
        if self.rate_limited:
            implied.add(429)
        if self.touches_backend:
            implied.add(503)
        return sorted(implied)

    async def call(self, request: Request, max_body_bytes: int) -> Response:
        """Run the handler as `handler(request[, principal][, body])`: the principal when the
        endpoint is authenticated, the parsed body when it has one."""
        args: list[Any] = []
        if self.authenticated:
            principal = await authenticate(request)
            if self.guard is not None:
                await self.guard(request, principal)
            args.append(principal)
        request.state.query = parse_query(request, self.query)
        if self.body is not None and self.body_required:
            args.append(await parse_json_body(request, self.body, max_body_bytes))
        elif self.body is not None:
            args.append(await parse_optional_json_body(request, self.body, max_body_bytes))
        return await self.handler(request, *args)


def routes(endpoints: Sequence[Endpoint], max_body_bytes: int) -> list[Route]:
    """One Starlette route per path, dispatching on the method, so that a 405 lists in `Allow`
    every method the path supports (separate routes per method would each list only their own)."""
    by_path: dict[str, dict[str, Endpoint]] = {}
    for endpoint in endpoints:
        by_path.setdefault(endpoint.path, {})[endpoint.method] = endpoint

    def dispatcher(methods: dict[str, Endpoint]) -> Callable[[Request], Awaitable[Response]]:
        async def dispatch(request: Request) -> Response:
            method = "GET" if request.method == "HEAD" else request.method
            return await methods[method].call(request, max_body_bytes)

        return dispatch

    return [
        Route(path, dispatcher(methods), methods=list(methods), name=path)
        for path, methods in by_path.items()
    ]


def bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def authenticate(request: Request) -> Principal:
    """401 unless the bearer token is valid and its session active; 503 if that cannot be known."""
    token = bearer_token(request)
    if token is None:
        raise unauthorized()
    resources: Resources = state_of(request, "resources")
    try:
        principal = await resources.authenticator.authenticate(token)
    except InvalidToken:
        raise unauthorized() from None
    request.state.principal = principal
    return principal


async def read_body(request: Request, limit: int) -> bytes:
    """Read at most `limit` bytes; a longer body is a 413 before it is all buffered."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise Problem(413, f"The request body exceeds {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Problem(413, f"The request body exceeds {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


def _is_json(content_type: str | None) -> bool:
    if content_type is None:
        return False
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


def field_errors(error: ValidationError) -> list[FieldError]:
    # Only location and message: pydantic's `input` would echo passwords or plaintext back.
    return [FieldError(tuple(e["loc"]), e["msg"]) for e in error.errors(include_input=False)]


async def parse_json_body(request: Request, model: type[M], limit: int) -> M:
    if not _is_json(request.headers.get("content-type")):
        raise Problem(415, "The request body must be application/json.")
    return _validated(model, await read_body(request, limit))


async def parse_optional_json_body(request: Request, model: type[M], limit: int) -> M | None:
    """None when the request carries no body bytes at all, whatever its headers say (clients that
    send nothing must keep working); anything else must be JSON matching the model."""
    raw = await read_body(request, limit)
    if not raw:
        return None
    if not _is_json(request.headers.get("content-type")):
        raise Problem(415, "The request body must be application/json.")
    return _validated(model, raw)


def _validated(model: type[M], raw: bytes) -> M:
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise validation_failed(field_errors(exc)) from None


def json_response(model: BaseModel, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        model.model_dump_json(),
        status_code=status,
        media_type="application/json",
        headers=dict(headers or {}),
    )


def raw_json_response(content: bytes, status: int = 200) -> Response:
    return Response(content, status_code=status, media_type="application/json")


def no_content() -> Response:
    return Response(status_code=204)


def state_of(request: Request, name: str) -> Any:
    """A service object built in the lifespan (see `ServiceModule.build`)."""
    return getattr(request.state, name)
