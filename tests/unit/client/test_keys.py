"""Device keys and the published bundle: exact `PUT /v1/keys` shape, sizes and signature."""

from __future__ import annotations

import base64
import struct
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PublicKey

from veil.client.protocol.errors import UnknownPrekeyError
from veil.client.protocol.keys import DEFAULT_PQ_ONE_TIME_PREKEYS, PREKEY_ROTATION_SECONDS, DeviceKeys


def _b64(value: object) -> bytes:
    assert isinstance(value, str)
    raw = base64.b64decode(value, validate=True)
    assert base64.b64encode(raw).decode() == value  # canonical, padded
    return raw


def test_bundle_has_exactly_the_put_keys_shape_and_sizes() -> None:
    keys = DeviceKeys.generate(one_time=5, pq_one_time=3)
    bundle = keys.public_bundle()
    assert set(bundle) == {
        "identity_key",
        "signing_key",
        "signed_prekey",
        "one_time_prekeys",
        "pq_last_resort_prekey",
        "pq_one_time_prekeys",
    }
    assert set(bundle["signed_prekey"]) == {"key_id", "public_key", "signature"}
    assert len(_b64(bundle["identity_key"])) == 32
    assert len(_b64(bundle["signing_key"])) == 32
    assert len(_b64(bundle["signed_prekey"]["public_key"])) == 32
    assert len(_b64(bundle["signed_prekey"]["signature"])) == 64
    assert len(bundle["one_time_prekeys"]) == 5
    ids = [bundle["signed_prekey"]["key_id"]]
    for prekey in bundle["one_time_prekeys"]:
        assert set(prekey) == {"key_id", "public_key"}
        assert len(_b64(prekey["public_key"])) == 32
        ids.append(prekey["key_id"])
    assert len(bundle["pq_one_time_prekeys"]) == 3
    for prekey in [bundle["pq_last_resort_prekey"], *bundle["pq_one_time_prekeys"]]:
        assert set(prekey) == {"key_id", "public_key", "signature"}
        assert len(_b64(prekey["public_key"])) == 1184
        assert len(_b64(prekey["signature"])) == 64
        ids.append(prekey["key_id"])
    assert all(isinstance(key_id, int) and 0 <= key_id < 2**32 for key_id in ids)
    assert len(set(ids)) == len(ids)


def test_signed_prekey_signature_verifies_with_the_signing_key() -> None:
    bundle = DeviceKeys.generate(one_time=0).public_bundle()
    signing_key = Ed25519PublicKey.from_public_bytes(_b64(bundle["signing_key"]))
    spk = _b64(bundle["signed_prekey"]["public_key"])
    signing_key.verify(_b64(bundle["signed_prekey"]["signature"]), spk)
    with pytest.raises(InvalidSignature):
        signing_key.verify(_b64(bundle["signed_prekey"]["signature"]), bytes([spk[0] ^ 1]) + spk[1:])


def test_bundle_holds_no_private_key_material() -> None:
    keys = DeviceKeys.generate(one_time=2)
    text = repr(keys.public_bundle())
    secrets = [keys.identity.private_bytes_raw(), keys.signing.private_bytes_raw()]
    secrets.append(keys.signed_prekey.private_key.private_bytes_raw())
    assert keys.pq_last_resort_prekey is not None
    secrets.append(keys.pq_last_resort_prekey.private_key.private_bytes_raw())
    for prekey in keys.public_bundle()["pq_one_time_prekeys"]:
        secrets.append(keys.pq_prekey_private(prekey["key_id"]).private_bytes_raw())
    for secret in secrets:
        assert base64.b64encode(secret).decode() not in text


def test_added_one_time_prekeys_are_returned_for_upload_and_get_fresh_ids() -> None:
    keys = DeviceKeys.generate(one_time=2)
    before = {p["key_id"] for p in keys.public_bundle()["one_time_prekeys"]}
    added = keys.add_one_time_prekeys(3)
    assert len(added) == 3
    assert keys.one_time_count == 5
    assert not before & {p["key_id"] for p in added}
    assert keys.public_bundle(include_one_time=False)["one_time_prekeys"] == []


def test_consuming_a_one_time_prekey_deletes_it() -> None:
    keys = DeviceKeys.generate(one_time=1)
    key_id = keys.public_bundle()["one_time_prekeys"][0]["key_id"]
    keys.consume_one_time_prekey(key_id)
    assert keys.one_time_count == 0
    with pytest.raises(UnknownPrekeyError):
        keys.consume_one_time_prekey(key_id)
    with pytest.raises(UnknownPrekeyError):
        keys.one_time_prekey_private(key_id)


