"""Sender keys v2: key ids, several keys per sender device, and rotation by count, age and turn."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import types
import uuid
from typing import Any

import pytest

from tests.unit.client.support import NOW, Directory, connect, new_device, roster_hash, stored
from tests.unit.client.test_pairwise import VERSION_2_STATES
from veil.client.protocol import sender_key_chains
from veil.client.protocol.errors import (
    DecryptionError,
    ReplayError,
    SenderKeyRefusedError,
    UnknownSenderKeyError,
)
from veil.client.protocol.framing import GroupMessageHeader
from veil.client.protocol.ratchet import SKIPPED_MAX_AGE
from veil.client.protocol.sender_keys import (
    MAX_SENDER_KEYS_PER_SLOT,
    SENDER_KEY_MAX_AGE,
    SENDER_KEY_MAX_MESSAGES,
    OwnSenderKey,
    SenderKeyDistribution,
    SenderKeyStore,
)
from veil.client.protocol.session import ClientCrypto

DAY = 24 * 3600.0


@pytest.fixture
def conversation() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def pair(directory: Directory, alice: ClientCrypto, bob: ClientCrypto) -> tuple[ClientCrypto, ClientCrypto]:
    connect(directory, alice, bob)
    return alice, bob


@pytest.fixture
def roster(pair: tuple[ClientCrypto, ClientCrypto]) -> bytes:
    return roster_hash(*pair)


def hand_over(
    sender: ClientCrypto,
    receiver: ClientCrypto,
    conversation: str,
    roster: bytes,
    *,
    now: float = NOW,
    rotate_on_peer_key: bool = False,
) -> SenderKeyDistribution:
    """Send the sender's current key (rotated if due) to the receiver, who installs it."""
    (message,) = sender.sender_key_messages(
        conversation,
        0,
        roster,
        [(receiver.user_id, receiver.device_id)],
        now=now,
        rotate_on_peer_key=rotate_on_peer_key,
    )
    payload = receiver.decrypt_device_message(sender.user_id, sender.device_id, "sender_key", message)
    distribution = SenderKeyDistribution.decode(payload)
    receiver.install_sender_key(sender.user_id, sender.device_id, distribution, roster, now=now)
    return distribution


def send(sender: ClientCrypto, conversation: str, roster: bytes, text: bytes) -> dict[str, Any]:
    envelope = sender.encrypt_group_message(
        conversation, 0, str(uuid.uuid4()), "text", text, roster_hash=roster, now=NOW
    )
    return stored(envelope, conversation, sender)


def key_id_of(envelope: dict[str, Any]) -> int:
    return GroupMessageHeader.decode(base64.b64decode(envelope["ciphertext"])).key_id


def key_id(device: ClientCrypto, conversation: str, roster: bytes, **kwargs: Any) -> int:
    return device.current_sender_key_id(conversation, 0, roster, **{"now": NOW, **kwargs})


# Key ids ------------------------------------------------------------------------------------------


def test_the_key_id_travels_in_the_distribution_and_every_message_header(
    pair: tuple[ClientCrypto, ClientCrypto], conversation: str, roster: bytes
) -> None:
    alice, bob = pair
    distribution = hand_over(alice, bob, conversation, roster)
    assert distribution.key_id == key_id(alice, conversation, roster)
    envelope = send(alice, conversation, roster, b"hello")
    assert key_id_of(envelope) == distribution.key_id
    assert len(base64.b64decode(envelope["ciphertext"])) == 10 + len(b"hello") + 64
    assert bob.decrypt_group_message(envelope, roster, now=NOW) == b"hello"


def test_a_message_on_the_previous_key_opens_after_the_next_key_arrived(
    pair: tuple[ClientCrypto, ClientCrypto], conversation: str, roster: bytes
) -> None:
    alice, bob = pair
    first = hand_over(alice, bob, conversation, roster)
    late = send(alice, conversation, roster, b"sent on the first key, delivered late")
    second = hand_over(alice, bob, conversation, roster, now=NOW + SENDER_KEY_MAX_AGE)
    assert second.key_id != first.key_id
    on_second = send(alice, conversation, roster, b"on the second key")
    assert bob.decrypt_group_message(on_second, roster, now=NOW) == b"on the second key"
    assert bob.decrypt_group_message(late, roster, now=NOW) == b"sent on the first key, delivered late"


