"""Server-to-client frames, built from the same wire models as the HTTP API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from veil.keys.schemas import DeviceMessageView
from veil.keys.store import QueuedMessage
from veil.messaging.store import MessageRecord
from veil.messaging.views import message_view


def message_frame(record: MessageRecord) -> dict[str, Any]:
    return {"type": "message", "message": message_view(record).model_dump(mode="json")}


@dataclass(frozen=True)
class EncodedMessage:
    """A message and its frame, encoded once per process for every socket that gets it."""

    record: MessageRecord
    text: str

    @classmethod
    def of(cls, record: MessageRecord) -> EncodedMessage:
        return cls(record, orjson.dumps(message_frame(record)).decode())


def device_message_frame(message: QueuedMessage) -> dict[str, Any]:
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
    return {"type": "device_message", "message": view.model_dump(mode="json")}
