"""The trust store: pinning master keys, changes held as pending, and which devices are trusted."""

from __future__ import annotations

import base64
import json
import os
import uuid
from typing import Any

import pytest

from veil.client.protocol.errors import InvalidMasterKeyError
from veil.client.protocol.identity import MasterKey
from veil.client.protocol.trust import (
    REFUSED_BAD_CERTIFICATE,
    REFUSED_KEY_CHANGED,
    REFUSED_NO_MASTER_KEY,
    REFUSED_NOT_APPROVED,
    ListedDevice,
    TrustState,
    TrustStore,
)

ME = "11111111-1111-4111-8111-111111111111"
BOB = "22222222-2222-4222-8222-222222222222"


def _device(user_id: str, master: MasterKey | None, *, device_id: str | None = None) -> ListedDevice:
    """A device of `user_id` with fresh keys, certified by `master` (None: not approved)."""
    device_id = device_id or str(uuid.uuid4())
    identity_key, signing_key = os.urandom(32), os.urandom(32)
    certificate = None if master is None else master.certify(user_id, device_id, identity_key, signing_key)
    return ListedDevice(device_id, identity_key, signing_key, certificate)


def _reasons(refused: list[tuple[ListedDevice, str]]) -> list[str]:
    return [reason for _, reason in refused]


# --- pinning --------------------------------------------------------------------------------------


def test_first_sight_pins_and_the_same_key_again_is_fine() -> None:
    store, bob = TrustStore(ME), MasterKey.generate()
    assert store.pinned(BOB) is None
    assert store.observe(BOB, bob.public_key) is TrustState.FIRST_SEEN
    assert store.pinned(BOB) == bob.public_key
    assert store.observe(BOB.replace("-", ""), bob.public_key) is TrustState.SAME
    assert store.pending(BOB) is None
    assert not store.is_verified(BOB)


def test_a_changed_master_key_is_held_pending_and_trusts_nothing_until_accepted() -> None:
    store, bob, server_key = TrustStore(ME), MasterKey.generate(), MasterKey.generate()
    store.observe(BOB, bob.public_key)
    genuine = _device(BOB, bob)
    assert store.certified(BOB, [genuine]) == ([genuine], [])

    assert store.observe(BOB, server_key.public_key) is TrustState.CHANGED
    assert store.pinned(BOB) == bob.public_key
    assert store.pending(BOB) == server_key.public_key
    planted = _device(BOB, server_key)
    trusted, refused = store.certified(BOB, [genuine, planted])
    assert trusted == []
    assert _reasons(refused) == [REFUSED_KEY_CHANGED, REFUSED_KEY_CHANGED]
    # The server showing the old key again does not make the change go away unseen.
    assert store.observe(BOB, bob.public_key) is TrustState.CHANGED
    assert store.pending(BOB) == server_key.public_key


def test_accepting_a_change_pins_the_new_key_and_clears_verified() -> None:
    store, old, new = TrustStore(ME), MasterKey.generate(), MasterKey.generate()
    store.observe(BOB, old.public_key)
    store.mark_verified(BOB)
    assert store.is_verified(BOB)
    store.observe(BOB, new.public_key)
    with pytest.raises(ValueError, match="accept the new key"):
        store.mark_verified(BOB)
    store.accept(BOB, new.public_key)
    assert store.pinned(BOB) == new.public_key
    assert store.pending(BOB) is None
    assert store.history(BOB) == [old.public_key]
    assert not store.is_verified(BOB)
    assert store.observe(BOB, new.public_key) is TrustState.SAME
    device = _device(BOB, new)
    assert store.certified(BOB, [device]) == ([device], [])
    store.mark_verified(BOB)
    assert store.is_verified(BOB)


def test_accept_takes_only_the_key_the_user_was_shown() -> None:
    store, old = TrustStore(ME), MasterKey.generate()
    shown, later = MasterKey.generate(), MasterKey.generate()
    store.observe(BOB, old.public_key)
    with pytest.raises(ValueError, match="no changed master key"):
        store.accept(BOB)
    store.observe(BOB, shown.public_key)
    store.observe(BOB, later.public_key)  # changed again while the warning was on screen
    with pytest.raises(ValueError, match="changed again"):
        store.accept(BOB, shown.public_key)
    assert store.pinned(BOB) == old.public_key
    store.accept(BOB, later.public_key)
    assert store.pinned(BOB) == later.public_key


def test_verification_needs_a_pinned_key() -> None:
    store = TrustStore(ME)
    with pytest.raises(ValueError, match="no master key is pinned"):
        store.mark_verified(BOB)
    assert not store.is_verified(BOB)


