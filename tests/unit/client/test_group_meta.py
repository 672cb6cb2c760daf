"""A group's name sealed into `encrypted_meta` (protocol/group_meta.py): it opens under its own
group's key only, says nothing the server's plaintext rule would mistake for text, and its key
payload reads back exactly; a device keeps the keys (sdk/group_names.py) across restarts."""

from __future__ import annotations

import uuid

import pytest

from veil.client.protocol.errors import DecryptionError, MalformedMessageError
from veil.client.protocol.group_meta import (
    GroupMeta,
    MetaKeyPayload,
    is_meta_key_payload,
    new_meta_key,
    open_meta,
    seal_meta,
)
from veil.client.protocol.identity import LINK_PAYLOAD_LABEL
from veil.client.sdk.group_names import GroupMetaKeys
from veil.client.sdk.models import Conversation
from veil.core.binary import looks_like_text

BOOK_CLUB = GroupMeta("Book club 📚", "Second Tuesday of the month, at Ada's")


def flipped(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def test_the_meta_opens_under_its_key_and_nowhere_else() -> None:
    key = new_meta_key()
    sealed = seal_meta(key, BOOK_CLUB)
    assert open_meta(key, sealed) == BOOK_CLUB
    with pytest.raises(DecryptionError):
        open_meta(new_meta_key(), sealed)  # another group's key: a meta moved between groups
    for index in (0, 12, len(sealed) - 1):  # nonce, ciphertext, tag
        with pytest.raises(DecryptionError):
            open_meta(key, flipped(sealed, index))


def test_sealed_metas_pass_the_servers_plaintext_rule_and_never_repeat() -> None:
    key = new_meta_key()
    shortest = seal_meta(key, GroupMeta("x"))
    assert len(shortest) >= 28  # the server's minimum for a new group's meta
    sealed = [seal_meta(key, BOOK_CLUB) for _ in range(20)]
    assert len(set(sealed)) == 20  # a random nonce each time
    assert not any(looks_like_text(s) for s in [shortest, *sealed])
    assert b"Book club" not in b"".join(sealed)
    longest = seal_meta(key, GroupMeta("n" * 100, "d" * 1000))
    assert len(longest) <= 4096  # the server's bound


@pytest.mark.parametrize(
    ("name", "description"), [("", ""), ("   ", ""), ("n" * 101, ""), ("ok", "d" * 1001)]
)
def test_names_and_descriptions_out_of_bounds_are_refused(name: str, description: str) -> None:
    with pytest.raises(ValueError, match="group's"):
        GroupMeta(name, description)


def test_a_meta_reads_back_strictly() -> None:
    encoded = BOOK_CLUB.encode()
    assert GroupMeta.decode(encoded) == BOOK_CLUB
    for bad in (b"\x02" + encoded[1:], encoded + b"\x00", encoded[:-1], b""):
        with pytest.raises(MalformedMessageError):
            GroupMeta.decode(bad)


def test_the_key_payload_reads_back_and_is_told_apart_from_a_link_payload() -> None:
    cid = str(uuid.uuid4())
    payload = MetaKeyPayload(cid.upper(), new_meta_key())
    encoded = payload.encode()
    assert is_meta_key_payload(encoded)
    assert MetaKeyPayload.decode(encoded) == payload and payload.conversation_id == cid
    assert LINK_PAYLOAD_LABEL not in encoded[:40]
    for bad in (encoded[:-1], encoded + b"\x00", b"veil/link/v1" + encoded[12:]):
        with pytest.raises(MalformedMessageError):
            MetaKeyPayload.decode(bad)
    with pytest.raises(ValueError, match="32 bytes"):
        MetaKeyPayload(cid, b"short")


def test_a_device_keeps_its_meta_keys_across_restarts_and_a_flood_stays_bounded() -> None:
    cid, sender, device = (str(uuid.uuid4()) for _ in range(3))
    key = new_meta_key()
    held = GroupMetaKeys()
    held.keep(cid, key)
    held.served(cid, [device])
    for _ in range(30):  # one device floods this one with keys for a group
        held.hold(sender, device, MetaKeyPayload(cid, new_meta_key()))
    restored = GroupMetaKeys.from_state(held.to_state())
    assert restored.to_state() == held.to_state()
    assert restored.key(cid) == key and restored.not_served(cid, [device, "other"]) == ["other"]
    assert len(restored.take_pending(cid)) == 20 and not restored.has_pending(cid)

    conversation = Conversation(cid, "group", 0, 0, "2026-12-07T00:00:00Z", (), seal_meta(key, BOOK_CLUB))
    assert restored.named(conversation).name == BOOK_CLUB.name
    restored.forget(cid)
    assert restored.named(conversation).name is None
