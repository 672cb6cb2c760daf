"""What a device keeps of the key-transparency log: gossip payloads, the per-user version floor,
the own-key monitor, and the key-store round trip (veil.client.protocol.key_log)."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from veil.client.protocol.errors import MalformedMessageError
from veil.client.protocol.key_log import (
    ENDORSEMENT_CONTEXT,
    GOSSIP_INTERVAL_SECONDS,
    GOSSIP_SIZE,
    KeyEndorsement,
    KeyLogState,
    PendingGossip,
    decode_gossip,
    encode_gossip,
    follow_endorsements,
    is_gossip,
)
from veil.client.protocol.transparency import HeadStore, TransparencyError, VerifiedTreeHead

ALICE = "a11ce000-0000-4000-8000-000000000001"
PHONE, LAPTOP, STRANGER = (
    f"{prefix}-0000-4000-8000-000000000000" for prefix in ("0badf00d", "1aaf7000", "5a5a5a5a")
)
OLD_MASTER, NEW_MASTER = b"\x01" * 32, b"\x02" * 32


def head(size: int = 5) -> VerifiedTreeHead:
    return VerifiedTreeHead(size, 1_700_000_000_000, os.urandom(32), os.urandom(64))


def test_a_gossip_payload_carries_the_head_exactly() -> None:
    sent = head(12345)
    payload = encode_gossip(sent)
    assert len(payload) == GOSSIP_SIZE and is_gossip(payload)
    # The same fields, not yet verified: the receiver checks the signature.
    assert decode_gossip(payload).to_wire() == sent.to_wire()


@pytest.mark.parametrize("cut", [1, -1])
def test_a_gossip_payload_of_the_wrong_size_is_malformed(cut: int) -> None:
    payload = encode_gossip(head())
    wrong = payload[:-1] if cut == 1 else payload + b"\x00"
    with pytest.raises(MalformedMessageError):
        decode_gossip(wrong)
    with pytest.raises(MalformedMessageError):
        decode_gossip(b"hello, not a head at all" + bytes(GOSSIP_SIZE))


def test_a_users_version_never_goes_back() -> None:
    state = KeyLogState()
    assert state.note_version(ALICE, 3) is None
    assert state.note_version(ALICE, 3) is None
    assert state.note_version(ALICE, 2) == 3
    assert state.versions[ALICE] == 3


def test_gossip_is_due_once_a_day_per_conversation_and_only_with_a_head() -> None:
    state = KeyLogState()
    assert not state.gossip_due(ALICE, 1000.0)  # no head yet: nothing to gossip
    state.heads = HeadStore(head())
    assert state.gossip_due(ALICE, 1000.0)
    state.gossiped[ALICE] = 1000.0
    assert not state.gossip_due(ALICE, 1000.0 + GOSSIP_INTERVAL_SECONDS - 1)
    assert state.gossip_due(ALICE, 1000.0 + GOSSIP_INTERVAL_SECONDS)


def test_the_monitor_tells_changes_made_here_from_the_others() -> None:
    state = KeyLogState()
    first = state.observe_own(2, OLD_MASTER, {PHONE: "aa"}, OLD_MASTER, 1, PHONE)
    assert [c.expected for c in first] == [True] and "first look" in first[0].description
    assert state.observe_own(2, OLD_MASTER, {PHONE: "aa"}, OLD_MASTER, 2, PHONE) == []  # nothing new

    state.approved_here.add(LAPTOP)
    approved = state.observe_own(3, OLD_MASTER, {PHONE: "aa", LAPTOP: "bb"}, OLD_MASTER, 3, PHONE)
    assert [(c.expected, "on this device" in c.description) for c in approved] == [(True, True)]
    assert state.approved_here == set()

    # A reset by someone else (this device does not hold the new key), a device of theirs approved,
    # and one more change that came and went in between.
    changes = state.observe_own(6, NEW_MASTER, {STRANGER: "cc"}, OLD_MASTER, 4, PHONE)
    described = {c.description: c.expected for c in changes}
    assert described["your master key was replaced (a reset)"] is False
    assert any(STRANGER[:8] in d and not ok for d, ok in described.items())
    assert sum(PHONE[:8] in d or LAPTOP[:8] in d for d in described) == 2  # both no longer approved
    assert any("1 more change" in d and not ok for d, ok in described.items())
    assert [c.version for c in state.own_changes].count(6) == len(changes)


def test_the_approval_of_this_very_device_is_no_alarm() -> None:
    """A linked device first looks while it is pending; its own approval then shows up as a new
    certified device, which it expects (the user approved it to use it)."""
    state = KeyLogState()
    state.observe_own(1, OLD_MASTER, {PHONE: "aa"}, None, 1, LAPTOP)
    [change] = state.observe_own(2, OLD_MASTER, {PHONE: "aa", LAPTOP: "bb"}, OLD_MASTER, 2, LAPTOP)
    assert change.expected and change.description.startswith("this device")


def test_the_state_survives_the_key_store() -> None:
    state = KeyLogState(log_key=b"\x07" * 32, retired_log_keys=[(b"\x06" * 32, 4)], heads=HeadStore(head()))
    state.pending_gossip.append(PendingGossip(ALICE, PHONE, head(3), attempts=2))
    state.own_checked_size = 5
    state.note_version(ALICE, 4)
    state.observe_own(1, OLD_MASTER, {PHONE: "aa"}, OLD_MASTER, 9, PHONE)
    state.approved_here.add(LAPTOP)
    state.gossiped[ALICE] = 5.0
    state.split_views[ALICE] = "two heads of size 5"
    again = KeyLogState.from_state(state.to_state())
    assert again.to_state() == state.to_state()
    assert again.heads.head == state.heads.head


def test_a_state_of_another_version_is_refused() -> None:
    with pytest.raises(ValueError, match="version"):
        KeyLogState.from_state({**KeyLogState().to_state(), "version": 99})


# Log key rotation --------------------------------------------------------------------------------


def _keys(count: int) -> list[Ed25519PrivateKey]:
    return [Ed25519PrivateKey.generate() for _ in range(count)]


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def _endorse(old: Ed25519PrivateKey, new: Ed25519PrivateKey) -> KeyEndorsement:
    return KeyEndorsement(_raw(new), _raw(old), old.sign(ENDORSEMENT_CONTEXT + _raw(new)))


def test_a_rotation_is_followed_along_endorsements_only() -> None:
    first, second, third = _keys(3)
    chain = [_endorse(first, second), _endorse(second, third)]
    assert follow_endorsements(_raw(first), _raw(third), chain) == [_raw(second), _raw(third)]
    assert follow_endorsements(_raw(second), _raw(third), chain) == [_raw(third)]
    assert follow_endorsements(_raw(third), _raw(third), chain) == []

    stranger = Ed25519PrivateKey.generate()
    with pytest.raises(TransparencyError, match="never endorsed"):
        follow_endorsements(_raw(first), _raw(stranger), chain)
    # A step signed by someone else than the key it claims to follow.
    forged = KeyEndorsement(_raw(stranger), _raw(first), second.sign(ENDORSEMENT_CONTEXT + _raw(stranger)))
    with pytest.raises(TransparencyError, match="does not verify"):
        follow_endorsements(_raw(first), _raw(stranger), [forged])
    # Endorsements that go round in a circle never reach the served key.
    circle = [_endorse(first, second), _endorse(second, first)]
    with pytest.raises(TransparencyError, match="never endorsed"):
        follow_endorsements(_raw(first), _raw(third), circle)