def test_a_member_offline_through_many_rotations_reads_every_message(
    pair: tuple[ClientCrypto, ClientCrypto], conversation: str, roster: bytes
) -> None:
    """Alice sends 900 messages, rotating every 100, while Bob is away; like the SDK, Bob
    installs every waiting key first and then reads the history."""
    alice, bob = pair
    waiting, history = [], []
    for rotation in range(9):
        (message,) = alice.sender_key_messages(
            conversation, 0, roster, [(bob.user_id, bob.device_id)], now=NOW
        )
        waiting.append(message)
        history += [send(alice, conversation, roster, f"{rotation}/{i}".encode()) for i in range(100)]
    assert len({key_id_of(envelope) for envelope in history}) == 9
    for message in waiting:
        payload = bob.decrypt_device_message(alice.user_id, alice.device_id, "sender_key", message)
        distribution = SenderKeyDistribution.decode(payload)
        assert bob.install_sender_key(alice.user_id, alice.device_id, distribution, roster, now=NOW)
    bob = ClientCrypto.from_state(bob.to_state())
    for n, envelope in enumerate(history):
        assert bob.decrypt_group_message(envelope, roster, now=NOW) == f"{n // 100}/{n % 100}".encode()


def test_a_superseded_key_is_kept_a_week_after_its_successor_and_the_newest_key_always(
    pair: tuple[ClientCrypto, ClientCrypto], conversation: str, roster: bytes
) -> None:
    alice, bob = pair
    hand_over(alice, bob, conversation, roster)
    on_first = [send(alice, conversation, roster, f"first {i}".encode()) for i in range(2)]
    successor_installed = NOW + SENDER_KEY_MAX_AGE
    hand_over(alice, bob, conversation, roster, now=successor_installed)
    on_second = send(alice, conversation, roster, b"second")
    bob = ClientCrypto.from_state(bob.to_state())  # the time of superseding is kept
    saved = bob.to_state()["sender_keys"]["peers"]
    last_day = successor_installed + SKIPPED_MAX_AGE - 1
    assert bob.decrypt_group_message(on_first[0], roster, now=last_day) == b"first 0"
    with pytest.raises(UnknownSenderKeyError, match=f"no sender key {key_id_of(on_first[1])} "):
        bob.decrypt_group_message(on_first[1], roster, now=successor_installed + SKIPPED_MAX_AGE)
    much_later = successor_installed + 10 * SKIPPED_MAX_AGE
    bob.expire_keys(now=much_later)
    assert bob.decrypt_group_message(on_second, roster, now=much_later) == b"second"
    assert [peer["key"]["superseded_at"] for peer in saved] == [successor_installed, None]


def test_a_hostile_sender_cannot_grow_a_slot_beyond_its_cap(
    pair: tuple[ClientCrypto, ClientCrypto], conversation: str, roster: bytes
) -> None:
    """Alice's device sends many keys at once: Bob keeps the newest ones and names an unknown one."""
    alice, bob = pair
    assert MAX_SENDER_KEYS_PER_SLOT == 64
    first = hand_over(alice, bob, conversation, roster)
    dropped = send(alice, conversation, roster, b"on the first key")
    forged = [
        OwnSenderKey.generate(conversation, 0, roster, now=NOW).distribution()
        for _ in range(MAX_SENDER_KEYS_PER_SLOT)
    ]
    for distribution in forged:
        assert bob.install_sender_key(alice.user_id, alice.device_id, distribution, roster, now=NOW)
    with pytest.raises(UnknownSenderKeyError, match=f"no sender key {first.key_id} "):
        bob.decrypt_group_message(dropped, roster, now=NOW)
    peers = bob.to_state()["sender_keys"]["peers"]
    assert [p["key"]["key_id"] for p in peers] == [d.key_id for d in forged]
    restored = ClientCrypto.from_state(bob.to_state())
    assert restored.to_state() == bob.to_state()


def test_a_repeated_distribution_cannot_roll_a_chain_back(
    pair: tuple[ClientCrypto, ClientCrypto], conversation: str, roster: bytes
) -> None:
    alice, bob = pair
    first = hand_over(alice, bob, conversation, roster)
    read = send(alice, conversation, roster, b"read once")
    assert bob.decrypt_group_message(read, roster, now=NOW) == b"read once"
    hand_over(alice, bob, conversation, roster, now=NOW + SENDER_KEY_MAX_AGE)
    # The first key's distribution again (its iteration 0, before `read`): ignored, not reinstalled.
    assert bob.install_sender_key(alice.user_id, alice.device_id, first, roster, now=NOW) is False
    with pytest.raises(ReplayError):
        bob.decrypt_group_message(read, roster, now=NOW)
    # Nor can the same key come back under another key id, with its chain at the start again.
    renamed = dataclasses.replace(first, key_id=first.key_id ^ 1)
    with pytest.raises(SenderKeyRefusedError, match="another key id"):
        bob.install_sender_key(alice.user_id, alice.device_id, renamed, roster, now=NOW)
    with pytest.raises(ReplayError):
        bob.decrypt_group_message(read, roster, now=NOW)


