"""Post-compromise security of pairwise sessions: a thief who copied Bob's whole state and sees every
ciphertext loses Alice's messages after one reply round trip (protocol level, no server).

The thief is passive: it holds `ClientCrypto.from_state(bob.to_state())` and tries every message,
and, to read Bob's own replies, every message key computable from the stolen state (see
`thief_message_keys`). An active thief who impersonates Bob with the stolen keys is out of scope.
"""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from doubleratchet import AuthenticationFailedException

from tests.unit.client.support import Directory, connect
from veil.client.protocol.codec import b64decode, length_prefixed
from veil.client.protocol.double_ratchet import MessageAEAD, chain_step, root_step, run_sync
from veil.client.protocol.envelope import DeviceContext, Sealed
from veil.client.protocol.errors import DecryptionError
from veil.client.protocol.framing import RatchetHeader, SessionMessageHeader
from veil.client.protocol.pairwise import session_associated_data
from veil.client.protocol.session import ClientCrypto

CHAIN_STEPS_TRIED = 20


def send(sender: ClientCrypto, recipient: ClientCrypto, text: str) -> dict[str, Any]:
    return sender.encrypt_for_device(recipient.user_id, recipient.device_id, text.encode())


def read(reader: ClientCrypto, sender: ClientCrypto, message: dict[str, Any]) -> bytes:
    return reader.decrypt_device_message(sender.user_id, sender.device_id, "session_message", message)


def ratchet_key(message: dict[str, Any]) -> bytes:
    """The sender's ratchet public key, from the message's (public) frame."""
    ciphertext = b64decode(message["ciphertext"])
    return RatchetHeader.decode(ciphertext, SessionMessageHeader.LAYOUT.size).ratchet_key


def thief_message_keys(stolen: dict[str, Any], seen_ratchet_keys: list[bytes]) -> list[bytes]:
    """Every message key the thief can compute from Bob's stolen state and the public ratchet keys
    seen on the wire: up to CHAIN_STEPS_TRIED keys of each stolen chain, and of every chain one or
    two root steps away whose DH combines a stolen private key with a seen public key."""
    (peer,) = stolen["peers"]
    (session,) = peer["sessions"]
    ratchet = session["ratchet"]
    keys = stolen["keys"]
    privates = [
        b64decode(ratchet["own_ratchet_private"]),
        b64decode(keys["identity"]),
        b64decode(keys["signed_prekey"]["private_key"]),
    ] + [b64decode(item["private_key"]) for item in keys["one_time_prekeys"]]
    dh_outputs = [
        X25519PrivateKey.from_private_bytes(own).exchange(X25519PublicKey.from_public_bytes(seen))
        for own in privates
        for seen in seen_ratchet_keys
    ]
    chains = [b64decode(ratchet[name]["key"]) for name in ("sending", "receiving") if ratchet[name]]
    roots = [b64decode(ratchet["root"]["key"])]
    for _depth in range(2):
        next_roots = []
        for root in roots:
            for output in dh_outputs:
                next_root, chain = root_step(root, output)
                next_roots.append(next_root)
                chains.append(chain)
        roots = next_roots
    message_keys = [b64decode(item["message_key"]) for item in ratchet["skipped"]]
    for chain in chains:
        for _ in range(CHAIN_STEPS_TRIED):
            message_key, chain = chain_step(chain)
            message_keys.append(message_key)
    return message_keys


def opens_with_any(
    message_keys: list[bytes],
    message: dict[str, Any],
    sender: ClientCrypto,
    recipient: ClientCrypto,
    *,
    initiator: ClientCrypto,
) -> bool:
    """Whether one of `message_keys` opens a `session_message` from `sender` to `recipient` (the
    associated data binds the session initiator's identity key first)."""
    sealed = Sealed.from_wire(message)
    prefix_size = SessionMessageHeader.LAYOUT.size
    prefix = sealed.ciphertext[:prefix_size]
    header = sealed.ciphertext[prefix_size : prefix_size + RatchetHeader.LAYOUT.size]
    body = sealed.ciphertext[prefix_size + RatchetHeader.LAYOUT.size :]
    context = DeviceContext(recipient.device_id, sender.user_id, sender.device_id, "session_message")
    responder = recipient if sender is initiator else sender
    ad = session_associated_data(
        context, initiator.keys.identity_key, responder.keys.identity_key, prefix
    ) + length_prefixed(header)
    for message_key in message_keys:
        try:
            run_sync(MessageAEAD.decrypt(sealed.nonce + body + sealed.tag, message_key, ad))
        except AuthenticationFailedException:
            continue
        return True
    return False


