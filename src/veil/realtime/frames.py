"""The WebSocket protocol's frames: one pydantic model per frame type, in both directions.

The server builds every frame it sends from these models, and `veil.realtime.asyncapi` publishes
the same models as the AsyncAPI document, so the two cannot drift. A message is encoded once per
process for every socket that gets it (`EncodedMessage`), and its `message` or `messages` frame
spliced around that text (tests check the splice against the models); other frames are encoded
once per socket.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from veil.core.wire import RequestModel, Timestamp
from veil.keys.schemas import DeviceMessageId, DeviceMessageView
from veil.keys.store import QueuedMessage
from veil.messaging.schemas import Envelope, EventKind, MessageView
from veil.messaging.store import MessageRecord
from veil.messaging.views import message_view

KeyChange = Literal[
    "device_added",
    "identity_changed",
    "signing_key_changed",
    "signed_prekey_changed",
    "device_removed",
    "device_certified",
]


class ServerFrame(BaseModel):
    """A frame the server sends: a JSON text frame whose `type` names it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def encode(self) -> str:
        return self.model_dump_json()


class MessageFrame(ServerFrame):
    """A conversation message, in `seq` order per conversation: on connect from the device's
    acknowledged cursor, then live. Acknowledge with an `ack` frame."""

    type: Literal["message"] = "message"
    message: MessageView


class MessagesFrame(ServerFrame):
    """Several conversation messages in one frame, on a socket opened with `?batch=true`, instead
    of a `message` frame each: what is ready when the server writes, at most 100 messages and
    256 KiB. In `seq` order per conversation; acknowledge with `ack` frames (acks are cumulative,
    so one per conversation suffices)."""

    type: Literal["messages"] = "messages"
    messages: list[MessageView]


class DeviceMessageFrame(ServerFrame):
    """A message queued for this device alone (session set-up, key sharing). Acknowledge with an
    `ack_device` frame."""

    type: Literal["device_message"] = "device_message"
    message: DeviceMessageView


class DeviceGapFrame(ServerFrame):
    """Queued device messages expired or were dropped before this device fetched them."""

    type: Literal["device_gap"] = "device_gap"
    dropped: int


class ReceiptFrame(ServerFrame):
    """A member's delivered or read marker moved forward."""

    type: Literal["receipt"] = "receipt"
    conversation_id: uuid.UUID
    user_id: uuid.UUID
    receipt: Literal["delivered", "read"]
    up_to_seq: int


class MembershipFrame(ServerFrame):
    """A membership event of a conversation the user is (or was just) a member of."""

    type: Literal["membership"] = "membership"
    conversation_id: uuid.UUID
    kind: EventKind
    user_id: uuid.UUID
    actor_id: uuid.UUID | None
    epoch: int


class KeysChangedFrame(ServerFrame):
    """A contact's device keys changed: sessions with that device must be checked or rebuilt."""

    type: Literal["keys_changed"] = "keys_changed"
    user_id: uuid.UUID
    device_id: uuid.UUID
    change: KeyChange


class DevicePendingFrame(ServerFrame):
    """To a user's other devices: a device of theirs published new keys and awaits approval."""

    type: Literal["device_pending"] = "device_pending"
    device_id: uuid.UUID


class IdentityChangedFrame(ServerFrame):
    """A contact reset their master key; `master_key` is the new one (standard base64)."""

    type: Literal["identity_changed"] = "identity_changed"
    user_id: uuid.UUID
    master_key: str


class PrekeysLowFrame(ServerFrame):
    """This device's unclaimed one-time prekeys ran low: upload more."""

    type: Literal["prekeys_low"] = "prekeys_low"
    one_time_prekeys: int


class SentFrame(ServerFrame):
    """The reply to a `send` frame: the message is stored under this `seq`."""

    type: Literal["sent"] = "sent"
    conversation_id: uuid.UUID
    message_id: uuid.UUID
    seq: int
    created_at: Timestamp


class FrameFieldError(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    loc: list[str | int]
    msg: str


class ErrorFrame(ServerFrame):
    """A client frame was refused; the socket stays open. The fields of an RFC 9457 problem
    document, with its `type` URI as `problem`. Fields without a value are left out."""

    # A problem may add fields of its own (as in HTTP problem documents).
    model_config = ConfigDict(extra="allow", frozen=True)

    type: Literal["error"] = "error"
    status: int
    detail: str
    problem: str | None = None
    title: str | None = None
    errors: list[FrameFieldError] | None = None
    message_id: Any = Field(None, description="The `message_id` of the refused frame, as it was sent.")

    @classmethod
    def of(cls, document: dict[str, Any], message_id: Any) -> ErrorFrame:
        """From a problem document (`Problem.document()`)."""
        fields = dict(document)
        return cls(problem=fields.pop("type"), **fields, message_id=message_id)

    def encode(self) -> str:
        return self.model_dump_json(exclude_none=True)


SERVER_FRAMES: tuple[type[ServerFrame], ...] = (
    MessageFrame,
    MessagesFrame,
    DeviceMessageFrame,
    DeviceGapFrame,
    ReceiptFrame,
    MembershipFrame,
    KeysChangedFrame,
    DevicePendingFrame,
    IdentityChangedFrame,
    PrekeysLowFrame,
    SentFrame,
    ErrorFrame,
)


class AckFrame(RequestModel):
    """Everything in the conversation up to `seq` was received (cumulative)."""

    type: Literal["ack"]
    conversation_id: uuid.UUID
    seq: Annotated[int, Field(ge=0)]


class AckDeviceFrame(RequestModel):
    """The device message `id` was received and may be deleted."""

    type: Literal["ack_device"]
    id: DeviceMessageId


class SendFrame(Envelope):
    """Send a message: the envelope of `POST /v1/conversations/{id}/messages`, with the
    conversation named in the frame. Answered by a `sent` frame, or an `error` frame carrying the
    same `message_id`."""

    type: Literal["send"]
    conversation_id: uuid.UUID


CLIENT_FRAMES: tuple[type[BaseModel], ...] = (AckFrame, AckDeviceFrame, SendFrame)


# A `messages` frame holds at most this many messages and this many bytes of them (a client's
# WebSocket library refuses frames over its limit: 1 MiB by default in `websockets`).
BATCH_MAX_MESSAGES = 100
BATCH_MAX_BYTES = 256 * 1024


@dataclass(frozen=True)
class EncodedMessage:
    """A message's JSON (a `MessageView`), encoded once per process for every socket that gets it;
    its `message` frame, or its place in a `messages` frame, is spliced around it."""

    record: MessageRecord
    view: str

    @classmethod
    def of(cls, record: MessageRecord) -> EncodedMessage:
        return cls(record, message_view(record).model_dump_json())

    @functools.cached_property
    def frame(self) -> str:
        """The same text as `MessageFrame(message=...).encode()`; built once, for the sockets that
        do not batch."""
        return f'{{"type":"message","message":{self.view}}}'


def messages_frame(views: list[str]) -> str:
    """The same text as `MessagesFrame(messages=[...]).encode()`, from views already encoded."""
    return f'{{"type":"messages","messages":[{",".join(views)}]}}'


def device_message_frame(message: QueuedMessage) -> DeviceMessageFrame:
    view = DeviceMessageView(
        id=message.id,
        sender_id=message.sender_user_id,
        sender_device_id=message.sender_device_id,
        content_type=message.content_type,
        ciphertext=message.ciphertext,
        nonce=message.nonce,
        auth_tag=message.auth_tag,
        created_at=message.created_at,
    )
    return DeviceMessageFrame(message=view)
