"""AEAD with bound metadata: changing any bound field, or any byte, makes opening fail."""

from __future__ import annotations

import dataclasses
import os
import uuid
from typing import Any

import pytest

from veil.client.protocol.envelope import (
    MAX_CIPHERTEXT,
    DeviceContext,
    GroupContext,
    Sealed,
    open_sealed,
    seal,
)
from veil.client.protocol.errors import DecryptionError

HEADER = b"\x01\x02header"


def _group_context() -> GroupContext:
    return GroupContext(
        conversation_id=str(uuid.uuid4()),
        message_id=str(uuid.uuid4()),
        sender_id=str(uuid.uuid4()),
        sender_device_id=str(uuid.uuid4()),
        content_type="text",
        key_epoch=3,
        roster_hash=bytes(range(32)),
        parent_id=None,
    )


GROUP_CHANGES: dict[str, Any] = {
    "conversation_id": str(uuid.uuid4()),
    "message_id": str(uuid.uuid4()),
    "sender_id": str(uuid.uuid4()),
    "sender_device_id": str(uuid.uuid4()),
    "content_type": "file",
    "key_epoch": 4,
    "roster_hash": bytes(range(1, 33)),  # a forked view of the membership at the same epoch
    "parent_id": str(uuid.uuid4()),
}


@pytest.mark.parametrize("field", sorted(GROUP_CHANGES))
def test_changing_any_bound_group_field_fails(field: str) -> None:
    key, context = os.urandom(32), _group_context()
    sealed = seal(key, HEADER, b"payload", context.encode())
    assert open_sealed(key, sealed, len(HEADER), context.encode()) == b"payload"
    moved = dataclasses.replace(context, **{field: GROUP_CHANGES[field]})
    with pytest.raises(DecryptionError):
        open_sealed(key, sealed, len(HEADER), moved.encode())


@pytest.mark.parametrize("field", ["recipient_device_id", "sender_id", "sender_device_id", "content_type"])
def test_changing_any_bound_device_field_fails(field: str) -> None:
    key = os.urandom(32)
    ids = [str(uuid.uuid4()) for _ in range(3)]
    context = DeviceContext(ids[0], ids[1], ids[2], "session_message")
    sealed = seal(key, HEADER, b"payload", context.encode())
    value = "sender_key" if field == "content_type" else str(uuid.uuid4())
    with pytest.raises(DecryptionError):
        open_sealed(key, sealed, len(HEADER), dataclasses.replace(context, **{field: value}).encode())


def test_group_and_device_bindings_never_coincide() -> None:
    ids = [str(uuid.uuid4()) for _ in range(4)]
    group = GroupContext(ids[0], ids[1], ids[2], ids[3], "session_message", 0, bytes(32))
    device = DeviceContext(ids[0], ids[1], ids[2], "session_message")
    assert group.encode() != device.encode()


def test_uuid_spelling_does_not_change_the_binding() -> None:
    context = _group_context()
    shouted = dataclasses.replace(context, conversation_id=context.conversation_id.upper())
    assert shouted.encode() == context.encode()


def test_every_byte_of_ciphertext_nonce_and_tag_is_authenticated() -> None:
    key, context = os.urandom(32), _group_context().encode()
    sealed = seal(key, HEADER, b"some plaintext", context)
    for field in ("ciphertext", "nonce", "tag"):
        raw = getattr(sealed, field)
        for position in range(len(raw)):
            tampered = bytearray(raw)
            tampered[position] ^= 0x01
            with pytest.raises(DecryptionError):
                open_sealed(
                    key, dataclasses.replace(sealed, **{field: bytes(tampered)}), len(HEADER), context
                )


def test_nonces_are_fresh_and_the_tag_travels_separately() -> None:
    key, context = os.urandom(32), _group_context().encode()
    first, second = seal(key, HEADER, b"same", context), seal(key, HEADER, b"same", context)
    assert first.nonce != second.nonce
    assert len(first.nonce) == 12 and len(first.tag) == 16
    assert first.ciphertext.startswith(HEADER) and len(first.ciphertext) == len(HEADER) + len(b"same")


def test_wire_round_trip_and_strict_decoding() -> None:
    sealed = seal(os.urandom(32), HEADER, b"x", _group_context().encode())
    wire = sealed.to_wire()
    assert Sealed.from_wire(wire) == sealed
    for bad in (
        {**wire, "auth_tag": wire["auth_tag"].rstrip("=")},
        {**wire, "auth_tag": wire["nonce"]},
        {**wire, "ciphertext": ""},
        {**wire, "ciphertext": "!!!!"},
        {"nonce": wire["nonce"], "auth_tag": wire["auth_tag"]},
    ):
        with pytest.raises(DecryptionError):
            Sealed.from_wire(bad)


def test_oversized_messages_are_refused_before_sending() -> None:
    with pytest.raises(ValueError, match="too large"):
        seal(os.urandom(32), HEADER, bytes(MAX_CIPHERTEXT), _group_context().encode())


def test_ids_must_be_uuids() -> None:
    with pytest.raises(ValueError, match="conversation_id"):
        dataclasses.replace(_group_context(), conversation_id="general").encode()


def test_the_group_binding_is_v2_with_the_roster_hash_after_the_epoch() -> None:
    context = _group_context()
    encoded = context.encode()
    label = b"veil/group-message/v2"
    assert encoded.startswith(len(label).to_bytes(4, "big") + label)
    epoch_then_roster = (8).to_bytes(4, "big") + (3).to_bytes(8, "big") + (32).to_bytes(4, "big")
    assert epoch_then_roster + context.roster_hash in encoded
    for bad in (bytes(31), bytes(33), b""):
        with pytest.raises(ValueError, match="roster_hash"):
            dataclasses.replace(context, roster_hash=bad).encode()
    with pytest.raises(ValueError, match="roster_hash"):
        GroupContext.from_envelope(
            {
                "conversation_id": context.conversation_id,
                "message_id": context.message_id,
                "sender_id": context.sender_id,
                "sender_device_id": context.sender_device_id,
                "content_type": "text",
                "key_epoch": 3,
            },
            bytes(16),
        )
