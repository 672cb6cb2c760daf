"""The reference client trusts its users' keys, not the server's word (issue 14), end to end.

Each test is one of the attacks a review proved against the earlier client, replayed against the
real server, and must now fail: a device added by whoever has the password, a member or a device the
server lists but nobody approved, a claim answer with keys the owner never certified, a sender key
from someone outside the group, a message under an epoch retired since, a roster shown differently to
different members. Where the attacker is the server itself, the client under attack talks to the real
server through `LyingServer`, which rewrites what that one client sees or sends; everyone else sees
the truth. Each attack is followed, where it says something, by the same step without the lie, so a
refusal is known to come from the lie and not from a broken set-up. The positive side of the same
machinery is tested too: a second device approved by the first reads new messages, and safety
numbers agree on both sides and change when a master key is reset.

Time-dependent behaviour (epoch retirement) runs on a fake clock passed to the client.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.support.clients import Clients, FakeClock
from tests.support.lying_server import LyingServer
from tests.support.server import LiveServer
from tests.support.users import PASSWORD
from veil.client.protocol.codec import b64decode, b64encode
from veil.client.protocol.commit import commit_hash, make_commit, roster_hash
from veil.client.protocol.identity import MasterKey, safety_number_qr
from veil.client.protocol.keys import DeviceKeys
from veil.client.protocol.sender_keys import SenderKeyDistribution
from veil.client.protocol.session import ClientCrypto
from veil.client.protocol.transparency import TransparencyError
from veil.client.sdk.http import VeilClient
from veil.client.sdk.models import (
    DeviceNotApprovedError,
    IdentityChangedError,
    TrustError,
)

Body = Any

# Helpers -----------------------------------------------------------------------------------------


def lied_to(
    clients: Clients,
    name: str,
    *,
    epoch_grace_seconds: float = 3600.0,
    clock: Callable[[], float] = time.time,
) -> tuple[VeilClient, LyingServer]:
    """A new user whose client reaches the server only through a `LyingServer` the test controls."""
    server = LyingServer(clients.api.ca_file)
    client = clients.new(name, transport=server, epoch_grace_seconds=epoch_grace_seconds, clock=clock)
    return client, server


def another_device(clients: Clients, name: str, *, of: str) -> VeilClient:
    """A new login to the account of the client named `of`: a new device, not approved by anyone."""
    device = clients.open(name)
    device.login(clients.emails[of], PASSWORD, device_name=name)
    return device


def form_group(owner: VeilClient, *members: VeilClient) -> str:
    conversation_id = owner.create_group().conversation_id
    for member in members:
        owner.invite(conversation_id, member.user_id)
    for member in members:
        member.accept(conversation_id)
    return conversation_id


@contextmanager
def as_device(api: LiveServer, client: VeilClient) -> Iterator[httpx.Client]:
    """Plain HTTP as `client`'s device (its access token), for requests its SDK would never make."""
    with api.client(headers={"Authorization": f"Bearer {client.access_token()}"}) as http:
        yield http


def post_device_messages(
    api: LiveServer, sender: VeilClient, content_type: str, messages: Sequence[Mapping[str, Any]]
) -> None:
    with as_device(api, sender) as http:
        response = http.post(
            "/v1/devices/messages", json={"content_type": content_type, "messages": list(messages)}
        )
    assert response.status_code == 202, response.text


def conversation_path(cid: str) -> str:
    return f"/v1/conversations/{re.escape(cid)}"


def events_path(cid: str) -> str:
    return f"{conversation_path(cid)}/events"


def messages_path(cid: str) -> str:
    return f"{conversation_path(cid)}/messages"


def devices_path(user_id: str) -> str:
    return f"/v1/users/{re.escape(user_id)}/devices"


def as_stored(envelope: Mapping[str, Any], cid: str, sender: VeilClient, seq: int) -> dict[str, Any]:
    """An envelope as `GET …/messages` would return it had the server stored it from `sender`."""
    return {
        "parent_id": None,
        **envelope,
        "conversation_id": cid,
        "sender_id": sender.user_id,
        "sender_device_id": sender.device_id,
        "seq": seq,
        "created_at": datetime.now(UTC).isoformat(),
    }


