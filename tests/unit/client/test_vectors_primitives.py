"""Known-answer vectors for the primitives (tests/vectors/primitives.json): the production code must
reproduce every recorded value and open every recorded ciphertext, and the layouts the file's
descriptions state must give the same bytes, so another client can implement from the file alone."""

from __future__ import annotations

import io
import json
import struct
import unicodedata
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from veil.client.protocol import x3dh
from veil.client.protocol.attachments import decrypt_file, encrypt_file
from veil.client.protocol.commit import roster_hash
from veil.client.protocol.envelope import DeviceContext, GroupContext
from veil.client.protocol.framing import SessionInitHeader
from veil.client.protocol.keys import DeviceKeys, SignedPrekey
from veil.client.sdk.keystore import ScryptParams, decrypt_state, encrypt_state

VECTORS = Path(__file__).parents[2] / "vectors" / "primitives.json"
FILE = json.loads(VECTORS.read_text(encoding="utf-8"))
KINDS = ("x3dh", "device_context", "group_context", "roster_hash", "file", "keystore_kdf", "keystore_blob")


def cases(kind: str) -> list[Any]:
    """The cases of one kind, each as a pytest param named after the case."""
    return [pytest.param(case, id=case["name"]) for case in FILE["cases"] if case["kind"] == kind]


def _hex(case: dict[str, Any], key: str) -> bytes:
    return bytes.fromhex(case[key])


def _length_prefixed(*fields: bytes) -> bytes:
    # Written out from the file's description, not imported, so the description itself is checked.
    return b"".join(struct.pack(">I", len(field)) + field for field in fields)


def test_the_file_states_its_origin_and_covers_every_kind() -> None:
    assert FILE["generated_by"].startswith("python -m tests.vectors.make_primitives")
    assert FILE["description"]
    names = [case["name"] for case in FILE["cases"]]
    assert len(names) == len(set(names))
    assert {case["kind"] for case in FILE["cases"]} == set(KINDS)
    assert all(case["description"] for case in FILE["cases"])


# --- X3DH -----------------------------------------------------------------------------------------


def _responder_keys(case: dict[str, Any]) -> DeviceKeys:
    signed_prekey = X25519PrivateKey.from_private_bytes(_hex(case, "signed_prekey_private"))
    one_time = (
        {}
        if case["one_time_prekey_id"] is None
        else {
            case["one_time_prekey_id"]: X25519PrivateKey.from_private_bytes(
                _hex(case, "one_time_prekey_private")
            )
        }
    )
    return DeviceKeys(
        identity=X25519PrivateKey.from_private_bytes(_hex(case, "responder_identity_private")),
        signing=Ed25519PrivateKey.from_private_bytes(_hex(case, "responder_signing_private")),
        signed_prekey=SignedPrekey(
            case["signed_prekey_id"], signed_prekey, _hex(case, "signed_prekey_signature")
        ),
        one_time_prekeys=one_time,
        next_key_id=case["signed_prekey_id"] + 2,
    )


def _public(case: dict[str, Any], private: str) -> bytes:
    return X25519PrivateKey.from_private_bytes(_hex(case, private)).public_key().public_bytes_raw()


@pytest.mark.parametrize("case", cases("x3dh"))
def test_x3dh_public_keys_and_signed_prekey_signature(case: dict[str, Any]) -> None:
    keys = _responder_keys(case)
    assert keys.identity_key == _hex(case, "responder_identity_key")
    assert keys.signing_key == _hex(case, "responder_signing_key")
    assert _public(case, "signed_prekey_private") == _hex(case, "signed_prekey_public")
    assert _public(case, "initiator_identity_private") == _hex(case, "initiator_identity_key")
    assert _public(case, "initiator_ephemeral_private") == _hex(case, "initiator_ephemeral_key")
    if case["one_time_prekey_id"] is not None:
        assert _public(case, "one_time_prekey_private") == _hex(case, "one_time_prekey_public")
    Ed25519PublicKey.from_public_bytes(keys.signing_key).verify(
        _hex(case, "signed_prekey_signature"), _hex(case, "signed_prekey_public")
    )
    # Ed25519 is deterministic: signing again gives the recorded bytes.
    assert keys.signing.sign(_hex(case, "signed_prekey_public")) == _hex(case, "signed_prekey_signature")


