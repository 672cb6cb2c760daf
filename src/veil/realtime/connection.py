"""One device's WebSocket: replay, live delivery, acknowledgements and sends.

Delivery is pull-based: a notification only marks a conversation "dirty"; the writer then reads
every message after what it last sent, from the database. Replay on connect is the same read from
the device's acknowledged cursor, so there is one code path, nothing is skipped when a notification
is lost, and nothing is queued in memory per message. Events without a row of their own
(membership, receipt, keys_changed, replies) go through a small bounded queue; a client too slow to
drain it is closed with 4408 instead of holding memory.

Each connection runs a reader and a writer in one task group: when either ends (the client left, a
close was requested, an error), the other is cancelled with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from veil.core.clock import Clock
from veil.core.logging import get_logger
from veil.core.metrics import Metrics
from veil.core.problems import BackendUnavailable, Problem
from veil.core.security.authn import Principal
from veil.core.web.endpoint import field_errors
from veil.keys.service import KeysService
from veil.messaging import store as messaging_store
from veil.messaging.schemas import Envelope
from veil.messaging.service import MessagingService, OutgoingMessage
from veil.realtime.cursors import CursorWriter
from veil.realtime.frames import (
    BATCH_MAX_BYTES,
    BATCH_MAX_MESSAGES,
    AckDeviceFrame,
    AckFrame,
    DeviceGapFrame,
    EncodedMessage,
    ErrorFrame,
    SentFrame,
    ServerFrame,
    device_message_frame,
    messages_frame,
)

log = get_logger(__name__)
F = TypeVar("F", bound=BaseModel)

CLOSE_SHUTDOWN = 1001
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_SESSION_ENDED = 4401
CLOSE_TOO_SLOW = 4408
CLOSE_REPLACED = 4409
_EVENT_QUEUE = 256
# A client that has not taken a frame for this long is too slow (its TCP window stayed full).
_SEND_TIMEOUT = 10.0
_PAGE = 200
# Why a socket ended, by the code the server closed it with (None: the client closed or dropped).
_END_REASONS = {
    None: "client",
    CLOSE_SHUTDOWN: "shutdown",
    CLOSE_UNSUPPORTED_DATA: "unsupported_data",
    CLOSE_SESSION_ENDED: "session_ended",
    CLOSE_TOO_SLOW: "too_slow",
    CLOSE_REPLACED: "replaced",
}


class DeviceConnection:
    def __init__(
        self,
        websocket: WebSocket,
        principal: Principal,
        messaging: MessagingService,
        keys: KeysService,
        read_page: Callable[[uuid.UUID, int], Awaitable[list[messaging_store.MessageRecord]]],
        cursors: CursorWriter,
        metrics: Metrics,
        clock: Clock,
        *,
        batching: bool = False,
    ) -> None:
        self.websocket = websocket
        self.principal = principal
        self.token = uuid.uuid4().hex
        self._messaging = messaging
        self._keys = keys
        self._read_page = read_page
        self._cursors = cursors
        self._metrics = metrics
        self._clock = clock
        self._token_expired = False
        self._sent: dict[uuid.UUID, int] = {}
        self._dirty: set[uuid.UUID] = set()
        # Messages the hub already read for every socket of the conversation (one read per message
        # per process, not per socket); used when they are exactly the next ones to send.
        self._ready: dict[uuid.UUID, list[EncodedMessage]] = {}
        self._device_dirty = True
        self._device_sent = 0
        # `?batch=true`: the messages of one writer pass go out in `messages` frames.
        self._batching = batching
        self._batch: list[str] = []
        self._batch_bytes = 0
        self._events: asyncio.Queue[ServerFrame] = asyncio.Queue(_EVENT_QUEUE)
        self._wake = asyncio.Event()
        self._wake.set()  # the first pass replays the device's mailbox
        self._close_code: int | None = None
        self._stop = asyncio.Event()

    @property
    def user_id(self) -> uuid.UUID:
        return self.principal.user_id

    @property
    def device_id(self) -> uuid.UUID:
        return self.principal.session_id

    @property
    def end_reason(self) -> str:
        """Why the socket ended, once `run()` has returned (a metric label)."""
        if self._token_expired:
            return "token_expired"
        return _END_REASONS.get(self._close_code, "error")

    @property
    def conversations(self) -> set[uuid.UUID]:
        return set(self._sent)

    # --- called by the hub -------------------------------------------------------------------

    def subscribe(self, conversation_id: uuid.UUID, after_seq: int) -> None:
        self._sent.setdefault(conversation_id, after_seq)
        self.wake(conversation_id)

    def unsubscribe(self, conversation_id: uuid.UUID) -> None:
        self._sent.pop(conversation_id, None)
        self._dirty.discard(conversation_id)
        self._ready.pop(conversation_id, None)

    def offer(self, message: EncodedMessage) -> None:
        """A freshly committed message the hub read and encoded once for all sockets. Sent as it
        is when it is the next one this socket needs; the database is read only on a gap."""
        conversation_id = message.record.conversation_id
        if conversation_id in self._sent:
            ready = self._ready.setdefault(conversation_id, [])
            if len(ready) < _PAGE:
                ready.append(message)
            else:
                self._dirty.add(conversation_id)  # too many held: read the rest
            self._wake.set()

    def wake(self, conversation_id: uuid.UUID) -> None:
        if conversation_id in self._sent:
            self._dirty.add(conversation_id)
            self._wake.set()

    def wake_device(self) -> None:
        self._device_dirty = True
        self._wake.set()

    def push(self, frame: ServerFrame) -> None:
        try:
            self._events.put_nowait(frame)
        except asyncio.QueueFull:
            self.close(CLOSE_TOO_SLOW)
        self._wake.set()

    def close(self, code: int) -> None:
        if self._close_code is None:
            self._close_code = code
        self._wake.set()
        self._stop.set()  # also unblocks a writer stuck on a client that stopped reading

    # --- the connection's own tasks ------------------------------------------------------------

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                tasks = {
                    group.create_task(self._reader()),
                    group.create_task(self._writer()),
                    group.create_task(self._stop.wait()),
                }
                if self.principal.token_expires_at is not None:
                    tasks.add(group.create_task(self._expire_with_token(self.principal.token_expires_at)))
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in tasks:
                    task.cancel()
        except* (WebSocketDisconnect, ConnectionError):
            pass
        finally:
            # Its acks are written before the device can reconnect and replay from its cursors.
            with contextlib.suppress(BackendUnavailable):  # kept pending: the writer retries
                await self._cursors.flush()
            await self._close_socket()

    async def _expire_with_token(self, expires_at: int) -> None:
        """A socket lives no longer than the access token that opened it: the client reconnects
        with a fresh token (or a ticket) and replay resumes where it acknowledged."""
        await asyncio.sleep(max(0.0, expires_at - time.time()))
        self._token_expired = self._close_code is None
        self.close(CLOSE_SESSION_ENDED)

    async def _close_socket(self) -> None:
        if self.websocket.application_state != WebSocketState.DISCONNECTED:
            with contextlib.suppress(RuntimeError, ConnectionError, WebSocketDisconnect, TimeoutError):
                async with asyncio.timeout(2):
                    await self.websocket.close(self._close_code or 1000)

    async def _send(self, frame: ServerFrame) -> None:
        await self._send_text(frame.encode())

    async def _send_text(self, text: str) -> None:
        try:
            async with asyncio.timeout(_SEND_TIMEOUT):
                await self.websocket.send_text(text)
        except TimeoutError:
            self.close(CLOSE_TOO_SLOW)
            raise asyncio.CancelledError from None

    async def _writer(self) -> None:
        while self._close_code is None:
            await self._wake.wait()
            self._wake.clear()
            while not self._events.empty() and self._close_code is None:
                await self._send(self._events.get_nowait())
            if self._device_dirty and self._close_code is None:
                self._device_dirty = False
                await self._deliver_device_messages()
            while (self._dirty or self._ready) and self._close_code is None:
                if self._dirty:  # woken: whatever else is new is read from the database
                    await self._deliver(self._dirty.pop(), read=True)
                else:
                    await self._deliver(next(iter(self._ready)), read=False)
            await self._flush_batch()

    async def _deliver(self, conversation_id: uuid.UUID, *, read: bool) -> None:
        for ready in sorted(self._ready.pop(conversation_id, []), key=lambda m: m.record.seq):
            seq = ready.record.seq
            if conversation_id not in self._sent or seq <= self._sent[conversation_id]:
                continue
            if seq != self._sent[conversation_id] + 1:
                read = True  # a gap (commits notified out of order, or a lost notification)
                break
            await self._emit(ready)
            self._sent[conversation_id] = seq
            self._metrics.ws_delivered_message.inc()
            lag = (self._clock.now() - ready.record.created_at).total_seconds()
            self._metrics.ws_delivery_lag.observe(max(0.0, lag))
        while read and conversation_id in self._sent:
            after = self._sent[conversation_id]
            page = await self._read_page(conversation_id, after)
            if conversation_id not in self._sent:
                return  # unsubscribed (removed) while reading: deliver nothing more
            for record in page:
                await self._emit(EncodedMessage.of(record))
                self._sent[conversation_id] = record.seq
                self._metrics.ws_delivered_message.inc()
            if len(page) < _PAGE:
                return

    async def _emit(self, message: EncodedMessage) -> None:
        """Send a conversation message in its own frame, or add it to the `messages` frame sent at
        the end of this writer pass (or sooner, when it is full)."""
        if not self._batching:
            await self._send_text(message.frame)
            return
        size = len(message.view)
        if self._batch and (
            len(self._batch) == BATCH_MAX_MESSAGES or self._batch_bytes + size > BATCH_MAX_BYTES
        ):
            await self._flush_batch()
        self._batch.append(message.view)
        self._batch_bytes += size

    async def _flush_batch(self) -> None:
        text = messages_frame(self._batch) if self._batch else None
        self._batch, self._batch_bytes = [], 0
        # A socket being closed (a revoked session, a removal of the device) gets nothing more;
        # what it was not sent is not acknowledged either, so it is replayed on the next socket.
        if text is not None and self._close_code is None:
            await self._send_text(text)

    async def _deliver_device_messages(self) -> None:
        inbox = await self._keys.inbox(self.principal, self._device_sent, _PAGE)
        if inbox.gap is not None:
            await self._send(DeviceGapFrame(dropped=inbox.gap.dropped))
        for message in inbox.messages:
            await self._send(device_message_frame(message))
            self._device_sent = message.id
            self._metrics.ws_delivered_device_message.inc()
        if len(inbox.messages) == _PAGE:
            self.wake_device()

    async def _reader(self) -> None:
        while self._close_code is None:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
            raw = message.get("text")
            if raw is None:
                # The protocol is JSON text; a binary frame is a client bug or a probe. RFC 6455
                # has a close code for data of a type the endpoint cannot accept.
                log.warning("ws_frame_refused", reason="binary frame", close_code=CLOSE_UNSUPPORTED_DATA)
                self.close(CLOSE_UNSUPPORTED_DATA)
                return
            try:
                frame = orjson.loads(raw)
                if not isinstance(frame, dict):
                    raise ValueError
            except ValueError:
                self.push(ErrorFrame(status=400, detail="Frames are JSON objects."))
                continue
            try:
                await self._handle(frame)
            except Problem as problem:
                self.push(ErrorFrame.of(problem.document(), frame.get("message_id")))
            except BackendUnavailable:
                self.push(ErrorFrame(status=503, detail="Temporarily unavailable; retry."))

    async def _handle(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "ack":
            ack = _parsed(AckFrame, frame, "An ack needs a conversation_id and a seq.")
            conversation_id, seq = ack.conversation_id, ack.seq
            if conversation_id not in self._sent:
                raise Problem(404, "No such conversation.")
            # Only what this socket delivered can be acknowledged through it.
            self._cursors.record(
                self.user_id, self.device_id, conversation_id, min(seq, self._sent[conversation_id])
            )
        elif kind == "ack_device":
            ack_device = _parsed(AckDeviceFrame, frame, "An ack_device needs the device message id.")
            await self._keys.acknowledge(self.principal, ack_device.id)
        elif kind == "send":
            await self._handle_send(frame)
        else:
            raise Problem(422, "Unknown frame type.")

    async def _handle_send(self, frame: dict[str, Any]) -> None:
        conversation_id = _uuid(frame.get("conversation_id"))
        if conversation_id is None:
            raise Problem(422, "A send needs a conversation_id.")
        body = {k: v for k, v in frame.items() if k not in ("type", "conversation_id")}
        try:
            envelope = Envelope.model_validate_json(orjson.dumps(body))
        except ValidationError as exc:
            raise Problem(422, "The envelope does not match the schema.", errors=field_errors(exc)) from None
        await self._messaging.check_send_rate(self.principal)
        sent = await self._messaging.send(
            self.principal,
            conversation_id,
            OutgoingMessage(
                envelope.message_id,
                envelope.ciphertext,
                envelope.nonce,
                envelope.auth_tag,
                envelope.content_type,
                envelope.parent_id,
                envelope.key_epoch,
            ),
        )
        self.push(
            SentFrame(
                conversation_id=conversation_id,
                message_id=sent.message_id,
                seq=sent.seq,
                created_at=sent.created_at,
            )
        )


def _parsed(model: type[F], frame: dict[str, Any], detail: str) -> F:
    try:
        return model.model_validate_json(orjson.dumps(frame))
    except ValidationError as exc:
        raise Problem(422, detail, errors=field_errors(exc)) from None


def _uuid(value: object) -> uuid.UUID | None:
    if not isinstance(value, str):
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
