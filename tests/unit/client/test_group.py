"""Group messages under sender keys: distribution, decryption, epochs, forgery and tampering."""

from __future__ import annotations

import base64
import dataclasses
import uuid
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.unit.client.support import NOW, Directory, connect, new_device, roster_hash, stored
from veil.client.protocol.envelope import GroupContext, Sealed, open_sealed, seal
from veil.client.protocol.errors import (
    DecryptionError,
    MalformedMessageError,
    OwnMessageError,
    ReplayError,
    SenderKeyRefusedError,
    UnknownSenderKeyError,
)
from veil.client.protocol.framing import VERSION, GroupMessageHeader
from veil.client.protocol.ratchet import MAX_SKIPPED_KEYS, SKIPPED_MAX_AGE, step
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


@pytest.fixture
def roster(group: list[ClientCrypto]) -> bytes:
    """The hash of the three members' roster at epoch 0, as every one of them verified it."""
    return roster_hash(*group)


def received(recipient: ClientCrypto, sender: ClientCrypto, message: dict[str, Any]) -> SenderKeyDistribution:
    """Decrypt a `sender_key` device message (which does not install it)."""
    payload = recipient.decrypt_device_message(sender.user_id, sender.device_id, "sender_key", message)
    return SenderKeyDistribution.decode(payload)


def install(
    recipient: ClientCrypto,
    sender: ClientCrypto,
    message: dict[str, Any],
    expected_roster: bytes,
    *,
    now: float = NOW,
) -> bool:
    distribution = received(recipient, sender, message)
    return recipient.install_sender_key(
        sender.user_id, sender.device_id, distribution, expected_roster, now=now
    )


def distribute(
    sender: ClientCrypto,
    members: list[ClientCrypto],
    conversation: str,
    epoch: int,
    roster: bytes,
    *,
    now: float = NOW,
) -> None:
    devices = [(member.user_id, member.device_id) for member in members]
    messages = sender.sender_key_messages(conversation, epoch, roster, devices, now=now)
    assert len(messages) == len([m for m in members if m is not sender])
    for message in messages:
        recipient = next(m for m in members if m.device_id == message["device_id"])
        assert install(recipient, sender, message, roster, now=now)


def send(
    sender: ClientCrypto,
    conversation: str,
    epoch: int,
    roster: bytes,
    text: bytes,
    *,
    now: float = NOW,
    **kwargs: Any,
) -> dict[str, Any]:
    envelope = sender.encrypt_group_message(
        conversation, epoch, str(uuid.uuid4()), "text", text, roster_hash=roster, now=now, **kwargs
    )
    return stored(envelope, conversation, sender)


def read(reader: ClientCrypto, envelope: dict[str, Any], roster: bytes, *, now: float = NOW) -> bytes:
    return reader.decrypt_group_message(envelope, roster, now=now)


def test_every_member_reads_every_other_members_messages(
    group: list[ClientCrypto], conversation: str, roster: bytes
) -> None:
    for member in group:
        distribute(member, group, conversation, 0, roster)
    for sender in group:
        envelopes = [
            send(sender, conversation, 0, roster, f"{i} from {sender.device_id}".encode()) for i in range(3)
        ]
        for reader in group:
            if reader is sender:
                continue
            for i, envelope in reversed(list(enumerate(envelopes))):  # out of order too
                assert read(reader, envelope, roster) == f"{i} from {sender.device_id}".encode()


