"""The reference client end to end: real clients, a live server, and the database as an attacker sees it.

Every plaintext carries a planted canary string; none may reach the server's rows or a `pg_dump` of
the whole database in any encoding (raw, hex as `pg_dump` prints `bytea`, or base64). Ciphertext
copied out of the database must be useless to anyone but its recipients, and moving it to other
metadata (sender, device, content type, conversation, epoch, message id, parent) must make
decryption fail. Tampering is tried on a copy of the victim's state taken before it decrypted the
genuine message, which then still decrypts the genuine one: the failures come from the binding, not
from a used-up key.
"""

from __future__ import annotations

import base64
import threading
import time
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from tests.support.clients import Clients
from tests.support.databases import query
from tests.support.pgdump import dump
from tests.support.server import LiveServer
from tests.support.users import PASSWORD, bearer, login
from veil.client.protocol.errors import (
    CryptoError,
    DecryptionError,
    OwnMessageError,
    UnknownSenderKeyError,
    UnknownSessionError,
)
from veil.client.protocol.session import ClientCrypto
from veil.client.sdk.http import VeilClient
from veil.client.sdk.models import VeilError

# Helpers -----------------------------------------------------------------------------------------


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def binary(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "ciphertext": b64(row["ciphertext"]),
        "nonce": b64(row["nonce"]),
        "auth_tag": b64(row["auth_tag"]),
    }


def stored_envelope(row: asyncpg.Record) -> dict[str, Any]:
    """A `messages` row in the shape `GET …/messages` returns it."""
    return {
        **binary(row),
        "message_id": str(row["message_id"]),
        "conversation_id": str(row["conversation_id"]),
        "sender_id": str(row["sender_id"]),
        "sender_device_id": str(row["sender_device_id"]),
        "content_type": row["content_type"],
        "key_epoch": row["key_epoch"],
        "parent_id": None if row["parent_id"] is None else str(row["parent_id"]),
        "seq": row["seq"],
        "created_at": row["created_at"].isoformat(),
    }


def device_rows(database_url: str, device_id: str) -> list[asyncpg.Record]:
    return query(
        database_url,
        "SELECT * FROM device_messages WHERE recipient_device_id = $1 ORDER BY id",
        uuid.UUID(device_id),
    )


def message_row(database_url: str, message_id: str) -> asyncpg.Record:
    rows = query(database_url, "SELECT * FROM messages WHERE message_id = $1", uuid.UUID(message_id))
    assert len(rows) == 1
    return rows[0]


def clone(client: VeilClient) -> ClientCrypto:
    """A copy of a device's crypto state to try forgeries on without touching the real one."""
    return ClientCrypto.from_state(client.crypto.to_state())


def encodings(canary: str) -> list[str]:
    """How a canary could appear in a dump: as text or inside base64 at any alignment, each also as
    the hex that `pg_dump` prints for `bytea`."""
    raw = canary.encode()
    texts = [canary]
    for shift in range(3):
        chunk = raw[shift:]
        texts.append(b64(chunk[: len(chunk) - len(chunk) % 3]))
    return texts + [text.encode().hex() for text in texts]


def assert_no_canary(canaries: list[str], text: str) -> None:
    lowered = text.lower()
    for canary in canaries:
        for form in encodings(canary):
            assert form not in text and form.lower() not in lowered, f"{canary!r} found as {form!r}"


def assert_no_canary_bytes(canaries: list[str], blob: bytes) -> None:
    for canary in canaries:
        assert canary.encode() not in blob, f"{canary!r} found"


def row_bytes(rows: list[asyncpg.Record]) -> bytes:
    """Every column of every row, binary as stored and the rest as text."""
    return b"\0".join(v if isinstance(v, bytes) else str(v).encode() for row in rows for v in row.values())


# (a) Pairwise sessions ---------------------------------------------------------------------------

TO_BOB = "canary-a1 alice to bob: the eagle lands at dawn 51c2"
TO_ALICE = "canary-a2 bob to alice: dawn is too early 9e07"
TO_BOB_AGAIN = "canary-a3 alice again: then at noon 3b8d"
AFTER_RESTART = "canary-a4 after bob restarts from his keystore 77fa"
PAIRWISE_CANARIES = [TO_BOB, TO_ALICE, TO_BOB_AGAIN, AFTER_RESTART]