@pytest.mark.parametrize("case", cases("x3dh"))
def test_x3dh_dh_outputs_and_kdf_input_follow_the_description(case: dict[str, Any]) -> None:
    def dh(private: str, public: str) -> bytes:
        return X25519PrivateKey.from_private_bytes(_hex(case, private)).exchange(
            X25519PublicKey.from_public_bytes(_hex(case, public))
        )

    expected = [
        dh("initiator_identity_private", "signed_prekey_public"),
        dh("initiator_ephemeral_private", "responder_identity_key"),
        dh("initiator_ephemeral_private", "signed_prekey_public"),
    ]
    if case["one_time_prekey_id"] is not None:
        expected.append(dh("initiator_ephemeral_private", "one_time_prekey_public"))
    assert [bytes.fromhex(value) for value in case["dh"]] == expected
    assert _hex(case, "ikm") == b"\xff" * 32 + b"".join(expected)
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=_hex(case, "salt"), info=_hex(case, "info"))
    assert hkdf.derive(_hex(case, "ikm")) == _hex(case, "shared_secret")
    assert _hex(case, "salt") == bytes(32)


@pytest.mark.parametrize("case", cases("x3dh"))
def test_x3dh_responder_derives_the_recorded_secret(case: dict[str, Any]) -> None:
    header = SessionInitHeader(
        identity_key=_hex(case, "initiator_identity_key"),
        ephemeral_key=_hex(case, "initiator_ephemeral_key"),
        signed_prekey_id=case["signed_prekey_id"],
        one_time_prekey_id=case["one_time_prekey_id"],
    )
    assert x3dh.respond(_responder_keys(case), header) == _hex(case, "shared_secret")


@pytest.mark.parametrize("case", cases("x3dh"))
def test_x3dh_initiator_derives_the_recorded_secret_and_header(case: dict[str, Any]) -> None:
    bundle = x3dh.PrekeyBundle(
        device_id=None,
        identity_key=_hex(case, "responder_identity_key"),
        signing_key=_hex(case, "responder_signing_key"),
        signed_prekey_id=case["signed_prekey_id"],
        signed_prekey=_hex(case, "signed_prekey_public"),
        signature=_hex(case, "signed_prekey_signature"),
        one_time_prekey_id=case["one_time_prekey_id"],
        one_time_prekey=None if case["one_time_prekey_id"] is None else _hex(case, "one_time_prekey_public"),
    )
    secret, header = x3dh.initiate(
        X25519PrivateKey.from_private_bytes(_hex(case, "initiator_identity_private")),
        bundle,
        ephemeral=X25519PrivateKey.from_private_bytes(_hex(case, "initiator_ephemeral_private")),
    )
    assert secret == _hex(case, "shared_secret")
    assert header.identity_key == _hex(case, "initiator_identity_key")
    assert header.ephemeral_key == _hex(case, "initiator_ephemeral_key")
    assert (header.signed_prekey_id, header.one_time_prekey_id) == (
        case["signed_prekey_id"],
        case["one_time_prekey_id"],
    )


def test_x3dh_secrets_with_and_without_one_time_prekey_differ() -> None:
    secrets = {case["shared_secret"] for case in FILE["cases"] if case["kind"] == "x3dh"}
    assert len(secrets) == 2


# --- Associated data and roster hash --------------------------------------------------------------


@pytest.mark.parametrize("case", cases("device_context"))
def test_device_context_encoding(case: dict[str, Any]) -> None:
    context = DeviceContext(
        case["recipient_device_id"], case["sender_id"], case["sender_device_id"], case["content_type"]
    )
    assert context.encode() == _hex(case, "encoding")
    assert _hex(case, "encoding") == _length_prefixed(
        b"veil/device-message/v1",
        uuid.UUID(case["recipient_device_id"]).bytes,
        uuid.UUID(case["sender_id"]).bytes,
        uuid.UUID(case["sender_device_id"]).bytes,
        case["content_type"].encode("ascii"),
    )
    # What is bound is the 16 raw bytes: another spelling of the same ids encodes the same.
    upper = DeviceContext(
        case["recipient_device_id"].upper(),
        case["sender_id"].upper(),
        "{" + case["sender_device_id"] + "}",
        case["content_type"],
    )
    assert upper.encode() == _hex(case, "encoding")