def test_envelope_has_the_request_shape(group: list[ClientCrypto], conversation: str, roster: bytes) -> None:
    alice = group[0]
    distribute(alice, group, conversation, 0, roster)
    parent = str(uuid.uuid4())
    envelope = alice.encrypt_group_message(
        conversation, 0, str(uuid.uuid4()), "reaction", b"+1", roster_hash=roster, now=NOW, parent_id=parent
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
    assert read(group[1], stored(envelope, conversation, alice), roster) == b"+1"


def test_the_distribution_frame_carries_the_roster_hash(
    group: list[ClientCrypto], conversation: str, roster: bytes
) -> None:
    alice = group[0]
    payload = alice.group_sender_key_distribution(conversation, 5, roster, now=NOW)
    assert len(payload) == 130 and payload[:2] == bytes([VERSION, 0x11])
    distribution = SenderKeyDistribution.decode(payload)
    assert (distribution.conversation_id, distribution.epoch, distribution.roster_hash) == (
        conversation,
        5,
        roster,
    )
    assert distribution.key_id == alice.current_sender_key_id(conversation, 5, roster, now=NOW)
    assert distribution.encode() == payload
    with pytest.raises(MalformedMessageError):  # the v1 frame type (no roster hash) is not accepted
        SenderKeyDistribution.decode(payload[:1] + b"\x10" + payload[2:])


def test_a_received_sender_key_is_not_installed_by_decryption_alone(
    group: list[ClientCrypto], conversation: str, roster: bytes
) -> None:
    alice, bob, _ = group
    (message,) = alice.sender_key_messages(conversation, 0, roster, [(bob.user_id, bob.device_id)], now=NOW)
    distribution = received(bob, alice, message)
    envelope = send(alice, conversation, 0, roster, b"not yet")
    with pytest.raises(UnknownSenderKeyError):
        read(bob, envelope, roster)
    assert bob.install_sender_key(alice.user_id, alice.device_id, distribution, roster, now=NOW)
    assert read(bob, envelope, roster) == b"not yet"


def test_a_strangers_sender_key_is_refused_when_its_roster_hash_differs(
    directory: Directory, group: list[ClientCrypto], conversation: str, roster: bytes, eve: ClientCrypto
) -> None:
    """Eve is in no roster Bob verified: her key, bound to her own view, is refused and leaves no slot."""
    alice, bob, carol = group
    connect(directory, eve, bob)
    eves_view = roster_hash(alice, bob, carol, eve)
    before = bob.to_state()["sender_keys"]["peers"]
    for other_conversation in [conversation] + [str(uuid.uuid4()) for _ in range(20)]:
        (message,) = eve.sender_key_messages(
            other_conversation, 0, eves_view, [(bob.user_id, bob.device_id)], now=NOW
        )
        with pytest.raises(SenderKeyRefusedError, match="another roster"):
            install(bob, eve, message, roster)
    assert bob.to_state()["sender_keys"]["peers"] == before == []  # no junk slots kept
    with pytest.raises(UnknownSenderKeyError):
        read(bob, send(eve, conversation, 0, eves_view, b"let me in"), roster)


def test_a_repeated_distribution_is_ignored(
    group: list[ClientCrypto], conversation: str, roster: bytes
) -> None:
    alice, bob, _ = group
    devices = [(bob.user_id, bob.device_id)]
    (first_delivery,) = alice.sender_key_messages(conversation, 0, roster, devices, now=NOW)
    assert install(bob, alice, first_delivery, roster)
    first = send(alice, conversation, 0, roster, b"first")
    assert read(bob, first, roster) == b"first"
    (repeat,) = alice.sender_key_messages(conversation, 0, roster, devices, now=NOW)
    assert install(bob, alice, repeat, roster) is False
    with pytest.raises(ReplayError):  # the repeat did not roll Bob's chain back
        read(bob, first, roster)
    # The same chain claimed under another roster is never a genuine sender's doing.
    other = roster_hash(alice, bob)
    (third,) = alice.sender_key_messages(conversation, 0, roster, devices, now=NOW)
    relabelled = dataclasses.replace(received(bob, alice, third), roster_hash=other)
    with pytest.raises(SenderKeyRefusedError, match="already received under another roster"):
        bob.install_sender_key(alice.user_id, alice.device_id, relabelled, other, now=NOW)
    assert read(bob, send(alice, conversation, 0, roster, b"still"), roster) == b"still"


def test_a_new_epoch_key_is_unknown_to_a_removed_member(
    group: list[ClientCrypto], conversation: str, roster: bytes
) -> None:
    alice, bob, carol = group
    distribute(alice, group, conversation, 0, roster)
    assert read(carol, send(alice, conversation, 0, roster, b"all three"), roster) == b"all three"
    # Carol is removed: the epoch becomes 1 and Alice distributes a new key to Bob only.
    without_carol = roster_hash(alice, bob)
    distribute(alice, [alice, bob], conversation, 1, without_carol)
    envelope = send(alice, conversation, 1, without_carol, b"without carol")
    assert read(bob, envelope, without_carol) == b"without carol"
    with pytest.raises(UnknownSenderKeyError):
        read(carol, envelope, without_carol)
    # Relabelling the message as epoch 0 (where Carol holds a key of Alice's) does not help her:
    # its header names the epoch-1 key id, which she never received.
    with pytest.raises(UnknownSenderKeyError, match="no sender key"):
        read(carol, {**envelope, "key_epoch": 0}, roster)
    with pytest.raises(UnknownSenderKeyError):
        alice.encrypt_group_message(
            conversation, 0, str(uuid.uuid4()), "text", b"old epoch", roster_hash=roster, now=NOW
        )


def test_an_old_epoch_is_readable_within_the_grace_period_and_refused_after(
    group: list[ClientCrypto], conversation: str, roster: bytes
) -> None:
    """A removed member's old-epoch messages stop being accepted one grace period after rotation."""
    alice, bob, carol = group
    grace = bob.epoch_grace_seconds
    assert grace == 3600.0
    distribute(carol, group, conversation, 0, roster)
    late = [send(carol, conversation, 0, roster, f"late {i}".encode()) for i in range(3)]
    without_carol = roster_hash(alice, bob)
    distribute(alice, [alice, bob], conversation, 1, without_carol)
    started = NOW + 100
    assert read(bob, send(alice, conversation, 1, without_carol, b"epoch 1"), without_carol, now=started) == (
        b"epoch 1"
    )
    assert read(bob, late[0], roster, now=started + grace - 1) == b"late 0"
    with pytest.raises(UnknownSenderKeyError, match="retired"):
        read(bob, late[1], roster, now=started + grace)
    assert all(p["epoch"] == 1 for p in bob.to_state()["sender_keys"]["peers"])  # epoch 0 keys deleted
    # Carol cannot bring epoch 0 back by sending her key again.
    (again,) = carol.sender_key_messages(conversation, 0, roster, [(bob.user_id, bob.device_id)], now=NOW)
    with pytest.raises(SenderKeyRefusedError, match="retired"):
        install(bob, carol, again, roster, now=started + grace)
    with pytest.raises(UnknownSenderKeyError, match="retired"):
        read(bob, late[2], roster, now=started + grace)
    assert read(
        bob, send(alice, conversation, 1, without_carol, b"on"), without_carol, now=started + grace
    ) == (b"on")


def test_sending_in_a_new_epoch_starts_the_grace_period_too(
    group: list[ClientCrypto], conversation: str, roster: bytes
) -> None:
    """Alice only sends in epoch 1, nobody answers: old-epoch messages to her still retire."""
    alice, bob, carol = group
    distribute(carol, group, conversation, 0, roster)
    late = send(carol, conversation, 0, roster, b"from the past")
    without_carol = roster_hash(alice, bob)
    distribute(alice, [alice, bob], conversation, 1, without_carol)
    send(alice, conversation, 1, without_carol, b"epoch 1", now=NOW)
    with pytest.raises(UnknownSenderKeyError, match="retired"):
        read(alice, late, roster, now=NOW + alice.epoch_grace_seconds)


def test_the_grace_period_is_configurable_and_survives_a_restart(
    directory: Directory, conversation: str
) -> None:
    alice, bob = new_device(), new_device(epoch_grace_seconds=60)
    connect(directory, alice, bob)
    roster = roster_hash(alice, bob)
    distribute(alice, [alice, bob], conversation, 0, roster)
    old = send(alice, conversation, 0, roster, b"old")
    older = send(alice, conversation, 0, roster, b"older")
    distribute(alice, [alice, bob], conversation, 1, roster)
    assert read(bob, send(alice, conversation, 1, roster, b"new"), roster, now=NOW) == b"new"
    bob = ClientCrypto.from_state(bob.to_state())
    assert bob.epoch_grace_seconds == 60
    assert read(bob, old, roster, now=NOW + 59) == b"old"
    with pytest.raises(UnknownSenderKeyError, match="retired"):
        read(bob, older, roster, now=NOW + 60)
    with pytest.raises(ValueError, match="epoch_grace_seconds"):
        new_device(epoch_grace_seconds=-1)


def test_skipped_keys_expire_by_age(group: list[ClientCrypto], conversation: str, roster: bytes) -> None:
    alice, bob, _ = group
    distribute(alice, group, conversation, 0, roster)
    sent = [send(alice, conversation, 0, roster, f"m{i}".encode()) for i in range(3)]
    assert read(bob, sent[2], roster, now=NOW) == b"m2"  # m0 and m1 become skipped keys
    assert read(bob, sent[0], roster, now=NOW + SKIPPED_MAX_AGE - 1) == b"m0"
    with pytest.raises(ReplayError):
        read(bob, sent[1], roster, now=NOW + SKIPPED_MAX_AGE)
    (peer,) = bob.to_state()["sender_keys"]["peers"]
    assert peer["key"]["chain"]["skipped"] == []


def test_skipped_keys_of_a_silent_conversation_expire_too(
    group: list[ClientCrypto], conversation: str, roster: bytes
) -> None:
    alice, bob, _ = group
    distribute(alice, group, conversation, 0, roster)
    sent = [send(alice, conversation, 0, roster, f"m{i}".encode()) for i in range(2)]
    read(bob, sent[1], roster, now=NOW)
    bob.expire_keys(now=NOW + SKIPPED_MAX_AGE - 1)
    (peer,) = bob.to_state()["sender_keys"]["peers"]
    assert len(peer["key"]["chain"]["skipped"]) == 1
    bob.expire_keys(now=NOW + SKIPPED_MAX_AGE)
    (peer,) = bob.to_state()["sender_keys"]["peers"]
    assert peer["key"]["chain"]["skipped"] == []


def test_skipped_keys_are_bounded_by_count(
    group: list[ClientCrypto], conversation: str, roster: bytes
) -> None:
    alice, bob, _ = group
    distribute(alice, group, conversation, 0, roster)
    sent = [send(alice, conversation, 0, roster, f"m{i}".encode()) for i in range(MAX_SKIPPED_KEYS + 3)]
    read(bob, sent[MAX_SKIPPED_KEYS], roster)  # skips 0 .. MAX_SKIPPED_KEYS - 1: exactly the bound
    read(bob, sent[MAX_SKIPPED_KEYS + 2], roster)  # one more skipped: the oldest is dropped
    with pytest.raises(ReplayError):
        read(bob, sent[0], roster)
    assert read(bob, sent[1], roster) == b"m1"
    (peer,) = bob.to_state()["sender_keys"]["peers"]
    assert len(peer["key"]["chain"]["skipped"]) == MAX_SKIPPED_KEYS - 1


def test_a_forked_roster_cannot_read_the_other_view(
    group: list[ClientCrypto], conversation: str, roster: bytes
) -> None:
    """The server shows Alice one roster (A) and Bob another (B) for the same epoch."""
    alice, bob, _ = group
    view_a, view_b = roster, roster_hash(alice, bob)
    (message,) = alice.sender_key_messages(conversation, 0, view_a, [(bob.user_id, bob.device_id)], now=NOW)
    with pytest.raises(SenderKeyRefusedError):
        install(bob, alice, message, view_b)
    # Even a key Bob took under view A opens nothing when Bob's view (later) says B.
    (message,) = alice.sender_key_messages(conversation, 0, view_a, [(bob.user_id, bob.device_id)], now=NOW)
    assert install(bob, alice, message, view_a)
    envelope = send(alice, conversation, 0, view_a, b"under A")
    with pytest.raises(DecryptionError, match="another view of the roster"):
        read(bob, envelope, view_b)
    # Past that check, the roster hash in the associated data and signature refuses it too.
    state = bob.to_state()
    for peer in state["sender_keys"]["peers"]:
        peer["key"]["roster_hash"] = base64.b64encode(view_b).decode()
    relabelled = ClientCrypto.from_state(state)
    with pytest.raises(DecryptionError):
        read(relabelled, envelope, view_b)
    assert read(bob, envelope, view_a) == b"under A"


def test_an_own_sender_key_is_bound_to_one_roster(
    group: list[ClientCrypto], conversation: str, roster: bytes
) -> None:
    alice, bob, _ = group
    other = roster_hash(alice, bob)
    first = SenderKeyDistribution.decode(
        alice.group_sender_key_distribution(conversation, 0, roster, now=NOW)
    )
    again = SenderKeyDistribution.decode(
        alice.group_sender_key_distribution(conversation, 0, roster, now=NOW)
    )
    assert again.signing_public_key == first.signing_public_key
    forked = SenderKeyDistribution.decode(
        alice.group_sender_key_distribution(conversation, 0, other, now=NOW)
    )
    assert forked.signing_public_key != first.signing_public_key
    assert forked.chain_key != first.chain_key and forked.roster_hash == other
    with pytest.raises(UnknownSenderKeyError):  # the key for roster A is gone, not reused under B
        alice.encrypt_group_message(
            conversation, 0, str(uuid.uuid4()), "text", b"x", roster_hash=roster, now=NOW
        )


def test_sending_needs_a_distributed_key_first(alice: ClientCrypto, conversation: str) -> None:
    with pytest.raises(UnknownSenderKeyError):
        alice.encrypt_group_message(
            conversation,
            0,
            str(uuid.uuid4()),
            "text",
            b"nobody could read this",
            roster_hash=bytes(32),
            now=NOW,
        )


def test_outsiders_cannot_read(
    group: list[ClientCrypto], conversation: str, roster: bytes, eve: ClientCrypto
) -> None:
    alice = group[0]
    distribute(alice, group, conversation, 0, roster)
    with pytest.raises(UnknownSenderKeyError):
        read(eve, send(alice, conversation, 0, roster, b"members only"), roster)


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
    group: list[ClientCrypto], conversation: str, roster: bytes, field: str
) -> None:
    alice, bob, _ = group
    distribute(alice, group, conversation, 0, roster)
    envelope = send(alice, conversation, 0, roster, b"bound")
    moved = {**envelope, field: GROUP_CHANGES[field](envelope)}
    with pytest.raises((DecryptionError, UnknownSenderKeyError)):
        read(bob, moved, roster)
    assert read(bob, envelope, roster) == b"bound"


