"""The Double Ratchet of pairwise sessions: out-of-order delivery and loss across DH ratchet steps,
the skipped-key bounds (count, distance, age), replays, forgeries that change nothing, random
nonces (no two-time pad after a restored backup), and the library driven without an event loop."""

from __future__ import annotations

import asyncio
import base64
import os
import random
import warnings
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from tests.unit.client.support import NOW, Directory, connect
from veil.client.protocol.double_ratchet import (
    CHAIN_CONSTANT,
    ChainKDF,
    MessageAEAD,
    RatchetMessage,
    SessionRatchet,
    chain_step,
    run_sync,
)
from veil.client.protocol.envelope import NONCE_SIZE
from veil.client.protocol.errors import (
    DecryptionError,
    MalformedMessageError,
    ReplayError,
    TooManySkippedError,
    UnknownSessionError,
)
from veil.client.protocol.framing import RatchetHeader, SessionMessageHeader
from veil.client.protocol.pairwise import PeerSessions
from veil.client.protocol.ratchet import MAX_SKIP, MAX_SKIPPED_KEYS, SKIPPED_MAX_AGE, step
from veil.client.protocol.session import ClientCrypto

PREFIX = SessionMessageHeader.LAYOUT.size  # where the ratchet header starts in a session_message


def send(sender: ClientCrypto, recipient: ClientCrypto, text: str) -> tuple[bytes, dict[str, Any]]:
    return text.encode(), sender.encrypt_for_device(recipient.user_id, recipient.device_id, text.encode())


def read(
    reader: ClientCrypto, sender: ClientCrypto, message: dict[str, Any], *, now: float | None = None
) -> bytes:
    return reader.decrypt_device_message(
        sender.user_id, sender.device_id, "session_message", message, now=now
    )


def header_of(message: dict[str, Any]) -> RatchetHeader:
    return RatchetHeader.decode(base64.b64decode(message["ciphertext"]), PREFIX)


def skipped_count(device: ClientCrypto) -> int:
    (peer,) = device.to_state()["peers"]
    return sum(len(session["ratchet"]["skipped"]) for session in peer["sessions"])


FLIP = None
"""A replacement that flips the lowest bit of one byte (a fixed byte may equal the original)."""


def with_bytes(message: dict[str, Any], field: str, offset: int, replacement: bytes | None) -> dict[str, Any]:
    raw = bytearray(base64.b64decode(message[field]))
    if replacement is None:  # FLIP
        raw[offset] ^= 1
    else:
        raw[offset : offset + len(replacement)] = replacement
    return {**message, field: base64.b64encode(bytes(raw)).decode()}


def test_shuffled_delivery_across_several_dh_ratchet_steps(
    directory: Directory, alice: ClientCrypto, bob: ClientCrypto
) -> None:
    """Each round both sides send a few messages and the other side reads only one of them, so
    every round is a DH ratchet step on both sides; the held-back rest arrive at the end, shuffled."""
    connect(directory, alice, bob)
    rng = random.Random(15)
    late_to_bob: list[tuple[bytes, dict[str, Any]]] = []
    late_to_alice: list[tuple[bytes, dict[str, Any]]] = []
    ratchet_keys = set()
    for round_ in range(4):
        to_bob = [send(alice, bob, f"a{round_}.{i}") for i in range(3)]
        expected, message = to_bob.pop(rng.randrange(3))
        assert read(bob, alice, message) == expected
        late_to_bob += to_bob
        to_alice = [send(bob, alice, f"b{round_}.{i}") for i in range(3)]
        expected, message = to_alice.pop(rng.randrange(3))
        assert read(alice, bob, message) == expected
        late_to_alice += to_alice
        ratchet_keys |= {header_of(message).ratchet_key, header_of(to_bob[0][1]).ratchet_key}
    assert len(ratchet_keys) == 8  # a new ratchet key on each side every round
    rng.shuffle(late_to_bob)
    rng.shuffle(late_to_alice)
    for expected, message in late_to_bob:
        assert read(bob, alice, message) == expected
    for expected, message in late_to_alice:
        assert read(alice, bob, message) == expected
    assert skipped_count(alice) == skipped_count(bob) == 0  # every skipped key was used once


def test_lost_messages_do_not_block_later_ones(
    directory: Directory, alice: ClientCrypto, bob: ClientCrypto
) -> None:
    connect(directory, alice, bob)
    sent = [send(alice, bob, f"m{i}") for i in range(10)]
    for expected, message in sent[2::3]:  # two of every three are lost for good
        assert read(bob, alice, message) == expected
    assert skipped_count(bob) == 6  # m0 m1 m3 m4 m6 m7 (m9 is beyond the last one read)
    expected, message = send(bob, alice, "still here")
    assert read(alice, bob, message) == expected
    expected, message = send(alice, bob, "next chain")
    assert read(bob, alice, message) == expected
    assert skipped_count(bob) == 7  # the new chain's header said the old one had 11 messages: m9 too
    assert read(bob, alice, sent[9][1]) == b"m9"


