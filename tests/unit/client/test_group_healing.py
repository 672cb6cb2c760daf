"""Group messages heal after a state theft once a sender key rotates over healed pairwise sessions.

The thief copied Bob's whole client state at one moment and then only watches: it sees every
ciphertext (device messages to Bob, all group envelopes) and tries to open each one with the copy,
exactly as Bob's device would. It never sends anything itself.

The exact conditions, from the Double Ratchet (see `double_ratchet`): Bob's copied state holds his
current ratchet private key. A pairwise message from Alice to Bob is unreadable to the thief when
Alice sent it after receiving a pairwise message that Bob sent after he had received, after the
theft, a message from Alice under a ratchet key new to him (Bob then drew a ratchet key the thief
does not have). Until then the thief follows the session, including Alice's fresh ratchet keys.
A sender key is as safe as the pairwise messages that carried it: the thief reads every message of
a sender key it received (current at the theft, or distributed while the session was still
readable), and none of a key distributed over a healed session. So in a group Alice's messages are
safe from the first rotation of her key (by count, age or roster) distributed after she heard
back from Bob as above; with `rotate_on_peer_key=True` (direct conversations) each turn rotates,
so the conversation heals after one reply round trip.
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

import pytest

from tests.unit.client.support import NOW, Directory, connect, roster_hash, stored
from veil.client.protocol.errors import CryptoError
from veil.client.protocol.sender_keys import SENDER_KEY_MAX_AGE, SenderKeyDistribution
from veil.client.protocol.session import ClientCrypto


def steal(device: ClientCrypto) -> ClientCrypto:
    """A copy of the device's whole state, as a thief who read its keystore holds it."""
    return ClientCrypto.from_state(copy.deepcopy(device.to_state()))


class Network:
    """Delivers device messages and group envelopes, and shows the thief everything sent to Bob."""

    def __init__(self, conversation: str, roster: bytes, bob: ClientCrypto) -> None:
        self.conversation = conversation
        self.roster = roster
        self.bob = bob
        self.thief: ClientCrypto | None = None

    def distribute(
        self,
        sender: ClientCrypto,
        members: list[ClientCrypto],
        *,
        now: float,
        rotate_on_peer_key: bool = False,
    ) -> dict[str, bool]:
        """The sender's current key (rotated if due) to every other member, who install it.

        Returns `{"bob": opened}` once the thief watches (whether it opened Bob's copy), else `{}`.
        """
        devices = [(m.user_id, m.device_id) for m in members if m is not sender]
        messages = sender.sender_key_messages(
            self.conversation, 0, self.roster, devices, now=now, rotate_on_peer_key=rotate_on_peer_key
        )
        thief_opened: dict[str, bool] = {}
        for message in messages:
            recipient = next(m for m in members if m.device_id == message["device_id"])
            if recipient is self.bob and self.thief is not None:
                thief_opened["bob"] = self._thief_installs(sender, message, now=now)
            payload = recipient.decrypt_device_message(
                sender.user_id, sender.device_id, "sender_key", message
            )
            distribution = SenderKeyDistribution.decode(payload)
            recipient.install_sender_key(sender.user_id, sender.device_id, distribution, self.roster, now=now)
        return thief_opened

    def say(self, sender: ClientCrypto, readers: list[ClientCrypto], text: bytes) -> dict[str, Any]:
        envelope = sender.encrypt_group_message(
            self.conversation, 0, str(uuid.uuid4()), "text", text, roster_hash=self.roster, now=NOW
        )
        delivered = stored(envelope, self.conversation, sender)
        for reader in readers:
            if reader is not sender:
                assert reader.decrypt_group_message(delivered, self.roster, now=NOW) == text
        return delivered

    def thief_reads(self, envelope: dict[str, Any]) -> bool:
        assert self.thief is not None
        try:
            self.thief.decrypt_group_message(envelope, self.roster, now=NOW)
        except CryptoError:
            return False
        return True

    def _thief_installs(self, sender: ClientCrypto, message: dict[str, Any], *, now: float) -> bool:
        assert self.thief is not None
        try:
            payload = self.thief.decrypt_device_message(
                sender.user_id, sender.device_id, "sender_key", message
            )
        except CryptoError:
            return False
        distribution = SenderKeyDistribution.decode(payload)
        self.thief.install_sender_key(sender.user_id, sender.device_id, distribution, self.roster, now=now)
        return True


