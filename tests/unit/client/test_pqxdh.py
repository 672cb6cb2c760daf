"""PQXDH primitives: the signed bytes of a PQ prekey, its verification, ML-KEM-768 encapsulation
and the combined set-up secret; every substitution the server could try is refused."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from veil.client.protocol import pqxdh
from veil.client.protocol.errors import DecryptionError, InvalidBundleError

DH_OUTPUTS = [bytes([n]) * 32 for n in (1, 2, 3, 4)]


def _signed_prekey(key_id: int = 7) -> tuple[Ed25519PrivateKey, bytes, bytes]:
    """A signing key, a fresh ML-KEM-768 public key and the signature over it under `key_id`."""
    signing = Ed25519PrivateKey.generate()
    public_key = pqxdh.public_key_bytes(pqxdh.generate_private_key())
    return signing, public_key, pqxdh.sign_pq_prekey(signing, key_id, public_key)


def _flip(data: bytes, index: int = 0) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def test_the_signed_bytes_are_label_then_big_endian_id_then_public_key() -> None:
    public_key = bytes(range(256)) * 4 + bytes(160)
    assert (
        pqxdh.pq_prekey_signed_bytes(0x01020304, public_key)
        == b"veil/pq-prekey/v1" + b"\x01\x02\x03\x04" + public_key
    )
    with pytest.raises(ValueError, match="1184"):
        pqxdh.pq_prekey_signed_bytes(1, public_key[:-1])


def test_a_genuine_pq_prekey_verifies() -> None:
    signing, public_key, signature = _signed_prekey()
    pqxdh.verify_pq_prekey(signing.public_key().public_bytes_raw(), 7, public_key, signature)


def test_a_signature_moved_to_another_key_id_is_refused() -> None:
    signing, public_key, signature = _signed_prekey(key_id=7)
    with pytest.raises(InvalidBundleError, match="signature"):
        pqxdh.verify_pq_prekey(signing.public_key().public_bytes_raw(), 8, public_key, signature)


def test_a_substituted_public_key_is_refused() -> None:
    signing, _, signature = _signed_prekey()
    other = pqxdh.public_key_bytes(pqxdh.generate_private_key())
    with pytest.raises(InvalidBundleError, match="signature"):
        pqxdh.verify_pq_prekey(signing.public_key().public_bytes_raw(), 7, other, signature)


@pytest.mark.parametrize("index", [0, 600, 1183])
def test_a_public_key_with_one_flipped_bit_is_refused(index: int) -> None:
    signing, public_key, signature = _signed_prekey()
    with pytest.raises(InvalidBundleError):
        pqxdh.verify_pq_prekey(
            signing.public_key().public_bytes_raw(), 7, _flip(public_key, index), signature
        )


def test_a_flipped_signature_or_another_signing_key_is_refused() -> None:
    signing, public_key, signature = _signed_prekey()
    signing_key = signing.public_key().public_bytes_raw()
    with pytest.raises(InvalidBundleError):
        pqxdh.verify_pq_prekey(signing_key, 7, public_key, _flip(signature))
    mallory = Ed25519PrivateKey.generate()
    forged = pqxdh.sign_pq_prekey(mallory, 7, public_key)
    with pytest.raises(InvalidBundleError):
        pqxdh.verify_pq_prekey(signing_key, 7, public_key, forged)


def test_a_correctly_signed_key_that_is_no_ml_kem_key_is_refused() -> None:
    # Every coefficient of 0xFF..FF is out of range (>= q): the library refuses the key.
    signing = Ed25519PrivateKey.generate()
    junk = b"\xff" * pqxdh.PQ_PUBLIC_KEY_SIZE
    signature = pqxdh.sign_pq_prekey(signing, 1, junk)
    with pytest.raises(InvalidBundleError, match="not a valid ML-KEM-768"):
        pqxdh.verify_pq_prekey(signing.public_key().public_bytes_raw(), 1, junk, signature)
    with pytest.raises(InvalidBundleError):
        pqxdh.encapsulate(junk)


def test_encapsulation_and_decapsulation_agree_and_have_the_stated_sizes() -> None:
    private_key = pqxdh.generate_private_key()
    shared_secret, ciphertext = pqxdh.encapsulate(pqxdh.public_key_bytes(private_key))
    assert len(shared_secret) == pqxdh.PQ_SHARED_SECRET_SIZE == 32
    assert len(ciphertext) == pqxdh.PQ_CIPHERTEXT_SIZE == 1088
    assert len(pqxdh.public_key_bytes(private_key)) == pqxdh.PQ_PUBLIC_KEY_SIZE == 1184
    assert pqxdh.decapsulate(private_key, ciphertext) == shared_secret


def test_another_private_key_or_an_altered_ciphertext_gives_another_secret() -> None:
    private_key = pqxdh.generate_private_key()
    shared_secret, ciphertext = pqxdh.encapsulate(pqxdh.public_key_bytes(private_key))
    # Implicit rejection: no error, just a secret the sender does not have.
    assert pqxdh.decapsulate(pqxdh.generate_private_key(), ciphertext) != shared_secret
    assert pqxdh.decapsulate(private_key, _flip(ciphertext, 500)) != shared_secret


@pytest.mark.parametrize("size", [0, 1087, 1089])
def test_a_ciphertext_of_the_wrong_size_is_a_decryption_error(size: int) -> None:
    with pytest.raises(DecryptionError, match="ML-KEM-768"):
        pqxdh.decapsulate(pqxdh.generate_private_key(), bytes(size))


def test_a_private_key_round_trips_through_its_seed() -> None:
    private_key = pqxdh.generate_private_key()
    seed = private_key.private_bytes_raw()
    assert len(seed) == pqxdh.PQ_SEED_SIZE
    restored = pqxdh.private_key_from_seed(seed)
    assert pqxdh.public_key_bytes(restored) == pqxdh.public_key_bytes(private_key)
    with pytest.raises(ValueError, match="64"):
        pqxdh.private_key_from_seed(seed[:32])


def test_the_combined_secret_is_hkdf_over_prefix_dh_outputs_and_the_kem_secret() -> None:
    shared_secret = bytes([9]) * 32
    expected = HKDF(hashes.SHA256(), 32, salt=bytes(32), info=b"Veil PQXDH v2").derive(
        b"\xff" * 32 + b"".join(DH_OUTPUTS) + shared_secret
    )
    assert pqxdh.pqxdh_secret(DH_OUTPUTS, shared_secret) == expected


def test_the_combined_secret_depends_on_the_kem_secret_and_differs_from_x3dh() -> None:
    with_kem = pqxdh.pqxdh_secret(DH_OUTPUTS[:3], bytes(32))
    assert with_kem != pqxdh.pqxdh_secret(DH_OUTPUTS[:3], bytes([1]) + bytes(31))
    # The classical secret over the same inputs (X3DH's info): domain separation by the info.
    classical = HKDF(hashes.SHA256(), 32, salt=bytes(32), info=b"Veil X3DH v2").derive(
        b"\xff" * 32 + b"".join(DH_OUTPUTS[:3]) + bytes(32)
    )
    assert with_kem != classical
    with pytest.raises(ValueError, match="32"):
        pqxdh.pqxdh_secret(DH_OUTPUTS[:3], bytes(31))


def _offer_wire(key_id: int = 7, *, last_resort: bool = False) -> tuple[bytes, dict[str, Any]]:
    signing, public_key, signature = _signed_prekey(key_id)
    return signing.public_key().public_bytes_raw(), {
        "key_id": key_id,
        "public_key": base64.b64encode(public_key).decode(),
        "signature": base64.b64encode(signature).decode(),
        "last_resort": last_resort,
    }


@pytest.mark.parametrize("last_resort", [True, False])
def test_a_claimed_offer_parses_and_verifies(last_resort: bool) -> None:
    signing_key, wire = _offer_wire(last_resort=last_resort)
    offer = pqxdh.PQPrekeyOffer.from_wire(wire)
    assert offer.key_id == 7
    assert offer.last_resort is last_resort
    offer.verify(signing_key)
    with pytest.raises(InvalidBundleError):
        offer.verify(Ed25519PrivateKey.generate().public_key().public_bytes_raw())


@pytest.mark.parametrize(
    "change",
    [
        {"key_id": -1},
        {"key_id": 2**32},
        {"key_id": True},
        {"public_key": base64.b64encode(bytes(1183)).decode()},
        {"signature": base64.b64encode(bytes(63)).decode()},
        {"last_resort": 1},
        {"last_resort": None},
    ],
)
def test_malformed_offers_are_refused(change: dict[str, Any]) -> None:
    _, wire = _offer_wire()
    (member,) = change
    with pytest.raises(ValueError, match=member):
        pqxdh.PQPrekeyOffer.from_wire({**wire, **change})


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
_VALID_SIGNING_KEY, _VALID_OFFER = _offer_wire()


@settings(derandomize=True, database=None, max_examples=200)
@given(
    member=st.sampled_from(sorted(_VALID_OFFER)),
    value=_JSON | st.binary(max_size=1200).map(lambda raw: base64.b64encode(raw).decode()),
)
def test_an_offer_with_any_member_replaced_raises_only_value_error(member: str, value: object) -> None:
    try:
        offer = pqxdh.PQPrekeyOffer.from_wire({**_VALID_OFFER, member: value})
    except ValueError:
        return
    # Whatever parsed must still be checked: anything but the original fails verification.
    try:
        offer.verify(_VALID_SIGNING_KEY)
    except InvalidBundleError:
        return
    # (`last_resort` is the server's hint, not signed: only it may differ.)
    assert offer.key_id == _VALID_OFFER["key_id"]
    assert base64.b64encode(offer.public_key).decode() == _VALID_OFFER["public_key"]
