"""Post-compromise security with real clients and a live server (issue 15).

A thief copies Bob's keystore once and from then on sees everything the server sees: every device
message queued for Bob's device and every conversation message, straight from the database. With
the stolen state it follows Bob's sessions exactly as Bob's device would. Pairwise sessions are a
Double Ratchet, and a direct conversation's sender keys rotate at every turn, so the copy goes
stale as soon as Bob's device has answered a pairwise message that Alice sent after the theft:
from then on the thief reads nothing, while Bob reads everything.
"""

from __future__ import annotations

import base64
import time
import uuid

import asyncpg

from tests.support.clients import Clients
from tests.support.databases import query
from veil.client.protocol.errors import CryptoError
from veil.client.protocol.sender_keys import SenderKeyDistribution
from veil.client.protocol.session import ClientCrypto
from veil.client.sdk.http import VeilClient


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def binary(row: asyncpg.Record) -> dict[str, str]:
    return {field: b64(row[field]) for field in ("ciphertext", "nonce", "auth_tag")}


class Thief:
    """Bob's keystore as copied at one moment, fed what the server sees from then on."""

    def __init__(self, victim: VeilClient, conversation_id: str, database_url: str) -> None:
        self.crypto = ClientCrypto.from_state(victim.crypto.to_state())
        self.device_id = victim.device_id
        self.conversation_id = conversation_id
        self.database_url = database_url
        view = victim.membership(conversation_id)
        self.roster_hash = view.roster_hash_at(view.current_epoch)
        self.seen: set[int] = set()

    def intercept(self) -> None:
        """Take every device message queued for Bob's device that the thief has not seen yet.

        Called before Bob fetches them (fetching removes them from the server)."""
        rows = query(
            self.database_url,
            "SELECT * FROM device_messages WHERE recipient_device_id = $1 ORDER BY id",
            uuid.UUID(self.device_id),
        )
        for row in rows:
            if row["id"] in self.seen:
                continue
            self.seen.add(row["id"])
            sender, device = str(row["sender_user_id"]), str(row["sender_device_id"])
            try:
                plaintext = self.crypto.decrypt_device_message(
                    sender, device, row["content_type"], binary(row)
                )
            except CryptoError:
                continue  # the stolen state has gone stale for this session
            if row["content_type"] == "sender_key":
                distribution = SenderKeyDistribution.decode(plaintext)
                self.crypto.install_sender_key(
                    sender, device, distribution, self.roster_hash, now=time.time()
                )

    def read(self, message_id: str) -> bytes | None:
        """The plaintext of a conversation message as stored, or None if the stolen state cannot open it."""
        [row] = query(
            self.database_url, "SELECT * FROM messages WHERE message_id = $1", uuid.UUID(message_id)
        )
        envelope = {
            **binary(row),
            "message_id": message_id,
            "conversation_id": str(row["conversation_id"]),
            "sender_id": str(row["sender_id"]),
            "sender_device_id": str(row["sender_device_id"]),
            "content_type": row["content_type"],
            "key_epoch": row["key_epoch"],
            "parent_id": None,
        }
        try:
            return self.crypto.decrypt_group_message(envelope, self.roster_hash, now=time.time())
        except CryptoError:
            return None


def read_all(reader: VeilClient, conversation_id: str) -> dict[str, bytes | None]:
    return {m.message_id: m.plaintext for m in reader.history(conversation_id)}


def test_a_stolen_keystore_stops_reading_a_direct_chat_after_one_reply_round_trip(
    clients: Clients, database_url: str
) -> None:
    alice, bob = clients.new("alice"), clients.new("bob")
    cid = alice.create_direct(bob.user_id).conversation_id
    first = alice.send_text(cid, "before the theft")
    assert read_all(bob, cid)[first.message_id] == b"before the theft"

    thief = Thief(bob, cid, database_url)  # Bob's keystore is copied here

    # Until Bob's device answers a pairwise message Alice sent after the theft, the copy keeps up.
    readable = [alice.send_text(cid, "still readable: same sender key")]
    thief.intercept()
    bob_reply = bob.send_text(cid, "Bob's reply: his next key rides his compromised ratchet key")
    assert read_all(alice, cid)[bob_reply.message_id] is not None
    readable.append(alice.send_text(cid, "still readable: new key, but to Bob's stolen ratchet key"))
    thief.intercept()
    bob_view = read_all(bob, cid)
    for sent in readable:
        assert bob_view[sent.message_id] is not None
        assert thief.read(sent.message_id) is not None, "the copy should still read message n"

    # Bob answers: his device ratcheted to a key made after the theft. Alice reads the answer and
    # writes again, under a new sender key sent over the healed session.
    second_reply = bob.send_text(cid, "Bob answers after the theft")
    assert read_all(alice, cid)[second_reply.message_id] is not None
    healed = {f"healed {n}": alice.send_text(cid, f"healed {n}") for n in range(3)}
    thief.intercept()
    bob_view = read_all(bob, cid)
    for text, sent in healed.items():
        assert bob_view[sent.message_id] == text.encode()
        assert thief.read(sent.message_id) is None, "the stolen keystore still reads after healing"