@pytest.mark.parametrize("key", [bytes(32), b"\x01" + bytes(31), b"\x07" * 31, b"\xff" * 32])
def test_an_unusable_master_key_from_the_server_is_refused(key: bytes) -> None:
    store = TrustStore(ME)
    with pytest.raises(InvalidMasterKeyError):
        store.observe(BOB, key)
    assert store.pinned(BOB) is None


# --- certified devices ----------------------------------------------------------------------------


def test_devices_certified_by_the_pinned_key_are_trusted_and_others_refused_with_a_reason() -> None:
    store, bob, server_key = TrustStore(ME), MasterKey.generate(), MasterKey.generate()
    store.observe(BOB, bob.public_key)
    genuine = _device(BOB, bob)
    unapproved = _device(BOB, None)
    by_another_master = _device(BOB, server_key)
    trusted, refused = store.certified(BOB, [genuine, unapproved, by_another_master])
    assert trusted == [genuine]
    assert refused == [
        (unapproved, REFUSED_NOT_APPROVED),
        (by_another_master, REFUSED_BAD_CERTIFICATE),
    ]


def test_a_certified_identity_key_with_another_signing_key_is_refused() -> None:
    store, bob = TrustStore(ME), MasterKey.generate()
    store.observe(BOB, bob.public_key)
    genuine = _device(BOB, bob)
    mixed = ListedDevice(genuine.device_id, genuine.identity_key, os.urandom(32), genuine.certificate)
    other_identity = ListedDevice(genuine.device_id, os.urandom(32), genuine.signing_key, genuine.certificate)
    trusted, refused = store.certified(BOB, [mixed, other_identity])
    assert trusted == []
    assert _reasons(refused) == [REFUSED_BAD_CERTIFICATE, REFUSED_BAD_CERTIFICATE]


def test_a_certificate_copied_to_another_device_or_user_is_refused() -> None:
    store, bob, carol = TrustStore(ME), MasterKey.generate(), MasterKey.generate()
    carol_id = str(uuid.uuid4())
    store.observe(BOB, bob.public_key)
    store.observe(carol_id, carol.public_key)
    genuine = _device(BOB, bob)
    ghost = ListedDevice(str(uuid.uuid4()), genuine.identity_key, genuine.signing_key, genuine.certificate)
    assert _reasons(store.certified(BOB, [ghost])[1]) == [REFUSED_BAD_CERTIFICATE]
    # Bob's genuine device listed under Carol: her key did not certify it.
    assert _reasons(store.certified(carol_id, [genuine])[1]) == [REFUSED_BAD_CERTIFICATE]


def test_devices_of_a_user_without_a_pinned_key_are_refused() -> None:
    store = TrustStore(ME)
    device = _device(BOB, MasterKey.generate())
    assert store.certified(BOB, [device]) == ([], [(device, REFUSED_NO_MASTER_KEY)])
    assert store.refusal(BOB, device) == REFUSED_NO_MASTER_KEY


# --- the own user ---------------------------------------------------------------------------------


def test_the_own_master_key_is_not_learnt_from_the_server() -> None:
    store, server_key = TrustStore(ME), MasterKey.generate()
    assert store.observe(ME, server_key.public_key) is TrustState.NOT_LINKED
    assert store.own_master_public_key is None
    planted = _device(ME, server_key)
    assert store.certified(ME, [planted]) == ([], [(planted, REFUSED_NO_MASTER_KEY)])


def test_a_linked_device_trusts_its_own_users_certified_devices_only() -> None:
    store, master, server_key = TrustStore(ME), MasterKey.generate(), MasterKey.generate()
    store.install_own_master(master.public_key)  # from a verified link payload: not primary
    assert store.own_master is None
    assert store.own_master_public_key == master.public_key
    assert store.observe(ME, master.public_key) is TrustState.SAME
    sibling, ghost = _device(ME, master), _device(ME, server_key)
    unapproved = _device(ME, None)
    trusted, refused = store.certified(ME, [sibling, ghost, unapproved])
    assert trusted == [sibling]
    assert refused == [(ghost, REFUSED_BAD_CERTIFICATE), (unapproved, REFUSED_NOT_APPROVED)]
    with pytest.raises(ValueError, match="already pinned"):
        store.install_own_master(server_key.public_key)
    store.install_own_master(master.public_key)  # the same key again is harmless


def test_a_primary_device_holds_the_private_master_key() -> None:
    master = MasterKey.generate()
    store = TrustStore(ME, master)
    assert store.own_master is master
    assert store.own_master_public_key == master.public_key
    with pytest.raises(ValueError, match="does not belong"):
        TrustStore(ME).install_own_master(master.public_key, MasterKey.generate())