def test_more_than_max_skip_ahead_is_refused_and_changes_nothing(
    directory: Directory, alice: ClientCrypto, bob: ClientCrypto
) -> None:
    connect(directory, alice, bob)
    sent = [send(alice, bob, f"m{i}") for i in range(MAX_SKIP + 2)]
    before = bob.to_state()
    with pytest.raises(TooManySkippedError):  # would skip MAX_SKIP + 1 keys
        read(bob, alice, sent[MAX_SKIP + 1][1])
    assert bob.to_state() == before
    assert read(bob, alice, sent[MAX_SKIP][1]) == sent[MAX_SKIP][0]  # skips exactly MAX_SKIP
    assert skipped_count(bob) == MAX_SKIP


def test_stored_skipped_keys_are_bounded_and_the_oldest_go_first(
    directory: Directory, alice: ClientCrypto, bob: ClientCrypto
) -> None:
    connect(directory, alice, bob)
    sent = [send(alice, bob, f"m{i}") for i in range(MAX_SKIPPED_KEYS + 3)]
    read(bob, alice, sent[MAX_SKIPPED_KEYS][1])  # skips m0 .. m999: exactly the bound
    read(bob, alice, sent[MAX_SKIPPED_KEYS + 2][1])  # one more skipped: m0's key is dropped
    assert skipped_count(bob) == MAX_SKIPPED_KEYS
    with pytest.raises(ReplayError):
        read(bob, alice, sent[0][1])
    assert read(bob, alice, sent[1][1]) == b"m1"
    assert read(bob, alice, sent[MAX_SKIPPED_KEYS + 1][1]) == sent[MAX_SKIPPED_KEYS + 1][0]


def across_a_dh_step(
    directory: Directory, alice: ClientCrypto, bob: ClientCrypto, *, old: int, new: int
) -> tuple[list[tuple[bytes, dict[str, Any]]], list[tuple[bytes, dict[str, Any]]]]:
    """`old` messages Bob has not read on Alice's first chain, then `new` on her next one."""
    connect(directory, alice, bob)  # Bob has read index 0 of Alice's first chain
    held_back = [send(alice, bob, f"old {i}") for i in range(old)]
    _, reply = send(bob, alice, "reply")
    read(alice, bob, reply)  # so Alice steps to a new ratchet key
    return held_back, [send(alice, bob, f"new {i}") for i in range(new)]


def test_a_message_starting_a_new_chain_keeps_the_newest_max_skipped_keys(
    directory: Directory, alice: ClientCrypto, bob: ClientCrypto
) -> None:
    """One message may derive the old chain's unread rest and its own index (here one more than
    the store holds): it opens, the store keeps the newest MAX_SKIPPED_KEYS keys, and only the
    oldest held-back message is given up."""
    old = MAX_SKIP // 2
    held_back, new = across_a_dh_step(directory, alice, bob, old=old, new=MAX_SKIP - old + 2)
    assert (header_of(new[-1][1]).previous_chain_length, header_of(new[-1][1]).index) == (
        old + 1,
        MAX_SKIP - old + 1,
    )
    assert read(bob, alice, new[-1][1]) == new[-1][0]
    assert skipped_count(bob) == MAX_SKIPPED_KEYS
    with pytest.raises(ReplayError):  # pushed out of the store: unreadable, never re-derived
        read(bob, alice, held_back[0][1])
    for expected, message in held_back[1:] + new[:-1]:
        assert read(bob, alice, message) == expected
    assert skipped_count(bob) == 0


def test_heavy_loss_across_a_dh_step_gives_up_the_old_chain_and_carries_on(
    directory: Directory, alice: ClientCrypto, bob: ClientCrypto
) -> None:
    """More than MAX_SKIP messages of the old chain unread when the peer's new ratchet key arrives:
    their keys are not derived (those messages stay unreadable), the new chain opens, and no
    warning reaches the user: heavy loss must never block a session for good."""
    held_back, new = across_a_dh_step(directory, alice, bob, old=MAX_SKIP + 5, new=2)
    assert header_of(new[0][1]).previous_chain_length == MAX_SKIP + 6
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        assert [read(bob, alice, message) for _, message in new] == [text for text, _ in new]
    assert caught == []
    assert skipped_count(bob) == 0
    with pytest.raises(ReplayError):  # from the old chain, whose keys were given up
        read(bob, alice, held_back[5][1])


