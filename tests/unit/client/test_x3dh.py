"""X3DH set-up: both sides derive the same secret; a bad bundle is refused before any key is made."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from veil.client.protocol import x3dh
from veil.client.protocol.errors import InvalidBundleError, UnknownPrekeyError
from veil.client.protocol.keys import DeviceKeys


def _claim(keys: DeviceKeys, *, with_one_time: bool) -> dict[str, Any]:
    bundle = keys.public_bundle()
    return {
        "device_id": None,
        "identity_key": bundle["identity_key"],
        "signing_key": bundle["signing_key"],
        "signed_prekey": bundle["signed_prekey"],
        "one_time_prekey": bundle["one_time_prekeys"][0] if with_one_time else None,
    }


@pytest.mark.parametrize("with_one_time", [True, False])
def test_initiator_and_responder_agree(with_one_time: bool) -> None:
    alice, bob = DeviceKeys.generate(one_time=0), DeviceKeys.generate(one_time=1)
    bundle = x3dh.PrekeyBundle.from_wire(_claim(bob, with_one_time=with_one_time))
    secret, header = x3dh.initiate(alice.identity, bundle)
    assert len(secret) == 32
    assert header.identity_key == alice.identity_key
    assert (header.one_time_prekey_id is not None) is with_one_time
    assert x3dh.respond(bob, header) == secret


def test_a_different_responder_gets_a_different_secret() -> None:
    alice, bob, eve = (DeviceKeys.generate(one_time=1) for _ in range(3))
    secret, header = x3dh.initiate(
        alice.identity, x3dh.PrekeyBundle.from_wire(_claim(bob, with_one_time=False))
    )
    eve.signed_prekey = bob.signed_prekey  # even with Bob's signed prekey, Eve lacks his identity key
    assert x3dh.respond(eve, header) != secret


@pytest.mark.parametrize("field", ["public_key", "signature"])
def test_tampered_signed_prekey_is_refused(field: str) -> None:
    alice, bob = DeviceKeys.generate(one_time=0), DeviceKeys.generate(one_time=0)
    claim = _claim(bob, with_one_time=False)
    raw = bytearray(base64.b64decode(claim["signed_prekey"][field]))
    raw[0] ^= 0x01
    claim["signed_prekey"] = {**claim["signed_prekey"], field: base64.b64encode(bytes(raw)).decode()}
    with pytest.raises(InvalidBundleError):
        x3dh.initiate(alice.identity, x3dh.PrekeyBundle.from_wire(claim))


def test_a_substituted_signing_key_is_refused() -> None:
    alice, bob, mallory = (DeviceKeys.generate(one_time=0) for _ in range(3))
    claim = _claim(bob, with_one_time=False)
    claim["signing_key"] = mallory.public_bundle()["signing_key"]
    with pytest.raises(InvalidBundleError):
        x3dh.initiate(alice.identity, x3dh.PrekeyBundle.from_wire(claim))


@pytest.mark.parametrize(
    "change",
    [
        {"identity_key": base64.b64encode(bytes(31)).decode()},
        {"signing_key": "not base64!"},
        {"signed_prekey": None},
        {"one_time_prekey": {"key_id": -1, "public_key": base64.b64encode(bytes(32)).decode()}},
    ],
)
def test_malformed_bundles_are_refused(change: dict[str, Any]) -> None:
    claim = {**_claim(DeviceKeys.generate(one_time=1), with_one_time=True), **change}
    with pytest.raises(InvalidBundleError):
        x3dh.PrekeyBundle.from_wire(claim)


def test_a_low_order_prekey_is_refused() -> None:
    alice, bob = DeviceKeys.generate(one_time=0), DeviceKeys.generate(one_time=1)
    claim = _claim(bob, with_one_time=True)
    claim["one_time_prekey"] = {"key_id": 7, "public_key": base64.b64encode(bytes(32)).decode()}
    with pytest.raises(InvalidBundleError):
        x3dh.initiate(alice.identity, x3dh.PrekeyBundle.from_wire(claim))


def test_responder_refuses_unknown_prekeys() -> None:
    alice, bob = DeviceKeys.generate(one_time=0), DeviceKeys.generate(one_time=1)
    _, header = x3dh.initiate(alice.identity, x3dh.PrekeyBundle.from_wire(_claim(bob, with_one_time=True)))
    assert header.one_time_prekey_id is not None
    bob.consume_one_time_prekey(header.one_time_prekey_id)
    with pytest.raises(UnknownPrekeyError):
        x3dh.respond(bob, header)


def test_the_ephemeral_key_is_fresh_unless_a_vector_fixes_it() -> None:
    alice, bob = DeviceKeys.generate(one_time=0), DeviceKeys.generate(one_time=0)
    bundle = x3dh.PrekeyBundle.from_wire(_claim(bob, with_one_time=False))
    first, second = x3dh.initiate(alice.identity, bundle), x3dh.initiate(alice.identity, bundle)
    assert first[1].ephemeral_key != second[1].ephemeral_key and first[0] != second[0]
    fixed = X25519PrivateKey.generate()
    again = [x3dh.initiate(alice.identity, bundle, ephemeral=fixed) for _ in range(2)]
    assert again[0] == again[1]
    assert again[0][1].ephemeral_key == fixed.public_key().public_bytes_raw()
    assert x3dh.respond(bob, again[0][1]) == again[0][0]