def test_rotation_keeps_the_previous_signed_prekey_for_a_while() -> None:
    keys = DeviceKeys.generate(one_time=0)
    first = keys.signed_prekey.key_id
    second = keys.rotate_signed_prekey()["key_id"]
    assert second != first
    keys.signed_prekey_private(first)
    keys.rotate_signed_prekey()
    with pytest.raises(UnknownPrekeyError):
        keys.signed_prekey_private(first)
    keys.signed_prekey_private(second)


def test_prekeys_rotate_weekly_from_the_first_check() -> None:
    keys = DeviceKeys.generate(one_time=0, pq_one_time=0)
    start = 1_800_000_000
    before = keys.public_bundle(include_one_time=False)
    assert not keys.rotate_prekeys_if_due(start)  # starts the clock: a new device keeps its keys
    assert not keys.rotate_prekeys_if_due(start + PREKEY_ROTATION_SECONDS - 1)
    assert keys.public_bundle(include_one_time=False) == before

    assert keys.rotate_prekeys_if_due(start + PREKEY_ROTATION_SECONDS)
    after = keys.public_bundle(include_one_time=False)
    for member in ("signed_prekey", "pq_last_resort_prekey"):
        assert after[member]["key_id"] != before[member]["key_id"]
        assert after[member]["public_key"] != before[member]["public_key"]
    assert (after["identity_key"], after["signing_key"]) == (before["identity_key"], before["signing_key"])
    # Set-ups that named the replaced keys (in flight) still open.
    keys.signed_prekey_private(before["signed_prekey"]["key_id"])
    keys.pq_prekey_private(before["pq_last_resort_prekey"]["key_id"])
    keys.prekeys_published(start + PREKEY_ROTATION_SECONDS)
    # The next rotation is a week after this one, not after the first check.
    assert not keys.rotate_prekeys_if_due(start + 2 * PREKEY_ROTATION_SECONDS - 1)
    assert keys.rotate_prekeys_if_due(start + 2 * PREKEY_ROTATION_SECONDS)


def test_unpublished_prekeys_are_offered_again_and_not_replaced_meanwhile() -> None:
    keys = DeviceKeys.generate(one_time=0, pq_one_time=0)
    start = 1_800_000_000
    keys.rotate_prekeys_if_due(start)
    served = keys.public_bundle(include_one_time=False)["signed_prekey"]["key_id"]
    assert keys.rotate_prekeys_if_due(start + PREKEY_ROTATION_SECONDS)  # the PUT then fails
    pending = keys.public_bundle(include_one_time=False)
    # Still waiting, across a reload of the key store and past another week: the same keys are
    # offered, and the one the server still hands out stays openable.
    keys = DeviceKeys.from_state(keys.to_state())
    assert keys.rotate_prekeys_if_due(start + 3 * PREKEY_ROTATION_SECONDS)
    assert keys.public_bundle(include_one_time=False) == pending
    keys.signed_prekey_private(served)
    keys.prekeys_published(start + 3 * PREKEY_ROTATION_SECONDS)
    assert "prekeys_unpublished" not in keys.to_state()
    # Their week counts from when the server got them.
    assert not keys.rotate_prekeys_if_due(start + 4 * PREKEY_ROTATION_SECONDS - 1)
    assert keys.rotate_prekeys_if_due(start + 4 * PREKEY_ROTATION_SECONDS)


def test_the_rotation_clock_survives_the_key_store() -> None:
    keys = DeviceKeys.generate(one_time=0, pq_one_time=0)
    keys.rotate_prekeys_if_due(1_800_000_000)
    restored = DeviceKeys.from_state(keys.to_state())
    assert restored.prekeys_rotated_at == 1_800_000_000
    assert restored.rotate_prekeys_if_due(1_800_000_000 + PREKEY_ROTATION_SECONDS)
    # A state from before rotation existed has no clock: it starts at the first check.
    older = keys.to_state()
    del older["prekeys_rotated_at"]
    assert DeviceKeys.from_state(older).prekeys_rotated_at is None


def test_state_round_trip_keeps_every_key() -> None:
    keys = DeviceKeys.generate(one_time=2)
    keys.rotate_signed_prekey()
    restored = DeviceKeys.from_state(keys.to_state())
    assert restored.public_bundle() == keys.public_bundle()
    assert restored.to_state() == keys.to_state()
    assert restored.fingerprint() == keys.fingerprint()