def with_items(*extra: Mapping[str, Any]) -> Callable[[Body], Body]:
    """A lie that appends `extra` to a listing's items."""
    return lambda body: {**body, "items": [*body["items"], *extra]}


def without_items(drop: Callable[[Mapping[str, Any]], bool]) -> Callable[[Body], Body]:
    """A lie that leaves out the listing's items `drop` picks."""
    return lambda body: {**body, "items": [item for item in body["items"] if not drop(item)]}


def sender_keys_received(client: VeilClient) -> list[tuple[str, str]]:
    """(sender user, sender device) of every sender key waiting for `client` (taken in, so once)."""
    return [
        (m.sender_id, m.sender_device_id)
        for m in client.fetch_device_messages()
        if m.content_type == "sender_key"
    ]


def assert_reads_nothing(client: VeilClient, cid: str, secrets: Sequence[str]) -> None:
    """`client` opens no message of the conversation: its client refuses the conversation outright,
    or lists every message with an error and no plaintext."""
    try:
        history = client.history(cid)
    except TrustError:
        return
    assert history, "the messages are listed, only unreadable"
    assert [(m.plaintext, bool(m.error)) for m in history] == [(None, True)] * len(history)
    assert not {m.text for m in history} & set(secrets)


def warnings_naming(warnings: Sequence[str], device_id: str) -> list[str]:
    return [w for w in warnings if device_id[:8] in w]


def clone(client: VeilClient) -> ClientCrypto:
    """A copy of a device's crypto state, to show what it would have done without a check."""
    return ClientCrypto.from_state(client.crypto.to_state())


# 1. A ghost device, added by whoever holds the password ------------------------------------------

GHOST_FROM_BOB = "canary-t1 bob to the group after the thief logged in 4a1c"
GHOST_FROM_ADA = "canary-t2 ada to the group after the thief logged in 8e02"
GHOST_LATER = "canary-t3 bob again, after the thief tried to certify itself 17bd"


def test_a_password_holders_new_device_gets_no_group_key_and_is_named_in_a_warning(
    clients: Clients, api: LiveServer
) -> None:
    ada, bob = clients.new("ada"), clients.new("bob")
    cid = form_group(ada, bob)
    assert ada.identity_role == "primary"

    # The thief signs in as Ada: a new device of hers, which nobody approved.
    thief = another_device(clients, "thief", of="ada")
    assert thief.identity_role == "pending"
    assert thief.device_id in {d.device_id for d in bob.devices_of(ada.user_id) if not d.approved}

    bob.take_warnings()
    ada.take_warnings()
    bob.send_text(cid, GHOST_FROM_BOB)
    ada.send_text(cid, GHOST_FROM_ADA)
    for sender in (bob, ada):
        named = warnings_naming(sender.take_warnings(), thief.device_id)
        assert named and all("not approved" in w for w in named), named
    assert [m.text for m in bob.history(cid)] == [GHOST_FROM_BOB, GHOST_FROM_ADA]
    assert [m.text for m in ada.history(cid)] == [GHOST_FROM_BOB, GHOST_FROM_ADA]
    assert_reads_nothing(thief, cid, [GHOST_FROM_BOB, GHOST_FROM_ADA])
    assert sender_keys_received(thief) == []

    # It cannot approve itself: a certificate under a master key of its own making does not verify
    # under Ada's (422), and Ada's master key cannot be replaced by setting another one (409).
    own_making = MasterKey.generate()
    keys = thief.crypto.keys
    signature = own_making.certify(ada.user_id, thief.device_id, keys.identity_key, keys.signing_key)
    with as_device(api, thief) as http:
        certified = http.put(
            f"/v1/devices/{thief.device_id}/certificate", json={"signature": b64encode(signature)}
        )
        assert certified.status_code == 422, certified.text
        replaced = http.put("/v1/identity", json={"master_key": b64encode(own_making.public_key)})
        assert replaced.status_code == 409, replaced.text
    assert thief.device_id in {d.device_id for d in bob.devices_of(ada.user_id) if not d.approved}
    bob.send_text(cid, GHOST_LATER)
    assert warnings_naming(bob.take_warnings(), thief.device_id)
    assert_reads_nothing(thief, cid, [GHOST_FROM_BOB, GHOST_FROM_ADA, GHOST_LATER])
    assert sender_keys_received(thief) == []

    # Nor can it speak in the group as Ada.
    with pytest.raises(DeviceNotApprovedError):
        thief.send_text(cid, "canary-t4 the thief posing as ada 0c55")