@pytest.fixture
def talking(
    directory: Directory, alice: ClientCrypto, bob: ClientCrypto
) -> tuple[ClientCrypto, ClientCrypto]:
    """Alice and Bob after a set-up and one exchange each way: Alice has received Bob's last
    message, so her next message carries a new ratchet key."""
    connect(directory, alice, bob)
    assert read(bob, alice, send(alice, bob, "a1")) == b"a1"
    assert read(alice, bob, send(bob, alice, "b1")) == b"b1"
    return alice, bob


def test_a_thief_of_bobs_state_is_locked_out_after_one_reply_round_trip(
    talking: tuple[ClientCrypto, ClientCrypto],
) -> None:
    """The thief reads Alice's message n (sent after the theft), but once Bob has replied and Alice
    has received the reply, nothing Alice sends next opens for the thief; Bob reads all of it."""
    alice, bob = talking
    stolen = bob.to_state()
    thief = ClientCrypto.from_state(stolen)

    message_n = send(alice, bob, "message n")
    assert read(thief, alice, message_n) == b"message n"  # the copy is as good as Bob, for now
    assert read(bob, alice, message_n) == b"message n"

    reply = send(bob, alice, "reply")
    assert read(alice, bob, reply) == b"reply"  # the round trip

    seen = [ratchet_key(message_n), ratchet_key(reply)]
    for i in range(3):
        later = send(alice, bob, f"later {i}")
        seen.append(ratchet_key(later))
        with pytest.raises(DecryptionError):
            read(thief, alice, later)
        assert not opens_with_any(thief_message_keys(stolen, seen), later, alice, bob, initiator=alice)
        assert read(bob, alice, later) == f"later {i}".encode()


def test_the_thief_keeps_reading_until_bob_has_received_a_new_alice_ratchet_key(
    talking: tuple[ClientCrypto, ClientCrypto],
) -> None:
    """The control for the test above: a round trip only heals if Bob's reply used a ratchet key
    made after the theft. When Alice sends several messages in a row the copy reads them all."""
    alice, bob = talking
    thief = ClientCrypto.from_state(bob.to_state())
    for i in range(3):
        message = send(alice, bob, f"in a row {i}")
        assert read(thief, alice, message) == f"in a row {i}".encode()
        assert read(bob, alice, message) == f"in a row {i}".encode()


def test_the_thief_cannot_read_a_reply_bob_makes_after_receiving_a_new_alice_ratchet_key(
    talking: tuple[ClientCrypto, ClientCrypto],
) -> None:
    """Condition: Bob's reply is sent after Bob received (post-theft) a message under a ratchet key
    of Alice's that is new to him. Receiving it made Bob a fresh ratchet key the thief does not
    have, so the reply's chain key depends on DH(fresh key, Alice's key), which no key in the stolen
    state computes. A reply made before that (on Bob's stolen sending chain) is readable: the
    thief's key search works, so its failure below means something."""
    alice, bob = talking
    stolen = bob.to_state()
    seen: list[bytes] = []

    early_reply = send(bob, alice, "before the new key")  # still on the chain the thief stole
    seen.append(ratchet_key(early_reply))
    assert opens_with_any(thief_message_keys(stolen, seen), early_reply, bob, alice, initiator=alice)
    assert read(alice, bob, early_reply) == b"before the new key"

    message_n = send(alice, bob, "message n")  # a new Alice ratchet key: she received Bob's reply
    seen.append(ratchet_key(message_n))
    assert opens_with_any(
        thief_message_keys(stolen, seen), message_n, alice, bob, initiator=alice
    )  # as in the test above
    assert read(bob, alice, message_n) == b"message n"

    reply = send(bob, alice, "after the new key")
    seen.append(ratchet_key(reply))
    assert ratchet_key(reply) != ratchet_key(early_reply)  # Bob made a new ratchet key
    assert not opens_with_any(thief_message_keys(stolen, seen), reply, bob, alice, initiator=alice)
    assert read(alice, bob, reply) == b"after the new key"
