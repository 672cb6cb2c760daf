"""The two ASGI middlewares every Veil app runs, outermost first:

1. `SecurityHeaders` adds HSTS and friends to every response, whatever produced it, unless the
   response set its own: an API response loads nothing (`Content-Security-Policy: default-src
   'none'`); only the docs page (veil.core.web.docs) relaxes that, for itself.
2. `RequestContext` gives each request an id and a client address, turns any unhandled exception
   into a generic 500 problem (logged without request data), writes one access line and records
   metrics by route template.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Sequence
from ipaddress import IPv4Network, IPv6Network

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from veil.core.addresses import is_ip, is_trusted
from veil.core.logging import bind_request, get_logger
from veil.core.metrics import Metrics
from veil.core.problems import INTERNAL_ERROR, PROBLEM_CONTENT_TYPE

log = get_logger("veil.access")

HSTS = b"max-age=63072000; includeSubDomains"
_SECURITY_HEADERS = (
    (b"strict-transport-security", HSTS),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)

        async def send_with_headers(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.http.response.start"):
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in _SECURITY_HEADERS if h[0] not in present)
                if b"cache-control" not in present:
                    # API responses are per-user; nothing may be cached by browsers or proxies.
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def client_address(scope: Scope, trusted_proxies: Sequence[IPv4Network | IPv6Network]) -> str:
    """The socket peer, or, when the peer is a trusted proxy, the nearest untrusted hop of
    X-Forwarded-For. An untrusted peer cannot choose its address by sending a header."""
    peer = (scope.get("client") or ("unknown", 0))[0]
    if not trusted_proxies or not is_trusted(peer, trusted_proxies):
        return str(peer)
    forwarded = ",".join(
        value.decode("latin-1") for name, value in scope.get("headers", []) if name == b"x-forwarded-for"
    )
    for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
        if not is_trusted(hop, trusted_proxies):
            return hop if is_ip(hop) else str(peer)
    return str(peer)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


class RequestContext:
    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        trusted_proxies: Sequence[IPv4Network | IPv6Network] = (),
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.trusted_proxies = tuple(trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)

        request_id = self._request_id(scope)
        ip = client_address(scope, self.trusted_proxies)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["client_ip"] = ip
        bind_request({"request_id": request_id})
        if scope["type"] == "websocket":
            return await self.app(scope, receive, send)

        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # The traceback is logged, the request's headers and body are not; the client gets
            # a generic problem with no detail.
            log.exception("unhandled_error", method=scope["method"], route=_route_template(scope))
            status = 500
            if not response_started:
                await _send_internal_error(send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = _route_template(scope)
            self.metrics.observe_request(scope["method"], route, status, elapsed)
            log.info(
                "request",
                method=scope["method"],
                route=route,
                status=status,
                duration_ms=round(elapsed * 1000, 2),
            )

    def _request_id(self, scope: Scope) -> str:
        incoming = _header(scope, b"x-request-id")
        peer = (scope.get("client") or ("", 0))[0]
        if incoming and _REQUEST_ID.match(incoming) and is_trusted(peer, self.trusted_proxies):
            return incoming
        return uuid.uuid4().hex


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "<unmatched>"


async def _send_internal_error(send: Send) -> None:
    body = orjson.dumps(INTERNAL_ERROR.document())
    await send(
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [
                (b"content-type", PROBLEM_CONTENT_TYPE.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
