"""Everything placed in `ciphertext` must be binary: the server refuses fields that look like text."""

from __future__ import annotations

import base64
import uuid

import pytest

from tests.unit.client.support import NOW, Directory, connect, roster_hash, stored
from veil.client.protocol.session import ClientCrypto

PRINTABLE = frozenset(range(0x20, 0x7F)) | {0x09, 0x0A, 0x0D}


def looks_like_text(data: bytes) -> bool:
    """A stricter stand-in for the server's rule: 90 % printable ASCII, or mostly readable UTF-8."""
    if sum(byte in PRINTABLE for byte in data) >= 0.9 * len(data):
        return True
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return sum(char.isprintable() for char in text) >= 0.9 * len(text)


def test_no_ciphertext_looks_like_text(directory: Directory, alice: ClientCrypto, bob: ClientCrypto) -> None:
    text = b"Meet me at the station at nine, bring the documents. " * 4
    directory.publish(bob)
    samples = [alice.start_session(bob.user_id, bob.device_id, directory.claim(bob), text)]
    samples.append(
        alice.start_session(bob.user_id, bob.device_id, directory.claim(bob, with_one_time=False), b"")
    )
    for length in (0, 1, 5, 20, 200):
        samples.append(alice.encrypt_for_device(bob.user_id, bob.device_id, text[:length]))
    conversation = str(uuid.uuid4())
    connect(directory, bob, alice)
    roster = roster_hash(alice, bob)
    samples += bob.sender_key_messages(conversation, 0, roster, [(alice.user_id, alice.device_id)], now=0.0)
    for length in (0, 1, 5, 20, 200):
        message_id = str(uuid.uuid4())
        envelope = bob.encrypt_group_message(
            conversation, 0, message_id, "text", text[:length], roster_hash=roster, now=NOW
        )
        samples.append(stored(envelope, conversation, bob))
    for sample in samples:
        ciphertext = base64.b64decode(sample["ciphertext"])
        assert 1 <= len(ciphertext) <= 65536
        assert not looks_like_text(ciphertext), ciphertext


def test_the_largest_plaintexts_fit_the_servers_ciphertext_limit(
    directory: Directory, alice: ClientCrypto, bob: ClientCrypto
) -> None:
    connect(directory, alice, bob)
    largest = alice.encrypt_for_device(bob.user_id, bob.device_id, bytes(65478))
    assert len(base64.b64decode(largest["ciphertext"])) == 65536
    before = alice.to_state()
    with pytest.raises(ValueError, match="too large"):
        alice.encrypt_for_device(bob.user_id, bob.device_id, bytes(65479))
    assert alice.to_state() == before  # a refused message leaves no gap in a chain
    conversation = str(uuid.uuid4())
    roster = roster_hash(alice, bob)
    alice.group_sender_key_distribution(conversation, 0, roster, now=0.0)
    envelope = alice.encrypt_group_message(
        conversation, 0, str(uuid.uuid4()), "file", bytes(65462), roster_hash=roster, now=NOW
    )
    assert len(base64.b64decode(envelope["ciphertext"])) == 65536
    with pytest.raises(ValueError, match="too large"):
        alice.encrypt_group_message(
            conversation, 0, str(uuid.uuid4()), "file", bytes(65463), roster_hash=roster, now=NOW
        )
    assert alice.to_state()["sender_keys"]["own"][0]["chain"]["index"] == 1
