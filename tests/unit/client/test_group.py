"""Group messages under sender keys: distribution, decryption, epochs, forgery and tampering."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.unit.client.support import Directory, connect, stored
from veil.client.protocol.envelope import GroupContext, Sealed, open_sealed, seal
from veil.client.protocol.errors import (
    DecryptionError,
    OwnMessageError,
    ReplayError,
    UnknownSenderKeyError,
)
from veil.client.protocol.framing import GroupMessageHeader
from veil.client.protocol.ratchet import step
from veil.client.protocol.sender_keys import SenderKeyDistribution
from veil.client.protocol.session import ClientCrypto


@pytest.fixture
def conversation() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def group(
    directory: Directory, alice: ClientCrypto, bob: ClientCrypto, carol: ClientCrypto
) -> list[ClientCrypto]:
    """Three members with pairwise sessions between every pair."""
    connect(directory, alice, bob)
    connect(directory, alice, carol)
    connect(directory, bob, carol)
    return [alice, bob, carol]


def distribute(sender: ClientCrypto, members: list[ClientCrypto], conversation: str, epoch: int) -> None:
    devices = [(member.user_id, member.device_id) for member in members]
    messages = sender.sender_key_messages(conversation, epoch, devices)
    assert len(messages) == len([m for m in members if m is not sender])
    for message in messages:
        recipient = next(m for m in members if m.device_id == message["device_id"])
        payload = recipient.decrypt_device_message(sender.user_id, sender.device_id, "sender_key", message)
        assert SenderKeyDistribution.decode(payload).epoch == epoch


def send(sender: ClientCrypto, conversation: str, epoch: int, text: bytes, **kwargs: Any) -> dict[str, Any]:
    envelope = sender.encrypt_group_message(conversation, epoch, str(uuid.uuid4()), "text", text, **kwargs)
    return stored(envelope, conversation, sender)


def test_every_member_reads_every_other_members_messages(
    group: list[ClientCrypto], conversation: str
) -> None:
    for member in group:
        distribute(member, group, conversation, 0)
    for sender in group:
        envelopes = [send(sender, conversation, 0, f"{i} from {sender.device_id}".encode()) for i in range(3)]
        for reader in group:
            if reader is sender:
                continue
            for i, envelope in reversed(list(enumerate(envelopes))):  # out of order too
                assert reader.decrypt_group_message(envelope) == f"{i} from {sender.device_id}".encode()


def test_envelope_has_the_request_shape(group: list[ClientCrypto], conversation: str) -> None:
    alice = group[0]
    distribute(alice, group, conversation, 0)
    parent = str(uuid.uuid4())
    envelope = alice.encrypt_group_message(
        conversation, 0, str(uuid.uuid4()), "reaction", b"+1", parent_id=parent
    )
    assert set(envelope) == {
        "message_id",
        "ciphertext",
        "nonce",
        "auth_tag",
        "content_type",
        "key_epoch",
        "parent_id",
    }
    assert envelope["key_epoch"] == 0 and envelope["parent_id"] == parent
    assert (
        len(base64.b64decode(envelope["nonce"])) == 12 and len(base64.b64decode(envelope["auth_tag"])) == 16
    )
    assert group[1].decrypt_group_message(stored(envelope, conversation, alice)) == b"+1"


def test_replays_and_own_messages(group: list[ClientCrypto], conversation: str) -> None:
    alice, bob, _ = group
    distribute(alice, group, conversation, 0)
    envelope = send(alice, conversation, 0, b"once")
    assert bob.decrypt_group_message(envelope) == b"once"
    with pytest.raises(ReplayError):
        bob.decrypt_group_message(envelope)
    with pytest.raises(OwnMessageError):
        alice.decrypt_group_message(envelope)


def test_a_new_epoch_key_is_unknown_to_a_removed_member(group: list[ClientCrypto], conversation: str) -> None:
    alice, bob, carol = group
    distribute(alice, group, conversation, 0)
    assert carol.decrypt_group_message(send(alice, conversation, 0, b"all three")) == b"all three"
    # Carol is removed: the epoch becomes 1 and Alice distributes a new key to Bob only.
    distribute(alice, [alice, bob], conversation, 1)
    envelope = send(alice, conversation, 1, b"without carol")
    assert bob.decrypt_group_message(envelope) == b"without carol"
    with pytest.raises(UnknownSenderKeyError):
        carol.decrypt_group_message(envelope)
    # Relabelling the message as epoch 0 (whose key Carol has) does not help her either.
    with pytest.raises(DecryptionError):
        carol.decrypt_group_message({**envelope, "key_epoch": 0})
    with pytest.raises(UnknownSenderKeyError):
        alice.encrypt_group_message(conversation, 0, str(uuid.uuid4()), "text", b"old epoch")


def test_sending_needs_a_distributed_key_first(alice: ClientCrypto, conversation: str) -> None:
    with pytest.raises(UnknownSenderKeyError):
        alice.encrypt_group_message(conversation, 0, str(uuid.uuid4()), "text", b"nobody could read this")


def test_outsiders_cannot_read(group: list[ClientCrypto], conversation: str, eve: ClientCrypto) -> None:
    alice = group[0]
    distribute(alice, group, conversation, 0)
    with pytest.raises(UnknownSenderKeyError):
        eve.decrypt_group_message(send(alice, conversation, 0, b"members only"))


GROUP_CHANGES: dict[str, Any] = {
    "conversation_id": lambda e: str(uuid.uuid4()),
    "message_id": lambda e: str(uuid.uuid4()),
    "sender_id": lambda e: str(uuid.uuid4()),
    "sender_device_id": lambda e: str(uuid.uuid4()),
    "content_type": lambda e: "system",
    "key_epoch": lambda e: e["key_epoch"] + 1,
    "parent_id": lambda e: str(uuid.uuid4()),
}


@pytest.mark.parametrize("field", sorted(GROUP_CHANGES))
def test_changing_any_server_visible_field_fails(
    group: list[ClientCrypto], conversation: str, field: str
) -> None:
    alice, bob, _ = group
    distribute(alice, group, conversation, 0)
    envelope = send(alice, conversation, 0, b"bound")
    moved = {**envelope, field: GROUP_CHANGES[field](envelope)}
    with pytest.raises((DecryptionError, UnknownSenderKeyError)):
        bob.decrypt_group_message(moved)
    assert bob.decrypt_group_message(envelope) == b"bound"


def test_metadata_binding_holds_even_where_the_key_lookup_would_succeed(
    group: list[ClientCrypto], conversation: str
) -> None:
    # Same conversation, sender and epoch (so the same sender key is found): only the binding refuses.
    alice, bob, _ = group
    distribute(alice, group, conversation, 0)
    envelope = send(alice, conversation, 0, b"bound")
    for field in ("message_id", "content_type", "parent_id"):
        with pytest.raises(DecryptionError):
            bob.decrypt_group_message({**envelope, field: GROUP_CHANGES[field](envelope)})


@pytest.mark.parametrize("field", ["ciphertext", "nonce", "auth_tag"])
def test_any_flipped_byte_fails(group: list[ClientCrypto], conversation: str, field: str) -> None:
    alice, bob, _ = group
    distribute(alice, group, conversation, 0)
    envelope = send(alice, conversation, 0, b"tamper with me")
    raw = base64.b64decode(envelope[field])
    for position in range(len(raw)):
        tampered = bytearray(raw)
        tampered[position] ^= 0x40
        with pytest.raises(DecryptionError):
            bob.decrypt_group_message({**envelope, field: base64.b64encode(bytes(tampered)).decode()})
    assert bob.decrypt_group_message(envelope) == b"tamper with me"


def test_a_member_cannot_forge_another_members_message(group: list[ClientCrypto], conversation: str) -> None:
    """Carol holds Alice's chain key, so she can make valid AEAD output, but not Alice's signature."""
    alice, bob, carol = group
    distribute(alice, group, conversation, 0)
    (entry,) = [
        p for p in carol.to_state()["sender_keys"]["peers"] if p["sender_device_id"] == alice.device_id
    ]
    chain = entry["key"]["chain"]
    message_key, _ = step(base64.b64decode(chain["chain_key"]))
    message_id = str(uuid.uuid4())
    context = GroupContext(conversation, message_id, alice.user_id, alice.device_id, "text", 0)
    header = GroupMessageHeader(chain["next_index"]).encode()
    sealed = seal(message_key, header, b"forged by carol", context.encode(), reserve=64)
    assert open_sealed(message_key, sealed, len(header), context.encode()) == b"forged by carol"
    signature = Ed25519PrivateKey.generate().sign(sealed.ciphertext)
    forged = Sealed(sealed.ciphertext + signature, sealed.nonce, sealed.tag).to_wire()
    envelope = {"message_id": message_id, **forged, "content_type": "text", "key_epoch": 0}
    with pytest.raises(DecryptionError, match="signature"):
        bob.decrypt_group_message(stored(envelope, conversation, alice))
    assert bob.decrypt_group_message(send(alice, conversation, 0, b"genuine")) == b"genuine"


def test_distribution_repeats_are_idempotent(group: list[ClientCrypto], conversation: str) -> None:
    alice, bob, _ = group
    distribute(alice, group, conversation, 0)
    first = send(alice, conversation, 0, b"first")
    bob.decrypt_group_message(first)
    distribute(alice, group, conversation, 0)  # a second distribution of the same key
    with pytest.raises(ReplayError):  # did not roll Bob's chain back
        bob.decrypt_group_message(first)


def test_late_joiners_cannot_read_earlier_messages(group: list[ClientCrypto], conversation: str) -> None:
    alice, bob, carol = group
    distribute(alice, [alice, bob], conversation, 0)
    early = send(alice, conversation, 0, b"before carol got the key")
    distribute(alice, [alice, carol], conversation, 0)
    with pytest.raises(ReplayError):
        carol.decrypt_group_message(early)
    assert carol.decrypt_group_message(send(alice, conversation, 0, b"after")) == b"after"


def test_group_state_survives_a_round_trip(group: list[ClientCrypto], conversation: str) -> None:
    alice, bob, _ = group
    distribute(alice, group, conversation, 0)
    alice = ClientCrypto.from_state(alice.to_state())
    bob = ClientCrypto.from_state(bob.to_state())
    assert bob.decrypt_group_message(send(alice, conversation, 0, b"restored")) == b"restored"
