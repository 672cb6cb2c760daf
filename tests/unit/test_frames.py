"""Message frames are spliced around each message's JSON, encoded once per process: the splice
must be exactly what the frame models (published as the AsyncAPI document) encode."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime

import orjson

from veil.client.cli.live import single_frames
from veil.messaging.store import MessageRecord
from veil.messaging.views import message_view
from veil.realtime.frames import EncodedMessage, MessageFrame, MessagesFrame, messages_frame


def record(seq: int, parent: uuid.UUID | None = None) -> MessageRecord:
    return MessageRecord(
        conversation_id=uuid.uuid4(),
        seq=seq,
        message_id=uuid.uuid4(),
        sender_id=uuid.uuid4(),
        sender_device_id=uuid.uuid4(),
        content_type="text",
        ciphertext=os.urandom(100),
        nonce=os.urandom(12),
        auth_tag=os.urandom(16),
        parent_id=parent,
        key_epoch=3,
        created_at=datetime(2026, 12, 7, 18, 0, 0, 123456, tzinfo=UTC),
    )


def test_a_message_frame_is_what_the_model_encodes() -> None:
    for message in (record(1), record(2, parent=uuid.uuid4())):
        assert EncodedMessage.of(message).frame == MessageFrame(message=message_view(message)).encode()


def test_a_messages_frame_is_what_the_model_encodes() -> None:
    records = [record(seq) for seq in (1, 2, 3)]
    spliced = messages_frame([EncodedMessage.of(r).view for r in records])
    assert spliced == MessagesFrame(messages=[message_view(r) for r in records]).encode()
    assert [m["seq"] for m in orjson.loads(spliced)["messages"]] == [1, 2, 3]


def test_the_client_reads_a_messages_frame_as_single_message_frames() -> None:
    records = [record(seq) for seq in (4, 5)]
    batch = orjson.loads(messages_frame([EncodedMessage.of(r).view for r in records]))
    singles = single_frames(batch)
    assert singles == [orjson.loads(EncodedMessage.of(r).frame) for r in records]
    receipt = {"type": "receipt", "up_to_seq": 3}
    assert single_frames(receipt) == [receipt]
    assert single_frames({"type": "messages", "messages": "nonsense"}) == []