# 2. A ghost member and a ghost device, listed by a lying server ----------------------------------

LISTED_MALLORY = "canary-t5 ada while the server lists mallory 5d3e"
FORGED_MEMBERSHIP = "canary-t6 ada while the server forges mallory's membership a2f9"
TRUTH_AGAIN = "canary-t6b ada once the server tells the truth again 0e7a"


def test_a_member_or_device_only_the_server_lists_gets_no_key(clients: Clients, api: LiveServer) -> None:
    ada, lying = lied_to(clients, "ada")
    bob, mallory = clients.new("bob"), clients.new("mallory")
    cid = form_group(ada, bob)
    with as_device(api, ada) as http:
        chain = http.get(f"/v1/conversations/{cid}/events", params={"limit": 200}).json()["items"]
    with as_device(api, mallory) as http:
        mallory_devices = http.get(f"/v1/users/{mallory.user_id}/devices").json()["items"]
    assert [d["device_id"] for d in mallory_devices] == [mallory.device_id]
    epoch = chain[-1]["epoch"]

    # The server lists Mallory as a joined member of the group, and her device as one of Bob's.
    def listing_mallory(body: Body) -> Body:
        joined = {"user_id": mallory.user_id, "role": "member", "state": "joined"}
        return {**body, "members": [*body["members"], joined]}

    lying.rewrite("GET", conversation_path(cid), listing_mallory)
    # Listed with her certificate, the device is not in Bob's entry of the key log: refused outright.
    certified = lying.rewrite("GET", devices_path(bob.user_id), with_items(*mallory_devices))
    with pytest.raises(
        TransparencyError, match="certified devices the server lists are not those in the log"
    ):
        ada.send_text(cid, LISTED_MALLORY)
    lying.stop(certified)
    # Listed as not yet certified (the log leaves those out), it is only a device Bob never approved.
    uncertified = [{**device, "certificate": None} for device in mallory_devices]
    lying.rewrite("GET", devices_path(bob.user_id), with_items(*uncertified))
    ada.take_warnings()
    ada.send_text(cid, LISTED_MALLORY)
    named = warnings_naming(ada.take_warnings(), mallory.device_id)
    assert named, "the device slipped into Bob's listing is named"
    assert [m.text for m in bob.history(cid)] == [LISTED_MALLORY]

    # The server adds events that make Mallory a member: an invitation "by Ada" signed by a device
    # the server made up, and Mallory's own genuinely signed acceptance of it.
    previous = b64decode(chain[-1]["commit"], field="commit")
    made_up = DeviceKeys.generate(one_time=0)
    invitation = make_commit(
        conversation_id=cid,
        epoch=epoch,
        action="invited",
        actor_id=ada.user_id,
        actor_device_id=ada.device_id,
        signing=made_up.signing,
        identity_key=made_up.identity_key,
        certificate=MasterKey.generate().certify(
            ada.user_id, ada.device_id, made_up.identity_key, made_up.signing_key
        ),
        subject_id=mallory.user_id,
        role="",
        roster_hash=roster_hash([ada.user_id, bob.user_id]),
        previous_hash=commit_hash(previous),
    )
    acceptance = make_commit(
        conversation_id=cid,
        epoch=epoch + 1,
        action="joined",
        actor_id=mallory.user_id,
        actor_device_id=mallory.device_id,
        signing=mallory.crypto.keys.signing,
        identity_key=mallory.crypto.keys.identity_key,
        certificate=b64decode(mallory_devices[0]["certificate"]["signature"], field="certificate"),
        subject_id=mallory.user_id,
        role="",
        roster_hash=roster_hash([ada.user_id, bob.user_id, mallory.user_id]),
        previous_hash=commit_hash(invitation),
    )
    now = datetime.now(UTC).isoformat()
    forged_events = [
        {
            "event_id": chain[-1]["event_id"] + 1,
            "epoch": epoch,
            "kind": "invited",
            "actor_id": ada.user_id,
            "actor_device_id": ada.device_id,
            "subject_id": mallory.user_id,
            "commit": b64encode(invitation),
            "created_at": now,
        },
        {
            "event_id": chain[-1]["event_id"] + 2,
            "epoch": epoch + 1,
            "kind": "joined",
            "actor_id": mallory.user_id,
            "actor_device_id": mallory.device_id,
            "subject_id": mallory.user_id,
            "commit": b64encode(acceptance),
            "created_at": now,
        },
    ]
    # The same events as a server with no commits to copy would make them.
    uncommitted = [{**event, "commit": None} for event in forged_events]
    lying.rewrite("GET", conversation_path(cid), lambda body: {**body, "epoch": epoch + 1})
    for events in (forged_events, uncommitted):
        lie = lying.rewrite("GET", events_path(cid), with_items(*events))
        with pytest.raises(TrustError):
            ada.send_text(cid, FORGED_MEMBERSHIP)
        lying.stop(lie)

    # Nothing of Ada's ever went to Mallory.
    assert mallory.device_id not in {device for _, device in lying.device_messages_sent()}
    assert [m for m in mallory.fetch_device_messages() if m.sender_id == ada.user_id] == []

    # Told the truth, Ada's client sends again: the refusals came from the lies alone.
    lying.tell_the_truth()
    ada.send_text(cid, TRUTH_AGAIN)
    assert [m.text for m in bob.history(cid)] == [LISTED_MALLORY, TRUTH_AGAIN]