def test_pairwise_session_set_up_and_exchange_through_the_server(
    clients: Clients, api: LiveServer, database_url: str
) -> None:
    alice, bob, eve = clients.new("alice"), clients.new("bob"), clients.new("eve")

    # Alice sets up a session using nothing but the server: claim Bob's bundle, send session_init.
    assert alice.open_session(bob.user_id) == [bob.device_id]
    assert alice.open_session(bob.user_id) == []  # one session is enough
    assert alice.send_device_payload(bob.user_id, TO_BOB.encode()) == 1

    rows = device_rows(database_url, bob.device_id)
    assert [r["content_type"] for r in rows] == ["session_init", "session_message"]
    assert {(str(r["sender_user_id"]), str(r["sender_device_id"])) for r in rows} == {
        (alice.user_id, alice.device_id)
    }
    assert_no_canary_bytes(PAIRWISE_CANARIES, row_bytes(rows))
    assert_no_canary(PAIRWISE_CANARIES, dump(database_url))  # while the envelopes are queued
    init, message = binary(rows[0]), binary(rows[1])

    # Metadata is bound: on a copy of Bob's state, moved or altered envelopes do not open.
    forger = clone(bob)
    with pytest.raises(DecryptionError):  # the session_init re-labelled as coming from Eve
        forger.decrypt_device_message(eve.user_id, eve.device_id, "session_init", init)
    assert forger.decrypt_device_message(alice.user_id, alice.device_id, "session_init", init) == b""
    with pytest.raises(DecryptionError):  # another content type
        forger.decrypt_device_message(alice.user_id, alice.device_id, "sender_key", message)
    with pytest.raises(CryptoError):  # another sender user and device
        forger.decrypt_device_message(eve.user_id, eve.device_id, "session_message", message)
    with pytest.raises(CryptoError):  # Alice's user id with another device
        forger.decrypt_device_message(alice.user_id, eve.device_id, "session_message", message)
    flipped = bytearray(base64.b64decode(message["ciphertext"]))
    flipped[-1] ^= 1
    with pytest.raises(DecryptionError):
        forger.decrypt_device_message(
            alice.user_id, alice.device_id, "session_message", {**message, "ciphertext": b64(bytes(flipped))}
        )
    genuine = forger.decrypt_device_message(alice.user_id, alice.device_id, "session_message", message)
    assert genuine == TO_BOB.encode()

    # Eve has her own device: nothing is queued for her, and the stolen copies are useless to her.
    assert eve.fetch_device_messages() == []
    with pytest.raises(CryptoError):
        eve.crypto.decrypt_device_message(alice.user_id, alice.device_id, "session_init", init)
    with pytest.raises(UnknownSessionError):
        eve.crypto.decrypt_device_message(alice.user_id, alice.device_id, "session_message", message)

    # Eve re-sends the stored ciphertext to Bob as her own (from a raw HTTP session): Bob reads
    # Alice's genuine messages and refuses the copies.
    with api.client() as http:
        mallory = login(http, clients.emails["eve"])
        for content_type, body in (("session_init", init), ("session_message", message)):
            resent = http.post(
                "/v1/devices/messages",
                json={"content_type": content_type, "messages": [{"device_id": bob.device_id, **body}]},
                headers=bearer(mallory),
            )
            assert resent.status_code == 202, resent.text
    received = bob.fetch_device_messages()
    assert [(m.sender_id, m.content_type) for m in received] == [
        (alice.user_id, "session_init"),
        (alice.user_id, "session_message"),
        (eve.user_id, "session_init"),
        (eve.user_id, "session_message"),
    ]
    assert received[0].plaintext == b"" and received[0].error is None
    assert received[1].plaintext == TO_BOB.encode() and received[1].sender_device_id == alice.device_id
    assert [m.plaintext for m in received[2:]] == [None, None]
    assert all(m.error for m in received[2:])
    assert device_rows(database_url, bob.device_id) == []  # acknowledged, so deleted
    assert bob.fetch_device_messages() == []

    # Bob answers on the session Alice started (no bundle claim of his own), and the chains go on.
    assert bob.crypto.has_session(alice.user_id, alice.device_id)
    assert bob.send_device_payload(alice.user_id, TO_ALICE.encode()) == 1
    assert [r["content_type"] for r in device_rows(database_url, alice.device_id)] == ["session_message"]
    got = alice.fetch_device_messages()
    assert [(m.sender_id, m.sender_device_id, m.content_type, m.plaintext) for m in got] == [
        (bob.user_id, bob.device_id, "session_message", TO_ALICE.encode())
    ]
    alice.send_device_payload(bob.user_id, TO_BOB_AGAIN.encode())
    assert [m.plaintext for m in bob.fetch_device_messages()] == [TO_BOB_AGAIN.encode()]

    # Bob's state survives a restart through the encrypted keystore (session resumed by refresh).
    bob_device = bob.device_id
    bob.close()
    keystore = clients.keystore("bob").read_bytes()
    assert_no_canary_bytes(PAIRWISE_CANARIES, keystore)
    restarted = clients.open("bob")
    assert restarted.device_id == bob_device
    alice.send_device_payload(restarted.user_id, AFTER_RESTART.encode())
    assert [m.plaintext for m in restarted.fetch_device_messages()] == [AFTER_RESTART.encode()]

    assert_no_canary(PAIRWISE_CANARIES, dump(database_url))