def test_another_signing_key_under_a_held_key_id_replaces_that_key(
    pair: tuple[ClientCrypto, ClientCrypto], conversation: str, roster: bytes
) -> None:
    alice, bob = pair
    genuine = hand_over(alice, bob, conversation, roster)
    envelope = send(alice, conversation, roster, b"genuine")
    other = OwnSenderKey.generate(conversation, 0, roster, now=NOW).distribution()
    replacement = dataclasses.replace(other, key_id=genuine.key_id)
    assert bob.install_sender_key(alice.user_id, alice.device_id, replacement, roster, now=NOW)
    with pytest.raises(DecryptionError, match="signature"):
        bob.decrypt_group_message(envelope, roster, now=NOW)
    assert len(bob.to_state()["sender_keys"]["peers"]) == 1


# Rotation -----------------------------------------------------------------------------------------


def test_a_key_rotates_after_its_message_limit_but_sending_never_rotates(
    pair: tuple[ClientCrypto, ClientCrypto], conversation: str, roster: bytes
) -> None:
    alice, bob = pair
    first = hand_over(alice, bob, conversation, roster).key_id
    for _ in range(SENDER_KEY_MAX_MESSAGES - 1):
        send(alice, conversation, roster, b"x")
    assert key_id(alice, conversation, roster) == first
    send(alice, conversation, roster, b"the last one on this key")
    # Due now, but sending goes on with the current key until the caller distributes a new one.
    over_the_limit = send(alice, conversation, roster, b"still the first key")
    assert key_id_of(over_the_limit) == first
    assert bob.decrypt_group_message(over_the_limit, roster, now=NOW) == b"still the first key"
    second = key_id(alice, conversation, roster)
    assert second != first
    assert key_id(alice, conversation, roster) == second  # a fresh key is not due again
    (own,) = alice.to_state()["sender_keys"]["own"]
    assert own["key_id"] == second  # the replaced key is deleted
    with pytest.raises(UnknownSenderKeyError, match=str(second)):
        bob.decrypt_group_message(send(alice, conversation, roster, b"new key"), roster, now=NOW)


def test_a_key_rotates_when_it_is_a_week_old(
    pair: tuple[ClientCrypto, ClientCrypto], conversation: str, roster: bytes
) -> None:
    alice, _ = pair
    first = key_id(alice, conversation, roster)
    assert SENDER_KEY_MAX_AGE == 7 * DAY
    assert key_id(alice, conversation, roster, now=NOW + SENDER_KEY_MAX_AGE - 1) == first
    alice = ClientCrypto.from_state(alice.to_state())  # the creation time is kept
    second = key_id(alice, conversation, roster, now=NOW + SENDER_KEY_MAX_AGE)
    assert second != first
    assert key_id(alice, conversation, roster, now=NOW + 2 * SENDER_KEY_MAX_AGE - 1) == second


def test_a_new_roster_or_epoch_makes_a_new_key(
    pair: tuple[ClientCrypto, ClientCrypto], conversation: str, roster: bytes
) -> None:
    alice, _ = pair
    first = key_id(alice, conversation, roster)
    other_roster = key_id(alice, conversation, roster_hash(alice))
    assert other_roster != first
    next_epoch = alice.current_sender_key_id(conversation, 1, roster, now=NOW)
    assert next_epoch != other_roster
    assert [own["epoch"] for own in alice.to_state()["sender_keys"]["own"]] == [1]


def test_with_turn_rotation_a_newly_installed_peer_key_rotates_the_own_key(
    pair: tuple[ClientCrypto, ClientCrypto], conversation: str, roster: bytes
) -> None:
    alice, bob = pair
    first = key_id(alice, conversation, roster, rotate_on_peer_key=True)
    hand_over(bob, alice, conversation, roster)  # Bob's key is new to Alice
    assert key_id(alice, conversation, roster) == first  # only when asked for
    alice = ClientCrypto.from_state(alice.to_state())  # the install count is kept
    second = key_id(alice, conversation, roster, rotate_on_peer_key=True)
    assert second != first
    assert key_id(alice, conversation, roster, rotate_on_peer_key=True) == second
    hand_over(bob, alice, conversation, roster)  # the same key of Bob's again: nothing new
    assert key_id(alice, conversation, roster, rotate_on_peer_key=True) == second