@pytest.mark.parametrize("case", cases("group_context"))
def test_group_context_encoding(case: dict[str, Any]) -> None:
    context = GroupContext(
        conversation_id=case["conversation_id"],
        message_id=case["message_id"],
        sender_id=case["sender_id"],
        sender_device_id=case["sender_device_id"],
        content_type=case["content_type"],
        key_epoch=case["key_epoch"],
        roster_hash=_hex(case, "roster_hash"),
        parent_id=case["parent_id"],
    )
    assert context.encode() == _hex(case, "encoding")
    assert _hex(case, "encoding") == _length_prefixed(
        b"veil/group-message/v2",
        uuid.UUID(case["conversation_id"]).bytes,
        uuid.UUID(case["message_id"]).bytes,
        uuid.UUID(case["sender_id"]).bytes,
        uuid.UUID(case["sender_device_id"]).bytes,
        case["content_type"].encode("ascii"),
        struct.pack(">Q", case["key_epoch"]),
        _hex(case, "roster_hash"),
        b"" if case["parent_id"] is None else uuid.UUID(case["parent_id"]).bytes,
    )


@pytest.mark.parametrize("case", cases("roster_hash"))
def test_roster_hash(case: dict[str, Any]) -> None:
    assert roster_hash(case["user_ids"]) == _hex(case, "roster_hash")
    respelled = [user_id.upper() for user_id in reversed(case["user_ids"])]
    assert roster_hash(respelled) == _hex(case, "roster_hash")
    ids = sorted(uuid.UUID(user_id).bytes for user_id in case["user_ids"])
    digest = hashes.Hash(hashes.SHA256())
    digest.update(b"veil/roster/v1" + b"".join(ids))
    assert digest.finalize() == _hex(case, "roster_hash")
    group_hashes = {c["roster_hash"] for c in FILE["cases"] if c["kind"] == "group_context"}
    assert group_hashes == {case["roster_hash"]}


# --- File encryption ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", cases("file"))
def test_file_encryption_reproduces_the_recorded_ciphertext(case: dict[str, Any]) -> None:
    sink = io.BytesIO()
    result = encrypt_file(
        io.BytesIO(_hex(case, "plaintext")), sink, chunk_size=case["chunk_size"], key=_hex(case, "key")
    )
    assert sink.getvalue() == _hex(case, "ciphertext")
    assert result.sha256.hex() == case["sha256"]
    assert result.size == case["size"] == len(_hex(case, "ciphertext"))
    assert result.plaintext_size == len(_hex(case, "plaintext"))


@pytest.mark.parametrize("case", cases("file"))
def test_file_layout_and_each_chunk_opens_with_its_recorded_nonce(case: dict[str, Any]) -> None:
    header = _hex(case, "header")
    assert header == b"VEILF\x01" + struct.pack(">I", case["chunk_size"])
    sealed_chunks = [bytes.fromhex(chunk["ciphertext"]) for chunk in case["chunks"]]
    assert _hex(case, "ciphertext") == header + b"".join(sealed_chunks)
    aead = AESGCM(_hex(case, "key"))
    for index, chunk in enumerate(case["chunks"]):
        last = index == len(case["chunks"]) - 1
        assert bytes.fromhex(chunk["nonce"]) == index.to_bytes(11, "big") + bytes([last])
        opened = aead.decrypt(bytes.fromhex(chunk["nonce"]), bytes.fromhex(chunk["ciphertext"]), header)
        assert opened == bytes.fromhex(chunk["plaintext"])
    assert b"".join(bytes.fromhex(c["plaintext"]) for c in case["chunks"]) == _hex(case, "plaintext")