# --- PQXDH prekeys (ML-KEM-768) ---------------------------------------------------------------------


def _verify_pq_prekey(signing_key: str, prekey: dict[str, Any]) -> None:
    """Check a PQ prekey's signature over the bytes the design states, written out here."""
    signed = b"veil/pq-prekey/v1" + struct.pack(">I", prekey["key_id"]) + _b64(prekey["public_key"])
    Ed25519PublicKey.from_public_bytes(_b64(signing_key)).verify(_b64(prekey["signature"]), signed)


def test_every_pq_prekey_is_signed_over_label_id_and_public_key() -> None:
    bundle = DeviceKeys.generate(one_time=0, pq_one_time=2).public_bundle()
    for prekey in [bundle["pq_last_resort_prekey"], *bundle["pq_one_time_prekeys"]]:
        _verify_pq_prekey(bundle["signing_key"], prekey)
        MLKEM768PublicKey.from_public_bytes(_b64(prekey["public_key"]))  # a usable key
        with pytest.raises(InvalidSignature):
            _verify_pq_prekey(bundle["signing_key"], {**prekey, "key_id": prekey["key_id"] + 1})


def test_a_new_device_has_a_last_resort_key_and_the_default_one_time_pq_keys() -> None:
    keys = DeviceKeys.generate(one_time=0)
    assert keys.pq_last_resort_prekey is not None
    assert keys.pq_one_time_count == DEFAULT_PQ_ONE_TIME_PREKEYS == 20
    assert DeviceKeys.generate(one_time=0, pq_one_time=0).pq_one_time_count == 0


def test_added_pq_one_time_prekeys_are_signed_returned_for_upload_and_get_fresh_ids() -> None:
    keys = DeviceKeys.generate(one_time=2, pq_one_time=2)
    bundle = keys.public_bundle()
    before = {p["key_id"] for p in bundle["one_time_prekeys"] + bundle["pq_one_time_prekeys"]}
    before |= {bundle["signed_prekey"]["key_id"], bundle["pq_last_resort_prekey"]["key_id"]}
    added = keys.add_pq_one_time_prekeys(3)
    assert len(added) == 3
    assert keys.pq_one_time_count == 5
    assert not before & {p["key_id"] for p in added}
    for prekey in added:
        _verify_pq_prekey(bundle["signing_key"], prekey)
    assert keys.add_one_time_prekeys(1)[0]["key_id"] not in {p["key_id"] for p in added}
    with pytest.raises(ValueError, match="negative"):
        keys.add_pq_one_time_prekeys(-1)


def test_a_reupload_bundle_offers_no_one_time_pq_keys_but_keeps_the_last_resort_one() -> None:
    keys = DeviceKeys.generate(one_time=1, pq_one_time=2)
    bundle = keys.public_bundle(include_one_time=False)
    assert bundle["pq_one_time_prekeys"] == []
    assert bundle["pq_last_resort_prekey"] == keys.public_bundle()["pq_last_resort_prekey"]


def test_pq_prekey_private_matches_the_published_public_key() -> None:
    keys = DeviceKeys.generate(one_time=0, pq_one_time=1)
    bundle = keys.public_bundle()
    for prekey in [bundle["pq_last_resort_prekey"], *bundle["pq_one_time_prekeys"]]:
        public = MLKEM768PublicKey.from_public_bytes(_b64(prekey["public_key"]))
        shared_secret, ciphertext = public.encapsulate()
        assert keys.pq_prekey_private(prekey["key_id"]).decapsulate(ciphertext) == shared_secret
    with pytest.raises(UnknownPrekeyError):
        keys.pq_prekey_private(bundle["signed_prekey"]["key_id"])  # an X25519 prekey's id


def test_consuming_a_one_time_pq_prekey_deletes_it() -> None:
    keys = DeviceKeys.generate(one_time=0, pq_one_time=1)
    key_id = keys.public_bundle()["pq_one_time_prekeys"][0]["key_id"]
    assert keys.is_pq_one_time_prekey(key_id)
    keys.consume_pq_one_time_prekey(key_id)
    assert keys.pq_one_time_count == 0
    assert not keys.is_pq_one_time_prekey(key_id)
    with pytest.raises(UnknownPrekeyError):
        keys.consume_pq_one_time_prekey(key_id)
    with pytest.raises(UnknownPrekeyError):
        keys.pq_prekey_private(key_id)
    assert keys.public_bundle()["pq_one_time_prekeys"] == []