# 3. A claim answer with the victim's identity key but the server's other keys --------------------

TO_BOB = "canary-t7 ada to bob, on keys the server made up 6b40"
TO_BOB_TRULY = "canary-t8 ada to bob once the server tells the truth e913"


def test_a_claimed_bundle_with_keys_bob_never_certified_is_refused(clients: Clients) -> None:
    ada, lying = lied_to(clients, "ada")
    bob = clients.new("bob")
    made_up = DeviceKeys.generate(one_time=1).public_bundle()

    def servers_prekeys(body: Body) -> Body:  # Bob's identity key, the server's signing key and prekeys
        return {
            **body,
            "signing_key": made_up["signing_key"],
            "signed_prekey": made_up["signed_prekey"],
            "one_time_prekey": made_up["one_time_prekeys"][0],
        }

    def servers_device(body: Body) -> Body:  # everything the server's own, under Bob's device id
        return {**servers_prekeys(body), "identity_key": made_up["identity_key"]}

    claim = f"{devices_path(bob.user_id)}/{re.escape(bob.device_id)}/claim"
    for forgery in (servers_prekeys, servers_device):
        lie = lying.rewrite("POST", claim, forgery)
        ada.take_warnings()
        assert ada.send_device_payload(bob.user_id, TO_BOB.encode()) == 0, forgery.__name__
        assert not ada.crypto.has_session(bob.user_id, bob.device_id)
        assert warnings_naming(ada.take_warnings(), bob.device_id), forgery.__name__
        lying.stop(lie)
    assert bob.device_id not in {device for _, device in lying.device_messages_sent()}
    assert bob.fetch_device_messages() == []

    # Told the truth, the same call reaches Bob: the refusals came from the made-up keys alone.
    assert ada.send_device_payload(bob.user_id, TO_BOB_TRULY.encode()) == 1
    received = [m.plaintext for m in bob.fetch_device_messages() if m.content_type == "session_message"]
    assert received == [TO_BOB_TRULY.encode()]


TO_BOB_NOT_THE_SERVER = "canary-t7b ada to bob after the server faked a session with him 3f90"