def test_an_own_master_key_change_is_pending_and_accepting_it_drops_the_private_key() -> None:
    master, reset = MasterKey.generate(), MasterKey.generate()
    store = TrustStore(ME, master)
    assert store.observe(ME, reset.public_key) is TrustState.CHANGED
    assert _reasons(store.certified(ME, [_device(ME, master)])[1]) == [REFUSED_KEY_CHANGED]
    store.accept(ME)
    assert store.own_master is None
    assert store.own_master_public_key == reset.public_key


# --- listings -------------------------------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_a_listed_device_is_read_from_the_api_shape() -> None:
    device = _device(BOB, MasterKey.generate())
    assert device.certificate is not None
    item: dict[str, Any] = {
        "device_id": device.device_id.upper(),
        "identity_key": _b64(device.identity_key),
        "signing_key": _b64(device.signing_key),
        "signed_prekey": {"key_id": 1, "public_key": _b64(os.urandom(32)), "signature": _b64(b"s" * 64)},
        "certificate": {"signature": _b64(device.certificate)},
    }
    assert ListedDevice.from_api(item) == device
    assert ListedDevice.from_api({**item, "certificate": None}).certificate is None


@pytest.mark.parametrize(
    "change",
    [
        {"device_id": "not-a-uuid"},
        {"identity_key": _b64(b"k" * 31)},
        {"signing_key": None},
        {"certificate": {"signature": _b64(b"s" * 63)}},
        {"certificate": "AAAA"},
    ],
)
def test_a_malformed_listing_item_is_refused(change: dict[str, Any]) -> None:
    item: dict[str, Any] = {
        "device_id": str(uuid.uuid4()),
        "identity_key": _b64(os.urandom(32)),
        "signing_key": _b64(os.urandom(32)),
        "certificate": None,
    }
    ListedDevice.from_api(item)
    with pytest.raises(ValueError):  # noqa: PT011 - the field named differs per case
        ListedDevice.from_api({**item, **change})


# --- state ----------------------------------------------------------------------------------------


def _populated_store() -> tuple[TrustStore, MasterKey]:
    master = MasterKey.generate()
    store = TrustStore(ME, master)
    store.observe(BOB, MasterKey.generate().public_key)
    store.observe(BOB, MasterKey.generate().public_key)
    store.accept(BOB)
    store.mark_verified(BOB)
    carol = str(uuid.uuid4())
    store.observe(carol, MasterKey.generate().public_key)
    store.observe(carol, MasterKey.generate().public_key)  # left pending
    return store, master


def test_state_round_trips_through_json() -> None:
    store, master = _populated_store()
    state = json.loads(json.dumps(store.to_state()))
    restored = TrustStore.from_state(state)
    assert restored.to_state() == store.to_state()
    assert restored.own_master is not None
    assert restored.own_master.public_key == master.public_key
    assert restored.is_verified(BOB)
    assert restored.history(BOB) == store.history(BOB)


def _mutations() -> list[tuple[str, Any]]:
    other = _b64(MasterKey.generate().public_key)
    return [
        ("extra member", lambda s: s.update(extra=1)),
        ("missing member", lambda s: s.pop("users")),
        ("version 2", lambda s: s.update(version=2)),
        ("version true", lambda s: s.update(version=True)),
        ("own id spelling", lambda s: s.update(own_user_id=ME.replace("-", ""))),
        ("user id spelling", lambda s: s["users"].update({BOB.replace("-", ""): s["users"].pop(BOB)})),
        ("small-order pin", lambda s: s["users"][BOB].update(pinned=_b64(bytes(32)))),
        ("short pin", lambda s: s["users"][BOB].update(pinned=_b64(b"k" * 31))),
        ("verified as int", lambda s: s["users"][BOB].update(verified=1)),
        ("history not list", lambda s: s["users"][BOB].update(history=other)),
        ("entry extra", lambda s: s["users"][BOB].update(note="x")),
        ("pending equals pinned", lambda s: s["users"][BOB].update(pending=s["users"][BOB]["pinned"])),
        ("own master of another key", lambda s: s["users"][ME].update(pinned=other)),
        ("own master without own pin", lambda s: s["users"].pop(ME)),
        ("own master malformed", lambda s: s.update(own_master={"private_key": "AAAA"})),
    ]


@pytest.mark.parametrize(("name", "mutate"), _mutations(), ids=[name for name, _ in _mutations()])
def test_from_state_refuses_anything_but_what_to_state_writes(name: str, mutate: Any) -> None:
    store, _ = _populated_store()
    state = json.loads(json.dumps(store.to_state()))
    TrustStore.from_state(json.loads(json.dumps(state)))
    mutate(state)
    with pytest.raises(ValueError):  # noqa: PT011 - each case names its own field
        TrustStore.from_state(state)
