"""`GET /v1/ws` (WebSocket) and `POST /v1/ws/tickets`."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from veil.core.logging import get_logger, note_handshake_refused
from veil.core.problems import (
    BackendUnavailable,
    FieldError,
    Problem,
    too_many_requests,
    unauthorized,
    unavailable,
    validation_failed,
)
from veil.core.resources import Resources
from veil.core.security.authn import Principal
from veil.core.security.ratelimit import Rate, limiter_key
from veil.core.security.tokens import InvalidToken
from veil.core.web.app import ServiceModule
from veil.core.web.endpoint import Endpoint, json_response, raw_json_response, state_of
from veil.core.web.errors import problem_response
from veil.core.wire import ResponseModel, Timestamp
from veil.keys.service import KeysService
from veil.messaging import store as messaging_store
from veil.messaging.service import MessagingService
from veil.realtime import store
from veil.realtime.asyncapi import encoded_asyncapi
from veil.realtime.connection import CLOSE_SESSION_ENDED, DeviceConnection
from veil.realtime.cursors import CursorWriter
from veil.realtime.hub import Hub

log = get_logger(__name__)

TAG = "realtime"
TICKET_LIFETIME = timedelta(seconds=30)
BATCH_PARAM = "batch"
_MINUTE = 60.0


class Ticket(ResponseModel):
    ticket: str
    expires_at: Timestamp


@dataclass
class Realtime:
    hub: Hub
    cursors: CursorWriter
    resources: Resources
    _writing: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.hub.start()
        self._writing = asyncio.create_task(self.cursors.run_forever(), name="cursor-writer")

    async def drain(self) -> None:
        """Before the server stops: close every socket with 1001 once in-flight sends are done."""
        await self.hub.close()

    async def close(self) -> None:
        await self.hub.close()
        if self._writing is not None:
            self._writing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writing
            self._writing = None
        with contextlib.suppress(BackendUnavailable):  # what cannot be written is redelivered
            await self.cursors.flush()

    async def _limit(self, purpose: str, subject: str, per_minute: int, **context: str) -> None:
        """One named budget (shared by every process, docs/adr/0008); 429 beyond it."""
        decision = await self.resources.limiter.hit(
            limiter_key(purpose, subject),
            Rate.per_window(per_minute, _MINUTE),
            self.resources.clock.now().timestamp(),
        )
        if not decision.allowed:
            log.warning("security_event", kind="rate_limited", scope=purpose, **context)
            raise too_many_requests(decision.retry_after_seconds)

    async def check_connect_rate_ip(self, ip: str) -> None:
        """Before any credential is looked at: handshakes cost database reads even when refused."""
        await self._limit("ws-connect-ip", ip, self.resources.settings.ws_connects_per_ip_per_minute, ip=ip)

    async def check_connect_rate_user(self, principal: Principal) -> None:
        user = str(principal.user_id)
        await self._limit("ws-connect", user, self.resources.settings.ws_connects_per_minute, user_id=user)

    async def issue_ticket(self, principal: Principal) -> tuple[str, datetime]:
        """A ticket is random, and carries the expiry of the access token that asked for it: its
        socket must not outlive that token either. Only its hash is stored, and the hash covers the
        expiry, so a ticket with an edited expiry matches no row."""
        user = str(principal.user_id)
        await self._limit("ws-ticket", user, self.resources.settings.ws_tickets_per_minute, user_id=user)
        now = self.resources.clock.now()
        token_expires_at = principal.token_expires_at
        if token_expires_at is None:  # not from a token: no longer than a token would live
            token_expires_at = int(now.timestamp()) + self.resources.settings.access_token_ttl_seconds
        random_part = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
        ticket = f"{random_part}.{token_expires_at}"
        expires_at = now + TICKET_LIFETIME
        async with self.resources.db.transaction("realtime_ticket") as conn:
            await store.insert_ticket(
                conn, hashlib.sha256(ticket.encode()).digest(), principal.session_id, expires_at
            )
        return ticket, expires_at

    async def authenticate(self, websocket: WebSocket) -> Principal:
        """Bearer header (native clients) or a single-use ticket (browsers); InvalidToken otherwise."""
        header = websocket.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return await self.resources.authenticator.authenticate(token.strip())
        ticket = websocket.query_params.get("ticket")
        if not ticket or len(ticket) > 100:
            raise InvalidToken
        _, _, exp = ticket.rpartition(".")
        if not (exp.isascii() and exp.isdigit() and len(exp) <= 12):
            raise InvalidToken
        now = self.resources.clock.now()
        async with self.resources.db.transaction("realtime_consume_ticket") as conn:
            found = await store.consume_ticket(conn, hashlib.sha256(ticket.encode()).digest(), now)
        # The token that asked for the ticket expired meanwhile: nothing left to open a socket for.
        if found is None or int(exp) <= now.timestamp():
            raise InvalidToken
        if not await self.resources.sessions.is_active(found[1], now):
            raise InvalidToken
        return Principal(found[0], found[1], int(exp))


async def create_ticket(request: Request, principal: Principal) -> Response:
    realtime: Realtime = state_of(request, "realtime")
    ticket, expires_at = await realtime.issue_ticket(principal)
    return json_response(Ticket(ticket=ticket, expires_at=expires_at), status=201)


async def refuse_handshake(websocket: WebSocket, problem: Problem) -> None:
    """An HTTP problem instead of the upgrade: the client's doing, so logged at info."""
    await websocket.send_denial_response(problem_response(problem))
    note_handshake_refused(problem.status)