def test_a_session_the_server_set_up_under_bobs_device_carries_nothing(clients: Clients) -> None:
    """A `session_init` is not checked against certificates when it arrives, so the server can make
    Ada hold a session "with Bob's device" on keys of its own. Nothing may be encrypted on it: Ada
    sets up a fresh session with Bob's certified keys, and only Bob can read what she sends."""
    ada, lying = lied_to(clients, "ada")
    bob = clients.new("bob")
    impostor = ClientCrypto.create(bob.user_id, bob.device_id, one_time=0)
    adas_bundle = bob._call("POST", f"/v1/users/{ada.user_id}/devices/{ada.device_id}/claim").json()
    init = impostor.start_session(ada.user_id, ada.device_id, adas_bundle)
    forged = {
        "id": 2**62,
        "sender_id": bob.user_id,
        "sender_device_id": bob.device_id,
        "content_type": "session_init",
        "ciphertext": init["ciphertext"],
        "nonce": init["nonce"],
        "auth_tag": init["auth_tag"],
        "created_at": datetime.now(UTC).isoformat(),
    }
    lie = lying.rewrite("GET", "/v1/devices/messages", with_items(forged))
    ada.fetch_device_messages()
    lying.stop(lie)
    assert ada.crypto.peer_identity_key(bob.user_id, bob.device_id) == impostor.keys.identity_key

    assert ada.send_device_payload(bob.user_id, TO_BOB_NOT_THE_SERVER.encode()) == 1
    received = [m.plaintext for m in bob.fetch_device_messages() if m.content_type == "session_message"]
    assert received == [TO_BOB_NOT_THE_SERVER.encode()]
    assert ada.crypto.peer_identity_key(bob.user_id, bob.device_id) != impostor.keys.identity_key


# 4. A stranger's sender key ----------------------------------------------------------------------

BOB_IN_GROUP = "canary-t9 bob in the group before mallory's attempt 2c7a"
MALLORY_FORGED = "canary-t10 mallory posing as a member of ada's group d08e"


def test_a_strangers_sender_key_is_refused_and_her_forged_message_does_not_decrypt(
    clients: Clients, api: LiveServer
) -> None:
    ada, lying = lied_to(clients, "ada")
    bob, mallory = clients.new("bob"), clients.new("mallory")
    cid = form_group(ada, bob)
    bob.send_text(cid, BOB_IN_GROUP)
    epoch = ada.conversation(cid).epoch
    # The genuine roster's hash: only the membership check stands between Mallory and Ada.
    members = roster_hash([ada.user_id, bob.user_id])

    # Mallory, no member, opens a session to Ada's device through the real API and gives her a sender
    # key for Ada's group.
    assert mallory.open_session(ada.user_id) == [ada.device_id]
    distribution = SenderKeyDistribution.decode(
        mallory.crypto.group_sender_key_distribution(cid, epoch, members, now=time.time())
    )
    messages = mallory.crypto.sender_key_messages(
        cid, epoch, members, [(ada.user_id, ada.device_id)], now=time.time()
    )
    post_device_messages(api, mallory, "sender_key", messages)

    ada.take_warnings()
    history = ada.history(cid)
    assert [m.text for m in history] == [BOB_IN_GROUP]
    assert warnings_naming(ada.take_warnings(), mallory.device_id), "the refused key is reported"
    held = {slot["sender_device_id"] for slot in ada.crypto.to_state()["sender_keys"]["peers"]}
    assert mallory.device_id not in held and bob.device_id in held

    # She cannot post in the group; the server slips her forgery into Ada's listing instead.
    forged = as_stored(
        mallory.crypto.encrypt_group_message(
            cid,
            epoch,
            str(uuid.uuid4()),
            "text",
            MALLORY_FORGED.encode(),
            roster_hash=members,
            now=time.time(),
        ),
        cid,
        mallory,
        seq=history[-1].seq + 1,
    )
    lying.rewrite("GET", messages_path(cid), with_items(forged))
    history = ada.history(cid)
    assert [m.text for m in history] == [BOB_IN_GROUP, None]
    assert history[-1].sender_id == mallory.user_id and history[-1].error

    # What the refusal prevents: a copy of Ada's state that installs the key anyway reads the forgery.
    careless = clone(ada)
    careless.install_sender_key(mallory.user_id, mallory.device_id, distribution, members, now=time.time())
    assert careless.decrypt_group_message(forged, members, now=time.time()) == MALLORY_FORGED.encode()