def test_metadata_binding_holds_even_where_the_key_lookup_would_succeed(
    group: list[ClientCrypto], conversation: str, roster: bytes
) -> None:
    # Same conversation, sender and epoch (so the same sender key is found): only the binding refuses.
    alice, bob, _ = group
    distribute(alice, group, conversation, 0, roster)
    envelope = send(alice, conversation, 0, roster, b"bound")
    for field in ("message_id", "content_type", "parent_id"):
        with pytest.raises(DecryptionError):
            read(bob, {**envelope, field: GROUP_CHANGES[field](envelope)}, roster)


@pytest.mark.parametrize("field", ["ciphertext", "nonce", "auth_tag"])
def test_any_flipped_byte_fails(
    group: list[ClientCrypto], conversation: str, roster: bytes, field: str
) -> None:
    alice, bob, _ = group
    distribute(alice, group, conversation, 0, roster)
    envelope = send(alice, conversation, 0, roster, b"tamper with me")
    raw = base64.b64decode(envelope[field])
    for position in range(len(raw)):
        tampered = bytearray(raw)
        tampered[position] ^= 0x40
        # A changed key id (header bytes 2..5) names a key Bob does not hold.
        names_another_key = field == "ciphertext" and 2 <= position < 6
        with pytest.raises(UnknownSenderKeyError if names_another_key else DecryptionError):
            read(bob, {**envelope, field: base64.b64encode(bytes(tampered)).decode()}, roster)
    assert read(bob, envelope, roster) == b"tamper with me"