@pytest.fixture
def conversation() -> str:
    return str(uuid.uuid4())


def test_a_group_heals_at_the_first_rotation_after_bob_answered_alice(
    directory: Directory, alice: ClientCrypto, bob: ClientCrypto, carol: ClientCrypto, conversation: str
) -> None:
    group = [alice, bob, carol]
    connect(directory, alice, bob)
    connect(directory, alice, carol)
    connect(directory, bob, carol)
    network = Network(conversation, roster_hash(*group), bob)
    for member in group:  # Alice to Bob, then Bob to Alice: Alice has a fresh ratchet key unsent
        network.distribute(member, group, now=NOW)
    network.thief = steal(bob)

    # The key current at the theft: the thief reads its messages.
    assert network.thief_reads(network.say(alice, group, b"before any rotation"))

    # Alice rotates (a week later) before hearing from Bob: her new ratchet key meets Bob's stolen
    # one, so the thief opens the distribution and reads the new key's messages too.
    week = NOW + SENDER_KEY_MAX_AGE
    assert network.distribute(alice, group, now=week) == {"bob": True}
    assert network.thief_reads(network.say(alice, group, b"rotated, not yet healed"))

    # Bob received that message under a new ratchet key of Alice's: his answer (his own rotated
    # sender key) goes out under a ratchet key the thief does not have. Alice receives it.
    network.distribute(bob, group, now=week)

    # Alice's next rotation travels over the healed session: the thief reads nothing of it.
    assert network.distribute(alice, group, now=week + SENDER_KEY_MAX_AGE) == {"bob": False}
    for text in (b"healed", b"still healed"):
        assert not network.thief_reads(network.say(alice, group, text))
    # Carol's key was never rotated: the thief still reads it until Carol rotates (she has not
    # heard from Bob since the theft, so her next rotation would not heal yet either).
    assert network.thief_reads(network.say(carol, group, b"carol's old key"))


def test_a_direct_conversation_with_turn_rotation_heals_after_one_reply_round_trip(
    directory: Directory, alice: ClientCrypto, bob: ClientCrypto, conversation: str
) -> None:
    pair = [alice, bob]
    connect(directory, alice, bob)
    network = Network(conversation, roster_hash(*pair), bob)

    def turn(sender: ClientCrypto, text: bytes) -> tuple[dict[str, bool], dict[str, Any]]:
        opened = network.distribute(sender, pair, now=NOW, rotate_on_peer_key=True)
        return opened, network.say(sender, pair, text)

    turn(alice, b"hi bob")
    turn(bob, b"hi alice")
    network.thief = steal(bob)

    # Message n: Alice's reply still meets Bob's stolen ratchet key.
    opened, message_n = turn(alice, b"message n")
    assert opened == {"bob": True} and network.thief_reads(message_n)
    # Bob replies (a fresh ratchet key and a fresh sender key), Alice answers: nothing readable.
    turn(bob, b"bob's reply")
    for text in (b"after the round trip", b"and later"):
        opened, envelope = turn(alice, text)
        assert opened == {"bob": False} and not network.thief_reads(envelope)
        turn(bob, b"ok")


def test_without_turn_rotation_a_direct_conversation_stays_readable_to_the_thief(
    directory: Directory, alice: ClientCrypto, bob: ClientCrypto, conversation: str
) -> None:
    """Why direct conversations rotate by turn: healed pairwise sessions alone do not help while
    Alice's sender key (held by the thief) stays in use."""
    pair = [alice, bob]
    connect(directory, alice, bob)
    network = Network(conversation, roster_hash(*pair), bob)
    network.distribute(alice, pair, now=NOW)
    network.distribute(bob, pair, now=NOW)
    network.thief = steal(bob)
    for _ in range(3):
        network.distribute(alice, pair, now=NOW)  # the same key again: nothing new to install
        assert network.thief_reads(network.say(alice, pair, b"on the stolen key"))
        network.say(bob, pair, b"reply")
