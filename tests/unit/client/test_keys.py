"""Device keys and the published bundle: exact `PUT /v1/keys` shape, sizes and signature."""

from __future__ import annotations

import base64

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from veil.client.protocol.errors import UnknownPrekeyError
from veil.client.protocol.keys import DeviceKeys


def _b64(value: object) -> bytes:
    assert isinstance(value, str)
    raw = base64.b64decode(value, validate=True)
    assert base64.b64encode(raw).decode() == value  # canonical, padded
    return raw


def test_bundle_has_exactly_the_put_keys_shape_and_sizes() -> None:
    keys = DeviceKeys.generate(one_time=5)
    bundle = keys.public_bundle()
    assert set(bundle) == {"identity_key", "signing_key", "signed_prekey", "one_time_prekeys"}
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


def test_state_round_trip_keeps_every_key() -> None:
    keys = DeviceKeys.generate(one_time=2)
    keys.rotate_signed_prekey()
    restored = DeviceKeys.from_state(keys.to_state())
    assert restored.public_bundle() == keys.public_bundle()
    assert restored.to_state() == keys.to_state()
    assert restored.fingerprint() == keys.fingerprint()