def test_the_last_resort_pq_prekey_is_never_consumed() -> None:
    keys = DeviceKeys.generate(one_time=0, pq_one_time=0)
    last_resort = keys.public_bundle()["pq_last_resort_prekey"]["key_id"]
    assert not keys.is_pq_one_time_prekey(last_resort)
    with pytest.raises(UnknownPrekeyError):
        keys.consume_pq_one_time_prekey(last_resort)
    keys.pq_prekey_private(last_resort)  # still there, for the next set-up


def test_pq_last_resort_rotation_keeps_the_previous_key_for_a_while() -> None:
    keys = DeviceKeys.generate(one_time=0, pq_one_time=0)
    assert keys.pq_last_resort_prekey is not None
    first = keys.pq_last_resort_prekey.key_id
    rotated = keys.rotate_pq_last_resort_prekey()
    second = rotated["key_id"]
    assert second != first
    assert keys.public_bundle()["pq_last_resort_prekey"] == rotated
    _verify_pq_prekey(keys.public_bundle()["signing_key"], rotated)
    keys.pq_prekey_private(first)
    keys.rotate_pq_last_resort_prekey()
    with pytest.raises(UnknownPrekeyError):
        keys.pq_prekey_private(first)
    keys.pq_prekey_private(second)


def test_state_round_trip_keeps_every_pq_key() -> None:
    keys = DeviceKeys.generate(one_time=1, pq_one_time=2)
    keys.rotate_pq_last_resort_prekey()
    restored = DeviceKeys.from_state(keys.to_state())
    assert restored.public_bundle() == keys.public_bundle()
    assert restored.to_state() == keys.to_state()
    assert restored.pq_one_time_count == 2
    for prekey in keys.public_bundle()["pq_one_time_prekeys"]:
        shared_secret, ciphertext = MLKEM768PublicKey.from_public_bytes(
            _b64(prekey["public_key"])
        ).encapsulate()
        assert restored.pq_prekey_private(prekey["key_id"]).decapsulate(ciphertext) == shared_secret


def _state_from_before_pqxdh() -> dict[str, Any]:
    state = DeviceKeys.generate(one_time=2, pq_one_time=0).to_state()
    for member in ("pq_last_resort_prekey", "previous_pq_last_resort_prekeys", "pq_one_time_prekeys"):
        state.pop(member, None)
    return state


def test_a_state_from_before_pqxdh_loads_without_pq_keys_and_writes_back_unchanged() -> None:
    old = _state_from_before_pqxdh()
    keys = DeviceKeys.from_state(old)
    assert keys.pq_last_resort_prekey is None
    assert keys.pq_one_time_count == 0
    bundle = keys.public_bundle()
    assert "pq_last_resort_prekey" not in bundle  # absent: the server keeps whatever it has
    assert bundle["pq_one_time_prekeys"] == []
    assert keys.to_state() == old


def test_the_missing_last_resort_key_is_made_once_with_a_fresh_id() -> None:
    keys = DeviceKeys.from_state(_state_from_before_pqxdh())
    used = {p["key_id"] for p in keys.public_bundle()["one_time_prekeys"]}
    used.add(keys.signed_prekey.key_id)
    made = keys.ensure_pq_last_resort_prekey()
    assert made is not None
    assert made["key_id"] not in used
    _verify_pq_prekey(keys.public_bundle()["signing_key"], made)
    assert keys.public_bundle()["pq_last_resort_prekey"] == made
    assert keys.ensure_pq_last_resort_prekey() is None  # already there: nothing new to publish
    assert DeviceKeys.from_state(keys.to_state()).public_bundle() == keys.public_bundle()


@pytest.mark.parametrize(
    "change",
    [
        {"pq_last_resort_prekey": "not an object"},
        {"pq_one_time_prekeys": [{"key_id": 5, "seed": base64.b64encode(bytes(32)).decode()}]},
        {"pq_one_time_prekeys": "not a list"},
        {"previous_pq_last_resort_prekeys": [None]},
    ],
)
def test_malformed_pq_state_is_refused(change: dict[str, Any]) -> None:
    state = {**DeviceKeys.generate(one_time=0, pq_one_time=1).to_state(), **change}
    with pytest.raises(ValueError, match="must"):
        DeviceKeys.from_state(state)