# (b) Groups --------------------------------------------------------------------------------------

FROM_ALICE = "canary-b1 alice to the group: budget approved 0f3e"
FROM_BOB = "canary-b2 bob to the group: great news 6a91"
FROM_CAROL = "canary-b3 carol to the group: which budget? c47d"
OTHER_GROUP = "canary-b4 alice in the other group 2d18"
AFTER_REMOVAL_BOB = "canary-b5 bob after carol left: just us now e5b0"
AFTER_REMOVAL_ALICE = "canary-b6 alice after carol left: agreed 8c3a"
GROUP_CANARIES = [FROM_ALICE, FROM_BOB, FROM_CAROL, OTHER_GROUP, AFTER_REMOVAL_BOB, AFTER_REMOVAL_ALICE]


def form_group(owner: VeilClient, *members: VeilClient) -> str:
    conversation_id = owner.create_group().conversation_id
    for member in members:
        owner.invite(conversation_id, member.user_id)
    for member in members:
        member.accept(conversation_id)
    return conversation_id


def test_group_messages_epoch_rotation_and_removal(clients: Clients, database_url: str) -> None:
    alice, bob, carol = clients.new("alice"), clients.new("bob"), clients.new("carol")
    cid = form_group(alice, bob, carol)
    other = form_group(alice, bob, carol)
    conversation = alice.conversation(cid)
    assert conversation.epoch == 2 == alice.conversation(other).epoch
    assert sorted(conversation.joined_user_ids) == sorted([alice.user_id, bob.user_id, carol.user_id])

    # Every member gives its sender key for epoch 2 to the two other members' devices.
    for member in (alice, bob, carol):
        assert member.distribute_sender_key(cid) == 2
    assert alice.distribute_sender_key(cid) == 0  # everyone holds it already
    sent = [
        alice.send_text(cid, FROM_ALICE),
        bob.send_text(cid, FROM_BOB),
        carol.send_text(cid, FROM_CAROL),
    ]
    # Each member's first message here is followed by its key-log head (a `system` message).
    assert [s.seq for s in sent] == [1, 3, 5] and {s.key_epoch for s in sent} == {2}
    alice.send_text(other, OTHER_GROUP)  # distributes Alice's key for the other group on the way

    stored = stored_envelope(message_row(database_url, sent[0].message_id))
    assert stored["key_epoch"] == 2 and stored["sender_device_id"] == alice.device_id
    assert_no_canary_bytes(GROUP_CANARIES, row_bytes(query(database_url, "SELECT * FROM messages")))

    # Bob takes in the sender keys; a copy of his state then refuses every re-labelled envelope.
    roster = bob.membership(cid).roster_hash_at(2)
    assert bob.membership(other).roster_hash_at(2) == roster  # the same three people
    forger = clone(bob)
    carol_device = carol.device_id
    tampered = {
        "content_type": {**stored, "content_type": "file"},
        "conversation_id": {**stored, "conversation_id": other},  # Bob holds Alice's key there too
        "message_id": {**stored, "message_id": str(uuid.uuid4())},
        "parent_id": {**stored, "parent_id": sent[1].message_id},
        "sender": {**stored, "sender_id": carol.user_id, "sender_device_id": carol_device},
        "nonce": {**stored, "nonce": b64(bytes(12))},
    }
    for field, envelope in tampered.items():
        try:
            forger.decrypt_group_message(envelope, roster, now=time.time())
        except (DecryptionError, UnknownSenderKeyError):  # moved elsewhere, the key id names no key
            continue
        pytest.fail(f"a changed {field} still decrypted")
    assert forger.decrypt_group_message(stored, roster, now=time.time()) == FROM_ALICE.encode()

    # Each member reads the whole conversation from history (its own message from its own cache).
    for member in (alice, bob, carol):
        history = member.history(cid)
        assert [m.error for m in history] == [None, None, None], [m.error for m in history]
        assert [m.text for m in history] == [FROM_ALICE, FROM_BOB, FROM_CAROL]
        assert [m.sender_id for m in history] == [alice.user_id, bob.user_id, carol.user_id]
        assert member.history(cid) == history  # a second read comes from the cache
    with pytest.raises(OwnMessageError):  # the reason for that cache
        alice.crypto.decrypt_group_message(stored, roster, now=time.time())

    # Carol is removed: the epoch rises, and she loses the conversation.
    carol.fetch_device_messages()  # hand over what she has taken in so far
    alice.remove(cid, carol.user_id)
    with pytest.raises(VeilError) as removed:
        carol.history(cid)
    assert removed.value.status == 404
    assert "404" in str(removed.value)

    # Bob last saw epoch 2, but every send first checks the membership record (the removal's signed
    # commit moved it to epoch 3): he gives a new sender key to the remaining members only and
    # sends under epoch 3 at the first attempt.
    statuses: list[tuple[str, int]] = []

    def record(response: httpx.Response) -> None:
        statuses.append((f"{response.request.method} {response.request.url.path}", response.status_code))

    bob._http.event_hooks["response"].append(record)
    after_bob = bob.send_text(cid, AFTER_REMOVAL_BOB)
    posts = [s for path, s in statuses if path == f"POST /v1/conversations/{cid}/messages"]
    assert posts == [201]
    assert after_bob.key_epoch == 3
    after_alice = alice.send_text(cid, AFTER_REMOVAL_ALICE)
    assert after_alice.key_epoch == 3

    for member in (alice, bob):
        history = member.history(cid)
        assert [m.error for m in history] == [None] * 5
        assert [m.text for m in history] == [
            FROM_ALICE,
            FROM_BOB,
            FROM_CAROL,
            AFTER_REMOVAL_BOB,
            AFTER_REMOVAL_ALICE,
        ]
        assert [m.key_epoch for m in history] == [2, 2, 2, 3, 3]

    # Carol was sent no key for epoch 3, and ciphertext of epoch 3 copied from the database is
    # useless to her, under its own epoch or re-labelled as one she holds keys for.
    assert carol.fetch_device_messages() == []
    new_epoch = [
        stored_envelope(row)
        for row in query(
            database_url,
            "SELECT * FROM messages WHERE conversation_id = $1 AND key_epoch = 3 ORDER BY seq",
            uuid.UUID(cid),
        )
    ]
    assert [e["message_id"] for e in new_epoch] == [after_bob.message_id, after_alice.message_id]
    roster_3 = bob.membership(cid).roster_hash_at(3)
    for envelope in new_epoch:
        with pytest.raises(UnknownSenderKeyError):
            carol.crypto.decrypt_group_message(envelope, roster_3, now=time.time())
        # (Epoch 2's keys have other key ids: the lookup fails before the AD binding would.)
        with pytest.raises((DecryptionError, UnknownSenderKeyError)):
            carol.crypto.decrypt_group_message({**envelope, "key_epoch": 2}, roster, now=time.time())
    # The same epoch relabelling fails for a member who holds both epochs' keys.
    with pytest.raises((DecryptionError, UnknownSenderKeyError)):
        clone(bob).decrypt_group_message({**new_epoch[1], "key_epoch": 2}, roster, now=time.time())

    assert_no_canary_bytes(GROUP_CANARIES, row_bytes(query(database_url, "SELECT * FROM messages")))
    assert_no_canary(GROUP_CANARIES, dump(database_url))
    for name in ("alice", "bob", "carol"):
        assert_no_canary_bytes(GROUP_CANARIES, clients.keystore(name).read_bytes())