# 5. An old epoch after rotation ------------------------------------------------------------------

GRACE = 600.0
OLD_EPOCH_FIRST = "canary-t11 bob before his removal, delivered at once 91fa"
OLD_EPOCH_DELAYED = "canary-t12 bob before his removal, delivered late but in grace 3e6d"
OLD_EPOCH_AFTER_GRACE = "canary-t13 bob's epoch-old message, made but never sent 7c20"
NEW_EPOCH = "canary-t14 carol in the new epoch b58e"


def test_an_old_epoch_message_is_accepted_within_the_grace_period_and_refused_after(
    clients: Clients,
) -> None:
    clock = FakeClock()
    ada, lying = lied_to(clients, "ada", epoch_grace_seconds=GRACE, clock=clock)
    bob, carol = clients.new("bob"), clients.new("carol")
    cid = form_group(ada, bob, carol)
    old_epoch = ada.conversation(cid).epoch
    old_roster = roster_hash([ada.user_id, bob.user_id, carol.user_id])

    bob.send_text(cid, OLD_EPOCH_FIRST)
    delayed = bob.send_text(cid, OLD_EPOCH_DELAYED)
    # The server holds the second one back from Ada; a third Bob makes but never sends.
    held_back = lying.rewrite(
        "GET", messages_path(cid), without_items(lambda m: m["message_id"] == delayed.message_id)
    )
    never_sent = bob.crypto.encrypt_group_message(
        cid,
        old_epoch,
        str(uuid.uuid4()),
        "text",
        OLD_EPOCH_AFTER_GRACE.encode(),
        roster_hash=old_roster,
        now=time.time(),
    )

    ada.remove(cid, bob.user_id)
    new = carol.send_text(cid, NEW_EPOCH)
    assert new.key_epoch == old_epoch + 1
    # Ada reads the first message of the new epoch: the old epoch's grace period starts.
    assert [m.text for m in ada.history(cid)] == [OLD_EPOCH_FIRST, NEW_EPOCH]

    clock.advance(GRACE / 2)
    lying.stop(held_back)
    history = ada.history(cid)
    assert [m.text for m in history] == [OLD_EPOCH_FIRST, OLD_EPOCH_DELAYED, NEW_EPOCH]
    before_retirement = clone(ada)

    clock.advance(GRACE)
    injected = as_stored(never_sent, cid, bob, seq=new.seq + 1)
    lying.rewrite("GET", messages_path(cid), with_items(injected))
    late = ada.history(cid)[-1]
    assert (late.sender_id, late.key_epoch, late.plaintext) == (bob.user_id, old_epoch, None)
    assert late.error and "retired" in late.error, late.error

    # The envelope is genuine: within the grace period Ada would have read it.
    opened = before_retirement.decrypt_group_message(injected, old_roster, now=clock.now - GRACE)
    assert opened == OLD_EPOCH_AFTER_GRACE.encode()


# 6. A second, approved device reads new messages -------------------------------------------------

BEFORE_PHONE_GROUP = "canary-t15 bob to the group before ada's phone 0a6e"
BEFORE_PHONE_DIRECT = "canary-t16 bob to ada before her phone d7b3"
AFTER_PHONE_GROUP = "canary-t17 bob to the group after ada approved her phone 5f18"
FROM_ADAS_LAPTOP = "canary-t18 ada's first device to the group after the approval 4c92"
AFTER_PHONE_DIRECT = "canary-t19 bob to ada after her phone was approved e06b"
PAIRWISE_TO_ADA = "canary-t20 bob to each of ada's devices 83dd"
FROM_ADAS_PHONE = "canary-t21 ada's phone to the group 2b75"