def test_a_member_cannot_forge_another_members_message(
    group: list[ClientCrypto], conversation: str, roster: bytes
) -> None:
    """Carol holds Alice's chain key, so she can make valid AEAD output, but not Alice's signature."""
    alice, bob, carol = group
    distribute(alice, group, conversation, 0, roster)
    (entry,) = [
        p for p in carol.to_state()["sender_keys"]["peers"] if p["sender_device_id"] == alice.device_id
    ]
    chain = entry["key"]["chain"]
    message_key, _ = step(base64.b64decode(chain["chain_key"]))
    message_id = str(uuid.uuid4())
    context = GroupContext(conversation, message_id, alice.user_id, alice.device_id, "text", 0, roster)
    header = GroupMessageHeader(entry["key"]["key_id"], chain["next_index"]).encode()
    sealed = seal(message_key, header, b"forged by carol", context.encode(), reserve=64)
    assert open_sealed(message_key, sealed, len(header), context.encode()) == b"forged by carol"
    signature = Ed25519PrivateKey.generate().sign(sealed.ciphertext)
    forged = Sealed(sealed.ciphertext + signature, sealed.nonce, sealed.tag).to_wire()
    envelope = {"message_id": message_id, **forged, "content_type": "text", "key_epoch": 0}
    with pytest.raises(DecryptionError, match="signature"):
        read(bob, stored(envelope, conversation, alice), roster)
    assert read(bob, send(alice, conversation, 0, roster, b"genuine"), roster) == b"genuine"