def test_replays_are_refused_in_the_current_and_in_an_earlier_chain(
    directory: Directory, alice: ClientCrypto, bob: ClientCrypto
) -> None:
    connect(directory, alice, bob)
    (first, once), (_, skipped) = send(alice, bob, "once"), send(alice, bob, "skipped")
    _, third = send(alice, bob, "third")
    assert read(bob, alice, third) == b"third"
    assert read(bob, alice, once) == first  # from the skipped keys
    with pytest.raises(ReplayError):  # the current chain, from the skipped keys: used up
        read(bob, alice, once)
    with pytest.raises(ReplayError):  # the current chain, below its position
        read(bob, alice, third)
    _, reply = send(bob, alice, "reply")
    read(alice, bob, reply)
    _, newer = send(alice, bob, "newer")
    read(bob, alice, newer)  # Bob has stepped to Alice's new ratchet key
    before = bob.to_state()
    with pytest.raises(ReplayError):  # an earlier chain, message already read
        read(bob, alice, third)
    assert bob.to_state() == before
    assert read(bob, alice, skipped) == b"skipped"  # an earlier chain, key kept: reads once
    with pytest.raises(ReplayError):
        read(bob, alice, skipped)


def test_skipped_keys_expire_by_age_and_their_times_survive_a_restart(
    directory: Directory, alice: ClientCrypto, bob: ClientCrypto
) -> None:
    """A key skipped at a known time expires SKIPPED_MAX_AGE later; one skipped without a time
    (a caller without a clock) starts aging at the next time given, not at once."""
    connect(directory, alice, bob)
    sent = [send(alice, bob, f"m{i}") for i in range(4)]
    read(bob, alice, sent[1][1], now=NOW)  # m0 skipped at NOW
    read(bob, alice, sent[3][1])  # m2 skipped at an unknown time
    bob = ClientCrypto.from_state(bob.to_state())
    first_known = NOW + SKIPPED_MAX_AGE - 1
    assert read(bob, alice, sent[0][1], now=first_known) == b"m0"  # m2 starts aging here
    bob = ClientCrypto.from_state(bob.to_state())
    late = ClientCrypto.from_state(bob.to_state())
    assert read(bob, alice, sent[2][1], now=first_known + SKIPPED_MAX_AGE - 1) == b"m2"
    with pytest.raises(ReplayError):
        read(late, alice, sent[2][1], now=first_known + SKIPPED_MAX_AGE)
    assert skipped_count(bob) == skipped_count(late) == 0


def test_a_skipped_key_expires_at_exactly_the_maximum_age(
    directory: Directory, alice: ClientCrypto, bob: ClientCrypto
) -> None:
    connect(directory, alice, bob)
    sent = [send(alice, bob, f"m{i}") for i in range(3)]
    read(bob, alice, sent[2][1], now=NOW)
    copy = ClientCrypto.from_state(bob.to_state())
    assert read(copy, alice, sent[0][1], now=NOW + SKIPPED_MAX_AGE - 1) == b"m0"
    with pytest.raises(ReplayError):
        read(bob, alice, sent[0][1], now=NOW + SKIPPED_MAX_AGE)


TAMPERING = {
    "session id": ("ciphertext", 2, b"\x00" * 16),
    "ratchet key": ("ciphertext", PREFIX, bytes(range(32))),
    "low-order ratchet key": ("ciphertext", PREFIX, bytes(32)),
    "previous chain length": ("ciphertext", PREFIX + 32, b"\x00\x00\x00\x07"),
    "index, nearby": ("ciphertext", PREFIX + 36, b"\x00\x00\x00\x09"),
    "index, far ahead": ("ciphertext", PREFIX + 36, b"\xff\xff\xff\xff"),
    "body": ("ciphertext", PREFIX + 40, FLIP),
    "version": ("ciphertext", 0, b"\x01"),
    "nonce": ("nonce", 0, b"\x00" * 12),
    "tag": ("auth_tag", 15, FLIP),
}


@pytest.mark.parametrize("name", list(TAMPERING))
def test_a_tampered_message_fails_and_leaves_the_session_usable(
    directory: Directory, alice: ClientCrypto, bob: ClientCrypto, name: str
) -> None:
    connect(directory, alice, bob)
    _, reply = send(bob, alice, "so Alice steps")
    read(alice, bob, reply)
    expected, message = send(alice, bob, "genuine")
    field, offset, replacement = TAMPERING[name]
    forged = with_bytes(message, field, offset, replacement)
    assert forged != message
    before = bob.to_state()
    with pytest.raises((DecryptionError, UnknownSessionError)):
        read(bob, alice, forged)
    assert bob.to_state() == before
    assert read(bob, alice, message) == expected