def test_a_second_device_approved_by_the_first_reads_new_group_and_direct_messages(clients: Clients) -> None:
    ada, bob = clients.new("ada"), clients.new("bob")
    cid = form_group(ada, bob)
    direct = ada.create_direct(bob.user_id).conversation_id
    bob.send_text(cid, BEFORE_PHONE_GROUP)
    bob.send_text(direct, BEFORE_PHONE_DIRECT)

    phone = another_device(clients, "ada-phone", of="ada")
    assert phone.identity_role == "pending" and not phone.poll_link()
    assert ada.approve_device(phone.link_code()) == phone.device_id
    assert phone.poll_link(), (phone.take_warnings(), ada.take_warnings())
    assert phone.identity_role == "linked"
    assert {d.device_id: d.approved for d in bob.devices_of(ada.user_id)} == {
        ada.device_id: True,
        phone.device_id: True,
    }

    bob.send_text(cid, AFTER_PHONE_GROUP)
    ada.send_text(cid, FROM_ADAS_LAPTOP)
    bob.send_text(direct, AFTER_PHONE_DIRECT)
    group = phone.history(cid)
    assert [m.text for m in group][-2:] == [AFTER_PHONE_GROUP, FROM_ADAS_LAPTOP], [m.error for m in group]
    one_to_one = phone.history(direct)
    assert one_to_one[-1].text == AFTER_PHONE_DIRECT, one_to_one[-1].error

    assert bob.send_device_payload(ada.user_id, PAIRWISE_TO_ADA.encode()) == 2
    pairwise = [m.plaintext for m in phone.fetch_device_messages() if m.content_type == "session_message"]
    assert pairwise == [PAIRWISE_TO_ADA.encode()]

    # The phone speaks in the group, and both Bob and Ada's first device read it.
    phone.send_text(cid, FROM_ADAS_PHONE)
    assert bob.history(cid)[-1].text == FROM_ADAS_PHONE
    assert ada.history(cid)[-1].text == FROM_ADAS_PHONE


def test_after_a_reset_the_other_devices_are_approved_again_under_the_new_key(clients: Clients) -> None:
    ada = clients.new("ada")
    phone = another_device(clients, "ada-phone", of="ada")
    ada.approve_device(phone.link_code())
    assert phone.poll_link() and phone.identity_role == "linked"

    laptop = another_device(clients, "ada-laptop", of="ada")
    laptop.reset_identity(PASSWORD)  # Ada lost the first device: the laptop is primary now
    assert laptop.identity_role == "primary"
    assert {d.device_id: d.approved for d in laptop.devices_of(ada.user_id)}[phone.device_id] is False

    laptop.approve_device(phone.link_code())
    assert phone.poll_link(), phone.take_warnings()
    assert phone.identity_role == "linked"
    assert phone.safety_number(ada.user_id) == laptop.safety_number(ada.user_id)


# 7. A forked roster ------------------------------------------------------------------------------

CAROL_AFTER_DAVE = "canary-t22 carol to the group with dave in it 6a0d"
BOB_IN_HIS_FORK = "canary-t23 bob to the group he believes dave is not in c1e7"


def test_members_shown_forked_rosters_read_nothing_of_each_other(clients: Clients) -> None:
    carol = clients.new("carol")
    bob, lying = lied_to(clients, "bob")
    dave = clients.new("dave")
    cid = carol.create_group().conversation_id
    carol.invite(cid, bob.user_id)
    carol.invite(cid, dave.user_id)
    bob.accept(cid)

    # From now on the server hides Dave's joining from Bob, and from Bob alone.
    lying.rewrite(
        "GET",
        events_path(cid),
        without_items(lambda e: e["kind"] == "joined" and e["subject_id"] == dave.user_id),
    )
    dave.accept(cid)
    epoch = carol.conversation(cid).epoch

    # Told the true epoch, Bob's client sees that the record it was shown does not reach it.
    with pytest.raises(TrustError):
        bob.history(cid)
    with pytest.raises(TrustError):
        bob.send_text(cid, "canary-t24 bob while the record and the epoch disagree 8d14")

    # The server makes the fork consistent: for Bob, Dave is still only invited, one epoch back, and
    # Bob's messages are stored under the epoch the others are at (else the server would refuse them).
    def dave_only_invited(body: Body) -> Body:
        members = [{**m, "state": "invited"} if m["user_id"] == dave.user_id else m for m in body["members"]]
        return {**body, "members": members, "epoch": epoch - 1}

    lying.rewrite("GET", conversation_path(cid), dave_only_invited)
    lying.rewrite_request("POST", messages_path(cid), lambda body: {**body, "key_epoch": epoch})

    carol.send_text(cid, CAROL_AFTER_DAVE)
    assert [m.text for m in dave.history(cid)] == [CAROL_AFTER_DAVE]
    bob_sees = bob.history(cid)
    assert [(m.sender_id, m.plaintext) for m in bob_sees] == [(carol.user_id, None)]
    assert bob_sees[0].error

    bob.send_text(cid, BOB_IN_HIS_FORK)
    for member in (carol, dave):
        history = member.history(cid)
        assert [m.text for m in history] == [CAROL_AFTER_DAVE, None]
        assert history[-1].sender_id == bob.user_id and history[-1].error

    # Once the server stops lying, Bob's view catches up and he reads what was meant for him.
    lying.tell_the_truth()
    assert bob.history(cid)[0].text == CAROL_AFTER_DAVE