@pytest.mark.parametrize("case", cases("file"))
def test_file_decrypts_back_to_the_plaintext(case: dict[str, Any]) -> None:
    sink = io.BytesIO()
    written = decrypt_file(io.BytesIO(_hex(case, "ciphertext")), sink, _hex(case, "key"))
    assert sink.getvalue() == _hex(case, "plaintext")
    assert written == len(_hex(case, "plaintext"))


def test_file_vectors_cover_a_short_last_chunk_an_exact_multiple_and_an_empty_file() -> None:
    files = [case for case in FILE["cases"] if case["kind"] == "file"]
    remainders = {len(_hex(case, "plaintext")) % case["chunk_size"] for case in files}
    lengths = {len(case["chunks"]) for case in files}
    assert 0 in remainders and len(remainders) > 1
    assert {1, 2, 3} <= lengths
    assert any(case["plaintext"] == "" for case in files)


# --- Keystore -------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", cases("keystore_kdf"))
def test_keystore_kdf_uses_the_production_parameters(case: dict[str, Any]) -> None:
    params = ScryptParams()
    assert (params.log2_n, params.r, params.p) == (case["log2_n"], case["r"], case["p"]) == (17, 8, 1)
    assert params.derive(case["passphrase"], _hex(case, "salt")) == _hex(case, "key")
    password = unicodedata.normalize("NFC", case["passphrase"]).encode("utf-8")
    assert password == _hex(case, "password")
    scrypt = Scrypt(salt=_hex(case, "salt"), length=32, n=2 ** case["log2_n"], r=case["r"], p=case["p"])
    assert scrypt.derive(password) == _hex(case, "key")


def test_keystore_kdf_normalises_the_passphrase_to_nfc() -> None:
    unicode_case = next(case for case in FILE["cases"] if case["name"] == "keystore_kdf_unicode_nfc")
    passphrase = unicode_case["passphrase"]
    # Typed decomposed (e + U+0301), so the key recorded for it is that of the composed form.
    assert unicodedata.normalize("NFC", passphrase) != passphrase
    assert _hex(unicode_case, "password") == unicodedata.normalize("NFC", passphrase).encode("utf-8")


@contextmanager
def _fixed_urandom(*draws: bytes) -> Iterator[None]:
    """`encrypt_state`'s random salt and nonce, replaced by the recorded ones in order."""
    pending = list(draws)

    def urandom(size: int) -> bytes:
        value = pending.pop(0)
        assert len(value) == size
        return value

    with mock.patch("veil.client.sdk.keystore.os.urandom", urandom):
        yield
    assert not pending


@pytest.mark.parametrize("case", cases("keystore_blob"))
def test_keystore_blob_decrypts_with_the_passphrase(case: dict[str, Any]) -> None:
    assert decrypt_state(_hex(case, "blob"), case["passphrase"]) == case["state"]


@pytest.mark.parametrize("case", cases("keystore_blob"))
def test_keystore_blob_layout_follows_the_description(case: dict[str, Any]) -> None:
    blob = _hex(case, "blob")
    params = bytes([1, case["log2_n"], case["r"], case["p"]])
    header = b"VEILKS" + params + _hex(case, "salt") + _hex(case, "nonce")
    assert blob.startswith(header)
    plaintext = json.dumps(case["state"], separators=(",", ":"), sort_keys=True).encode("utf-8")
    assert plaintext == _hex(case, "plaintext")
    # The key is the keystore_kdf_ascii case's (same passphrase, salt and parameters).
    kdf_case = next(c for c in FILE["cases"] if c["name"] == "keystore_kdf_ascii")
    same_inputs = ("passphrase", "salt", "log2_n", "r", "p")
    assert [case[name] for name in same_inputs] == [kdf_case[name] for name in same_inputs]
    key = _hex(kdf_case, "key")
    assert ChaCha20Poly1305(key).decrypt(_hex(case, "nonce"), blob[len(header) :], header) == plaintext
    # And the production writer, given the recorded salt and nonce, writes exactly these bytes.
    with _fixed_urandom(_hex(case, "salt"), _hex(case, "nonce")):
        assert encrypt_state(case["state"], case["passphrase"]) == blob