def test_a_version_1_frame_is_refused_by_its_version(
    directory: Directory, alice: ClientCrypto, bob: ClientCrypto
) -> None:
    connect(directory, alice, bob)
    _, message = send(alice, bob, "x")
    with pytest.raises(MalformedMessageError, match="unsupported frame version 1"):
        read(bob, alice, with_bytes(message, "ciphertext", 0, b"\x01"))


def test_another_content_type_is_another_associated_data(
    directory: Directory, alice: ClientCrypto, bob: ClientCrypto
) -> None:
    connect(directory, alice, bob)
    _, message = send(alice, bob, "a session_message")
    before = bob.to_state()
    with pytest.raises(DecryptionError):
        bob.decrypt_device_message(alice.user_id, alice.device_id, "sender_key", message)
    assert bob.to_state() == before
    assert read(bob, alice, message) == b"a session_message"


def body_of(message: dict[str, Any]) -> bytes:
    """The AEAD ciphertext of a `session_message`, without frame prefix, ratchet header and tag."""
    return base64.b64decode(message["ciphertext"])[PREFIX + RatchetHeader.LAYOUT.size :]


def xor(left: bytes, right: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(left, right, strict=True))


def test_no_two_messages_share_a_nonce(directory: Directory, alice: ClientCrypto, bob: ClientCrypto) -> None:
    """Both directions, several chains, the same text every time: every nonce is new."""
    connect(directory, alice, bob)
    nonces = []
    for _ in range(3):
        for sender, recipient in [(alice, bob), (bob, alice)]:
            messages = [send(sender, recipient, "same text")[1] for _ in range(3)]
            nonces += [message["nonce"] for message in messages]
            read(recipient, sender, messages[-1])  # so the next round is a DH ratchet step
    assert len(set(nonces)) == len(nonces) == 18


def test_the_librarys_chain_kdf_computes_the_hash_ratchet_step() -> None:
    """`chain_step` is `ratchet.step`; the library's chain KDF with our constant must agree."""
    chain_key = bytes(range(32))
    output = run_sync(ChainKDF.derive(chain_key, CHAIN_CONSTANT, 64))
    assert (output[32:], output[:32]) == step(chain_key) == chain_step(chain_key)


def test_the_same_message_key_twice_gets_two_nonces() -> None:
    """The nonce is drawn per encryption, not derived from the key (production's `MessageAEAD`)."""
    key, associated_data = bytes(range(32)), b"ad"
    first = run_sync(MessageAEAD.encrypt(b"same text", key, associated_data))
    second = run_sync(MessageAEAD.encrypt(b"same text", key, associated_data))
    assert first[:NONCE_SIZE] != second[:NONCE_SIZE] and first[NONCE_SIZE:] != second[NONCE_SIZE:]
    for sealed in (first, second):
        assert run_sync(MessageAEAD.decrypt(sealed, key, associated_data)) == b"same text"


def test_a_changed_envelope_nonce_fails_and_changes_no_state(
    directory: Directory, alice: ClientCrypto, bob: ClientCrypto
) -> None:
    """The nonce is the sender's choice, authenticated by the tag: another one (a real nonce of
    another message, or a random one) does not open the message, and Bob's session is untouched."""
    connect(directory, alice, bob)
    _, other = send(alice, bob, "other")
    expected, message = send(alice, bob, "genuine")
    before = bob.to_state()
    for nonce in (other["nonce"], base64.b64encode(os.urandom(NONCE_SIZE)).decode()):
        with pytest.raises(DecryptionError):
            read(bob, alice, {**message, "nonce": nonce})
        assert bob.to_state() == before
    assert read(bob, alice, message) == expected
    assert read(bob, alice, other) == b"other"


def test_a_session_restored_from_an_older_state_encrypts_under_new_nonces(
    directory: Directory, alice: ClientCrypto, bob: ClientCrypto
) -> None:
    """Alice restores a backup and sends again from the same chain index, so under the same message
    key: the nonce differs, so the two ciphertexts do not XOR to the two plaintexts' XOR (no
    two-time pad); Bob refuses the second as a replay, and nothing is disclosed."""
    connect(directory, alice, bob)
    backup = alice.to_state()
    dawn, first = send(alice, bob, "attack at dawn")
    restored = ClientCrypto.from_state(backup)
    dusk, second = send(restored, bob, "attack at dusk")
    assert header_of(first) == header_of(second)  # same chain, same index: the same message key
    assert first["nonce"] != second["nonce"]
    assert xor(body_of(first), body_of(second)) != xor(dawn, dusk)
    assert read(bob, alice, first) == dawn
    before = bob.to_state()
    with pytest.raises(ReplayError):
        read(bob, alice, second)
    assert bob.to_state() == before