# 8. Safety numbers -------------------------------------------------------------------------------

BEFORE_RESET = "canary-t25 ada to bob before he reset his key 3f0b"
WHILE_CHANGED = "canary-t26 ada to bob while his new key is not accepted 9a47"
AFTER_ACCEPT = "canary-t27 ada to bob after accepting his new key 5e2c"


def test_safety_numbers_agree_on_both_sides_and_change_after_a_master_key_reset(clients: Clients) -> None:
    ada, bob, carol = clients.new("ada"), clients.new("bob"), clients.new("carol")
    number = ada.safety_number(bob.user_id)
    assert number == bob.safety_number(ada.user_id)
    assert len(number) == 60 and number.isdigit()
    assert carol.safety_number(bob.user_id) not in (number, ada.safety_number(carol.user_id))

    # Bob lost his device: he signs in on a new one and resets his master key with his password.
    bob_again = another_device(clients, "bob-again", of="bob")
    bob_again.reset_identity(PASSWORD)
    assert bob_again.identity_role == "primary"

    # Ada looks at Bob again: she is told his key changed, and the number is a new one, equal to his.
    ada.take_warnings()
    statuses = ada.devices_of(bob.user_id)
    assert warnings_naming(ada.take_warnings(), bob.user_id), "the change is reported"
    assert {d.device_id for d in statuses if d.approved} == {bob_again.device_id}
    changed = ada.safety_number(bob.user_id)
    assert changed != number and len(changed) == 60
    assert changed == bob_again.safety_number(ada.user_id)


def test_a_verified_contacts_new_master_key_blocks_sending_until_accepted(clients: Clients) -> None:
    ada, bob = clients.new("ada"), clients.new("bob")
    direct = ada.create_direct(bob.user_id).conversation_id
    number = bob.safety_number(ada.user_id)
    with pytest.raises(TrustError):
        ada.mark_verified(bob.user_id, scanned=safety_number_qr("1" * 60))
    assert not ada.is_verified(bob.user_id)
    ada.mark_verified(bob.user_id, scanned=safety_number_qr(number))
    assert ada.is_verified(bob.user_id)
    ada.send_text(direct, BEFORE_RESET)
    assert [m.text for m in bob.history(direct)] == [BEFORE_RESET]

    bob_again = another_device(clients, "bob-again", of="bob")
    bob_again.reset_identity(PASSWORD)

    # Ada's next sends to Bob are blocked, whatever the way, until she accepts the new key.
    with pytest.raises(IdentityChangedError):
        ada.send_text(direct, WHILE_CHANGED)
    assert ada.changed_identities() == [bob.user_id]
    with pytest.raises(IdentityChangedError):
        ada.send_device_payload(bob.user_id, WHILE_CHANGED.encode())
    with pytest.raises(IdentityChangedError):
        ada.send_text(direct, WHILE_CHANGED)

    ada.accept_identity(bob.user_id)
    assert ada.changed_identities() == [] and not ada.is_verified(bob.user_id)
    changed = ada.safety_number(bob.user_id)
    assert changed != number and changed == bob_again.safety_number(ada.user_id)
    ada.send_text(direct, AFTER_ACCEPT)
    texts = [m.text for m in bob_again.history(direct)]
    assert texts[-1] == AFTER_ACCEPT and WHILE_CHANGED not in texts