def test_errors_are_problem_documents_with_readable_text(clients: Clients) -> None:
    alice = clients.new("alice")
    # Signing up with a taken address is answered like any sign-up (no account oracle); the
    # verification then fails like a wrong code.
    alice.register(clients.emails["alice"], PASSWORD)
    with pytest.raises(VeilError) as taken:
        alice.verify_registration(clients.emails["alice"], "000000")
    assert taken.value.status == 400
    assert str(taken.value) == f"HTTP 400 {taken.value.title}: {taken.value.detail}"
    assert taken.value.title and taken.value.detail
    with pytest.raises(VeilError) as missing:
        alice.conversation(str(uuid.uuid4()))
    assert (missing.value.status, missing.value.title) == (404, "Not Found")
    with pytest.raises(VeilError) as invalid:
        alice.register("not an email", PASSWORD)
    assert invalid.value.status == 422 and "email" in str(invalid.value)


def test_prekeys_are_topped_up_and_refresh_and_logout_work(clients: Clients) -> None:
    alice, bob = clients.new("alice"), clients.new("bob")
    assert alice.publish_more_prekeys_if_low(10) == 100  # plenty left: nothing uploaded
    assert bob.open_session(alice.user_id) == [alice.device_id]
    assert alice.publish_more_prekeys_if_low(100, target=120) == 120
    # Concurrent refreshes are serialised: presenting one refresh token twice would be reuse and
    # end the session (and with it the device).
    threads = [threading.Thread(target=alice.refresh) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    alice.refresh()
    assert [d.device_id for d in alice.devices(alice.user_id)] == [alice.device_id]
    alice.logout()
    assert bob.devices(alice.user_id) == []
    assert not alice.signed_in

    # Each login is a new device; logging in again ends the previous one rather than orphan it.
    alice.login(clients.emails["alice"], PASSWORD)
    first = alice.device_id
    alice.login(clients.emails["alice"], PASSWORD)
    assert alice.device_id != first
    assert [d.device_id for d in bob.devices(alice.user_id)] == [alice.device_id]