def test_turn_rotation_ignores_keys_of_the_users_own_other_devices(
    directory: Directory, pair: tuple[ClientCrypto, ClientCrypto], conversation: str, roster: bytes
) -> None:
    """Alice's phone speaking is not Bob's turn: only Bob's new key rotates her laptop's key."""
    laptop, bob = pair
    phone = new_device(laptop.user_id)
    connect(directory, phone, laptop)
    first = key_id(laptop, conversation, roster, rotate_on_peer_key=True)
    hand_over(phone, laptop, conversation, roster, rotate_on_peer_key=True)
    laptop = ClientCrypto.from_state(laptop.to_state())
    assert key_id(laptop, conversation, roster, rotate_on_peer_key=True) == first
    hand_over(bob, laptop, conversation, roster, rotate_on_peer_key=True)
    assert key_id(laptop, conversation, roster, rotate_on_peer_key=True) != first


def test_each_turn_of_a_direct_conversation_carries_a_fresh_key(
    pair: tuple[ClientCrypto, ClientCrypto], conversation: str, roster: bytes
) -> None:
    alice, bob = pair
    seen: list[int] = []
    for turn in range(6):
        sender, receiver = (alice, bob) if turn % 2 == 0 else (bob, alice)
        distribution = hand_over(sender, receiver, conversation, roster, rotate_on_peer_key=True)
        envelope = send(sender, conversation, roster, f"turn {turn}".encode())
        assert receiver.decrypt_group_message(envelope, roster, now=NOW) == f"turn {turn}".encode()
        seen.append(distribution.key_id)
    assert len(set(seen)) == 6


def test_a_new_key_id_differs_from_the_one_it_replaces(
    monkeypatch: pytest.MonkeyPatch, conversation: str
) -> None:
    draws = iter([b"\x00\x00\x00\x07", b"\x00\x00\x00\x07", b"\x00\x00\x00\x09"])
    fake_os = types.SimpleNamespace(urandom=lambda n: next(draws) if n == 4 else os.urandom(n))
    monkeypatch.setattr(sender_key_chains, "os", fake_os)
    first = OwnSenderKey.generate(conversation, 0, bytes(32), now=NOW)
    second = OwnSenderKey.generate(conversation, 0, bytes(32), now=NOW, avoid_key_ids=[first.key_id])
    assert (first.key_id, second.key_id) == (7, 9)


def test_skipped_key_expiry_and_epoch_retirement_reach_every_key_of_a_sender(
    pair: tuple[ClientCrypto, ClientCrypto], conversation: str, roster: bytes
) -> None:
    alice, bob = pair
    hand_over(alice, bob, conversation, roster)
    old_key = [send(alice, conversation, roster, f"old {i}".encode()) for i in range(3)]
    hand_over(alice, bob, conversation, roster, now=NOW + SENDER_KEY_MAX_AGE)
    new_key = [send(alice, conversation, roster, f"new {i}".encode()) for i in range(2)]
    # Reading the last of each leaves skipped keys on both the previous key and the current one.
    bob.decrypt_group_message(old_key[2], roster, now=NOW)
    bob.decrypt_group_message(new_key[1], roster, now=NOW)
    bob.expire_keys(now=NOW + SKIPPED_MAX_AGE)
    assert [p["key"]["chain"]["skipped"] for p in bob.to_state()["sender_keys"]["peers"]] == [[], []]
    # A new epoch retires epoch 0 after the grace period: both of Alice's keys go.
    (message,) = alice.sender_key_messages(
        conversation, 1, roster, [(bob.user_id, bob.device_id)], now=NOW + SKIPPED_MAX_AGE
    )
    payload = bob.decrypt_device_message(alice.user_id, alice.device_id, "sender_key", message)
    distribution = SenderKeyDistribution.decode(payload)
    bob.install_sender_key(alice.user_id, alice.device_id, distribution, roster, now=NOW + SKIPPED_MAX_AGE)
    later = NOW + SKIPPED_MAX_AGE + 1
    on_epoch_1 = stored(
        alice.encrypt_group_message(
            conversation, 1, str(uuid.uuid4()), "text", b"e1", roster_hash=roster, now=later
        ),
        conversation,
        alice,
    )
    assert bob.decrypt_group_message(on_epoch_1, roster, now=later) == b"e1"
    bob.expire_keys(now=later + bob.epoch_grace_seconds)
    assert [p["epoch"] for p in bob.to_state()["sender_keys"]["peers"]] == [1]
    for envelope in (old_key[0], new_key[0]):
        with pytest.raises(UnknownSenderKeyError, match="retired"):
            bob.decrypt_group_message(envelope, roster, now=later + bob.epoch_grace_seconds)