def wants_batches(websocket: WebSocket) -> bool:
    """`?batch=true`: messages in `messages` frames. Given once, `true` or `false`, or a 422."""
    values = websocket.query_params.getlist(BATCH_PARAM)
    if not values:
        return False
    if len(values) == 1 and values[0] in ("true", "false"):
        return values[0] == "true"
    raise validation_failed([FieldError(("query", BATCH_PARAM), "Must be true or false, given once.")])


async def websocket_endpoint(websocket: WebSocket) -> None:
    realtime: Realtime = websocket.state.realtime
    metrics = realtime.resources.metrics
    allowed = realtime.resources.settings.ws_allowed_origins
    origin = websocket.headers.get("origin")
    if origin is not None and origin not in allowed:
        metrics.ws_handshakes["origin_refused"].inc()
        await refuse_handshake(websocket, Problem(403, "This origin may not open a WebSocket."))
        return
    try:
        batching = wants_batches(websocket)
    except Problem as malformed:
        metrics.ws_handshakes["invalid"].inc()
        await refuse_handshake(websocket, malformed)
        return
    try:
        await realtime.check_connect_rate_ip(websocket.state.client_ip)
        principal = await realtime.authenticate(websocket)
        await realtime.check_connect_rate_user(principal)
    except InvalidToken:
        metrics.ws_handshakes["unauthorized"].inc()
        await refuse_handshake(websocket, unauthorized())
        return
    except BackendUnavailable:
        metrics.ws_handshakes["unavailable"].inc()
        await refuse_handshake(websocket, unavailable())
        return
    except Problem as refused:  # over a connect budget: 429 with Retry-After
        metrics.ws_handshakes["rate_limited"].inc()
        await refuse_handshake(websocket, refused)
        return
    messaging: MessagingService = websocket.state.messaging
    keys: KeysService = websocket.state.keys
    db = realtime.resources.db

    async def read_page(conversation_id: uuid.UUID, after: int) -> list[messaging_store.MessageRecord]:
        async with db.connection() as conn:
            return await messaging_store.messages_for_member(
                conn, conversation_id, principal.user_id, after, 200
            )

    await websocket.accept()
    metrics.ws_handshakes["accepted"].inc()
    metrics.ws_connections.inc()
    connection = DeviceConnection(
        websocket,
        principal,
        messaging,
        keys,
        read_page,
        realtime.cursors,
        metrics,
        realtime.resources.clock,
        batching=batching,
    )
    reason = "error"
    try:
        await realtime.hub.register(connection)
        # A revocation notified between authentication and registration found no socket to close.
        if not await realtime.resources.sessions.is_active(
            principal.session_id, realtime.resources.clock.now()
        ):
            connection.close(CLOSE_SESSION_ENDED)
        await connection.run()
        reason = connection.end_reason
    finally:
        realtime.hub.unregister(connection)
        metrics.ws_connections.dec()
        metrics.ws_disconnects[reason].inc()


async def asyncapi_document(_: Request) -> Response:
    return raw_json_response(encoded_asyncapi())


def build(resources: Resources) -> Realtime:
    hub = Hub(
        resources.db,
        resources.notifications,
        resources.clock,
        resources.settings.ws_recheck_seconds,
    )
    return Realtime(hub, CursorWriter(resources.db), resources)


MODULE = ServiceModule(
    "realtime",
    [
        Endpoint(
            "POST",
            "/v1/ws/tickets",
            create_ticket,
            "A single-use, 30-second ticket for `GET /v1/ws?ticket=`.",
            TAG,
            responses={201: Ticket},
            rate_limited=True,
        ),
        Endpoint(
            "GET",
            "/v1/asyncapi.json",
            asyncapi_document,
            "The WebSocket protocol (`GET /v1/ws`) as an AsyncAPI 3.0 document.",
            TAG,
            description="Generated from the frame models the server sends and parses.",
            authenticated=False,
            touches_backend=False,
            response_example={"asyncapi": "3.0.0", "info": {"title": "Veil realtime", "version": "1"}},
        ),
    ],
    build=build,
    extra_routes=(WebSocketRoute("/v1/ws", websocket_endpoint),),
)