def test_replays_and_own_messages(group: list[ClientCrypto], conversation: str, roster: bytes) -> None:
    alice, bob, _ = group
    distribute(alice, group, conversation, 0, roster)
    envelope = send(alice, conversation, 0, roster, b"once")
    assert read(bob, envelope, roster) == b"once"
    with pytest.raises(ReplayError):
        read(bob, envelope, roster)
    with pytest.raises(OwnMessageError):
        read(alice, envelope, roster)


def test_late_joiners_cannot_read_earlier_messages(
    group: list[ClientCrypto], conversation: str, roster: bytes
) -> None:
    alice, bob, carol = group
    distribute(alice, [alice, bob], conversation, 0, roster)
    early = send(alice, conversation, 0, roster, b"before carol got the key")
    distribute(alice, [alice, carol], conversation, 0, roster)
    with pytest.raises(ReplayError):
        read(carol, early, roster)
    assert read(carol, send(alice, conversation, 0, roster, b"after"), roster) == b"after"


def test_group_state_survives_a_round_trip(
    group: list[ClientCrypto], conversation: str, roster: bytes
) -> None:
    alice, bob, _ = group
    distribute(alice, group, conversation, 0, roster)
    skipped, latest = (send(alice, conversation, 0, roster, text) for text in (b"skipped", b"latest"))
    assert read(bob, latest, roster) == b"latest"  # leaves a skipped key and a retirement clock
    state = bob.to_state()
    assert ClientCrypto.from_state(state).to_state() == state
    alice, bob = ClientCrypto.from_state(alice.to_state()), ClientCrypto.from_state(state)
    assert read(bob, skipped, roster) == b"skipped"
    assert read(bob, send(alice, conversation, 0, roster, b"restored"), roster) == b"restored"


STATE_BREAKAGES: dict[str, Any] = {
    "supported version": lambda state: {**state, "version": 1},
    "epoch_grace_seconds": lambda state: {k: v for k, v in state.items() if k != "epoch_grace_seconds"},
    "signing_pins": lambda state: {k: v for k, v in state.items() if k != "signing_pins"},
    "seconds": lambda state: {**state, "epoch_grace_seconds": -5},
    "retirements": lambda state: {**state, "sender_keys": {**state["sender_keys"], "retirements": None}},
    "installs": lambda state: {**state, "sender_keys": {**state["sender_keys"], "installs": None}},
}


@pytest.mark.parametrize("error", sorted(STATE_BREAKAGES))
def test_a_state_of_another_version_or_missing_fields_is_refused(
    group: list[ClientCrypto], error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        ClientCrypto.from_state(STATE_BREAKAGES[error](group[0].to_state()))