def version_1_frame_store(conversation: str) -> dict[str, Any]:
    """A sender key store as the version-1-frame client saved it (client state version 2)."""
    chain = {"chain_key": base64.b64encode(bytes(32)).decode(), "index": 3}
    return {
        "own": [
            {
                "conversation_id": conversation,
                "epoch": 2,
                "roster_hash": base64.b64encode(bytes(32)).decode(),
                "chain": chain,
                "signing": base64.b64encode(bytes(32)).decode(),
            }
        ],
        "peers": [
            {
                "conversation_id": conversation,
                "epoch": 2,
                "sender_id": str(uuid.uuid4()),
                "sender_device_id": str(uuid.uuid4()),
                "key": {
                    "chain": {"chain_key": chain["chain_key"], "next_index": 0, "skipped": []},
                    "signing_public_key": base64.b64encode(bytes(32)).decode(),
                    "roster_hash": base64.b64encode(bytes(32)).decode(),
                },
            }
        ],
        "retirements": [
            {"conversation_id": conversation, "retired_before": 2, "newest_seen": 2, "deadlines": []}
        ],
    }


def test_a_store_saved_before_key_ids_keeps_only_its_epoch_retirements(conversation: str) -> None:
    """Client state version 2 (frame version 1): its keys cannot be named by any v2 message."""
    old_store = version_1_frame_store(conversation)
    store = SenderKeyStore.from_state(old_store, epoch_grace_seconds=3600.0, legacy=True)
    state = store.to_state()
    assert (state["own"], state["peers"], state["installs"]) == ([], [], [])
    assert state["retirements"] == old_store["retirements"]
    retired = OwnSenderKey.generate(conversation, 1, bytes(32), now=NOW).distribution()
    with pytest.raises(SenderKeyRefusedError, match="retired"):
        store.install(str(uuid.uuid4()), str(uuid.uuid4()), retired, bytes(32), now=NOW)


def test_only_a_version_2_client_state_migrates_its_sender_keys(conversation: str) -> None:
    version_2 = json.loads(VERSION_2_STATES)["alice"]
    version_2["sender_keys"] = version_1_frame_store(conversation)
    migrated = ClientCrypto.from_state(version_2).to_state()["sender_keys"]
    assert (migrated["own"], migrated["peers"]) == ([], [])
    assert migrated["retirements"] == version_2["sender_keys"]["retirements"]
    # A current state with a store shaped like version 2 (no `installs`) is damage: refused.
    current = ClientCrypto.from_state(version_2).to_state()
    current["sender_keys"] = {"own": [], "peers": [], "retirements": migrated["retirements"]}
    with pytest.raises(ValueError, match="installs"):
        ClientCrypto.from_state(current)


@pytest.mark.parametrize("member", ["own", "peers", "retirements", "installs"])
def test_a_current_store_missing_a_member_is_refused(
    pair: tuple[ClientCrypto, ClientCrypto], conversation: str, roster: bytes, member: str
) -> None:
    alice, bob = pair
    hand_over(alice, bob, conversation, roster)
    bob.decrypt_group_message(send(alice, conversation, roster, b"x"), roster, now=NOW)
    state = bob.to_state()
    del state["sender_keys"][member]
    with pytest.raises(ValueError, match=member):
        ClientCrypto.from_state(state)


STORE_DAMAGE: dict[str, Any] = {
    "newest key superseded": lambda peers: peers[-1]["key"].update(superseded_at=NOW),
    "older key not superseded": lambda peers: peers[0]["key"].update(superseded_at=None),
    "superseded_at missing": lambda peers: peers[0]["key"].pop("superseded_at"),
}


@pytest.mark.parametrize("damage", sorted(STORE_DAMAGE))
def test_a_slot_with_damaged_superseding_times_is_refused(
    pair: tuple[ClientCrypto, ClientCrypto], conversation: str, roster: bytes, damage: str
) -> None:
    alice, bob = pair
    hand_over(alice, bob, conversation, roster)
    hand_over(alice, bob, conversation, roster, now=NOW + SENDER_KEY_MAX_AGE)
    state = bob.to_state()
    STORE_DAMAGE[damage](state["sender_keys"]["peers"])
    with pytest.raises(ValueError, match="superseded_at"):
        ClientCrypto.from_state(state)