def test_a_message_claiming_the_signed_prekeys_chain_is_refused() -> None:
    """The responder's signed prekey is the initiator's first peer ratchet key but never sends: a
    message under it is a forgery, refused cleanly (the library would fail an assertion)."""
    signed_prekey = X25519PrivateKey.generate()
    ratchet, _ = SessionRatchet.initiate(bytes(32), signed_prekey.public_key().public_bytes_raw(), b"", b"ad")
    forged = RatchetMessage(
        RatchetHeader(signed_prekey.public_key().public_bytes_raw(), 0, 0), bytes(12), bytes(16)
    )
    before = ratchet.to_state()
    with pytest.raises(DecryptionError):
        ratchet.decrypt(forged, b"ad")
    assert ratchet.to_state() == before


def test_the_core_works_inside_a_running_event_loop(
    directory: Directory, alice: ClientCrypto, bob: ClientCrypto
) -> None:
    """The SDK calls the core from async code: the library's coroutines are driven without a loop."""

    async def converse() -> bytes:
        connect(directory, alice, bob)
        _, message = send(alice, bob, "from inside a loop")
        return read(bob, alice, message)

    assert asyncio.run(converse()) == b"from inside a loop"


def test_run_sync_refuses_a_coroutine_that_suspends() -> None:
    async def suspends() -> None:
        await asyncio.sleep(0)

    with pytest.raises(RuntimeError, match="suspended"):
        run_sync(suspends())


def test_sessions_with_skipped_keys_survive_a_state_round_trip(
    directory: Directory, alice: ClientCrypto, bob: ClientCrypto
) -> None:
    connect(directory, alice, bob)
    sent = [send(alice, bob, f"m{i}") for i in range(5)]
    read(bob, alice, sent[4][1], now=NOW)
    _, reply = send(bob, alice, "reply")
    read(alice, bob, reply)
    alice, bob = ClientCrypto.from_state(alice.to_state()), ClientCrypto.from_state(bob.to_state())
    assert ClientCrypto.from_state(bob.to_state()).to_state() == bob.to_state()
    expected, message = send(alice, bob, "after restart")
    assert read(bob, alice, message) == expected
    for expected, message in sent[:4]:
        assert read(bob, alice, message) == expected


DAMAGE = {
    "short private key": (lambda r: {**r, "own_ratchet_private": "AAAA"}, "own_ratchet_private"),
    "no sending chain": (lambda r: {**r, "sending": None}, "sending"),
    "negative length": (lambda r: {**r, "root": {"key": r["root"]["key"], "length": -1}}, "length"),
    "skipped key without key": (
        lambda r: {**r, "skipped": [{"ratchet_key": r["peer_ratchet_key"], "index": 0}]},
        "message_key",
    ),
    "bad earlier key": (lambda r: {**r, "earlier_peer_keys": ["not base64"]}, "earlier_peer_keys"),
    "receiving missing": (lambda r: {k: v for k, v in r.items() if k != "receiving"}, "receiving"),
}


@pytest.mark.parametrize("name", list(DAMAGE))
def test_a_damaged_ratchet_state_is_refused_with_value_error(name: str) -> None:
    damage, field = DAMAGE[name]
    signed_prekey = X25519PrivateKey.generate()
    ratchet, _ = SessionRatchet.initiate(bytes(32), signed_prekey.public_key().public_bytes_raw(), b"", b"ad")
    with pytest.raises(ValueError, match=field):
        SessionRatchet.from_state(damage(ratchet.to_state()))


def test_silent_sessions_can_be_swept_of_expired_skipped_keys(
    directory: Directory, alice: ClientCrypto, bob: ClientCrypto
) -> None:
    """Expiry need not wait for the next message of the session: `PeerSessions.expire` sweeps all."""
    connect(directory, alice, bob)
    sent = [send(alice, bob, f"m{i}") for i in range(3)]
    read(bob, alice, sent[2][1], now=NOW)
    (state,) = bob.to_state()["peers"]
    peer = PeerSessions.from_state(state)
    peer.expire(NOW + SKIPPED_MAX_AGE - 1)
    assert len(peer.to_state()["sessions"][0]["ratchet"]["skipped"]) == 2
    peer.expire(NOW + SKIPPED_MAX_AGE)
    assert peer.to_state()["sessions"][0]["ratchet"]["skipped"] == []
