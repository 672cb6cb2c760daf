"""Write tests/vectors/primitives.json: known answers for X3DH, the associated-data encodings, the
roster hash, file encryption and the keystore, computed with the production code from fixed inputs.

Run once (`python -m tests.vectors.make_primitives`); the file it writes is the spec other clients
implement against, so it is never regenerated unless a format version changes. Every private key,
id, salt and nonce is fixed here: no randomness reaches the output (the keystore's two `os.urandom`
draws are replaced by the fixed salt and nonce while the blob is made).
"""

from __future__ import annotations

import hashlib
import io
import json
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from veil.client.protocol import x3dh
from veil.client.protocol.attachments import encrypt_file
from veil.client.protocol.commit import roster_hash
from veil.client.protocol.envelope import DeviceContext, GroupContext
from veil.client.protocol.framing import SessionInitHeader
from veil.client.protocol.keys import DeviceKeys, SignedPrekey, public_bytes
from veil.client.sdk.keystore import ScryptParams, encrypt_state

OUTPUT = Path(__file__).with_name("primitives.json")
GENERATED_BY = (
    "python -m tests.vectors.make_primitives (run once; the file is the spec: never regenerate unless "
    "the format version changes)"
)

DESCRIPTION = """\
Known answers for the primitives of Veil's client protocol (docs/e2ee.md), for anyone writing \
another client. All bytes are lowercase hex; integers are JSON numbers; UUIDs are canonical strings \
(what is authenticated is always their 16 raw bytes, so spelling never matters). Private keys were \
made as SHA-256("veil/vectors/primitives/" || name) and are given raw (X25519: the 32-byte scalar \
before clamping, as RFC 7748 and `cryptography` take it; Ed25519: the 32-byte seed). \
length_prefixed(f1, f2, ...) means u32_be(len(f1)) || f1 || u32_be(len(f2)) || f2 || ...; \
HKDF is RFC 5869 with SHA-256. Each case has a `kind` and its own `description` saying exactly how \
its outputs follow from its inputs. Kinds: x3dh (session set-up secret, responder side), \
device_context and group_context (the associated data binding envelope metadata), roster_hash, \
file (chunked AES-256-GCM attachment encryption), keystore_kdf (Scrypt of the passphrase) and \
keystore_blob (a whole keystore file). The tests in tests/unit/client/test_vectors_primitives.py \
recompute every value with the production code and decrypt every ciphertext."""

X3DH_INFO = b"Veil X3DH v2"
X3DH_PREFIX = b"\xff" * 32
X3DH_SALT = bytes(32)

RECIPIENT_DEVICE_ID = "6f1c2b7e-3a4d-4e5f-8a9b-0c1d2e3f4a5b"
SENDER_ID = "1a2b3c4d-5e6f-4a8b-9c0d-1e2f3a4b5c6d"
SENDER_DEVICE_ID = "2b3c4d5e-6f7a-4b9c-8d1e-2f3a4b5c6d7e"
CONVERSATION_ID = "3c4d5e6f-7a8b-4c0d-9e2f-3a4b5c6d7e8f"
MESSAGE_ID = "4d5e6f7a-8b9c-4d1e-8f3a-4b5c6d7e8f9a"
PARENT_ID = "5e6f7a8b-9c0d-4e2f-9a4b-5c6d7e8f9a0b"
OTHER_MEMBER_ID = "7a8b9c0d-1e2f-4a4b-8c6d-7e8f9a0b1c2d"

FILE_KEY_NAME = "file-key"
FILE_CHUNK_SIZE = 16
FILE_TAG_SIZE = 16
FILE_HEADER_SIZE = 10

KEYSTORE_SALT = bytes.fromhex("00112233445566778899aabbccddeeff")
KEYSTORE_NONCE = bytes.fromhex("a0a1a2a3a4a5a6a7a8a9aaab")
KEYSTORE_PASSPHRASE = "correct horse battery staple"
# "café au lait" with the é decomposed (e + U+0301): the keystore normalises to NFC before UTF-8.
KEYSTORE_UNICODE_PASSPHRASE = "cafe\u0301 au lait"
KEYSTORE_STATE: dict[str, Any] = {
    "version": 1,
    "purpose": "primitives vector",
    "numbers": [1, 2, 3],
    "nested": {"b": True, "a": None},
    "text": "caf\u00e9",
}


def fixed_secret(name: str) -> bytes:
    """The 32 fixed bytes every private input of these vectors is made from."""
    return hashlib.sha256(b"veil/vectors/primitives/" + name.encode("ascii")).digest()


def _x25519(name: str) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(fixed_secret(name))


def _dh(private_key: X25519PrivateKey, public_key: bytes) -> bytes:
    return private_key.exchange(X25519PublicKey.from_public_bytes(public_key))


def x3dh_case(*, with_one_time_prekey: bool) -> dict[str, Any]:
    """Bob's device keys from fixed secrets, Alice's identity and ephemeral keys, and the secret."""
    identity, ephemeral = _x25519("initiator-identity"), _x25519("initiator-ephemeral")
    signing = Ed25519PrivateKey.from_private_bytes(fixed_secret("responder-signing"))
    signed_prekey_private = _x25519("responder-signed-prekey")
    one_time_private = _x25519("responder-one-time-prekey")
    signed_prekey = SignedPrekey(1, signed_prekey_private, signing.sign(public_bytes(signed_prekey_private)))
    one_time_id = 2 if with_one_time_prekey else None
    keys = DeviceKeys(
        identity=_x25519("responder-identity"),
        signing=signing,
        signed_prekey=signed_prekey,
        one_time_prekeys={2: one_time_private},
        next_key_id=3,
    )
    header = SessionInitHeader(
        identity_key=public_bytes(identity),
        ephemeral_key=public_bytes(ephemeral),
        signed_prekey_id=signed_prekey.key_id,
        one_time_prekey_id=one_time_id,
    )
    dhs = [
        _dh(identity, public_bytes(signed_prekey_private)),
        _dh(ephemeral, keys.identity_key),
        _dh(ephemeral, public_bytes(signed_prekey_private)),
    ]
    if with_one_time_prekey:
        dhs.append(_dh(ephemeral, public_bytes(one_time_private)))
    shared_secret = x3dh.respond(keys, header)
    ikm = X3DH_PREFIX + b"".join(dhs)
    expected = HKDF(algorithm=hashes.SHA256(), length=32, salt=X3DH_SALT, info=X3DH_INFO).derive(ikm)
    # The description must say how the secret is made: refuse to write a vector it does not match.
    assert shared_secret == expected, f"x3dh.respond no longer uses HKDF info {X3DH_INFO!r}"
    return {
        "name": "x3dh_with_one_time_prekey" if with_one_time_prekey else "x3dh_without_one_time_prekey",
        "kind": "x3dh",
        "description": (
            "X3DH rev. 1 with X25519 and SHA-256. A = initiator, B = responder. "
            "DH1 = X25519(IK_a, SPK_b), DH2 = X25519(EK_a, IK_b), DH3 = X25519(EK_a, SPK_b)"
            + (", DH4 = X25519(EK_a, OPK_b)" if with_one_time_prekey else " (no one-time prekey: no DH4)")
            + ". ikm = 32 bytes 0xff || DH1 || DH2 || DH3"
            + (" || DH4" if with_one_time_prekey else "")
            + ". shared_secret = HKDF-SHA256(ikm, salt = 32 zero bytes, info = `info`, length 32). "
            "The responder computes the same with its private keys (DH1 = X25519(SPK_b, IK_a), ...). "
            "signed_prekey_signature is B's Ed25519 signing key's signature over the raw 32-byte "
            "signed prekey public key (Ed25519 is deterministic, so it is fixed too)."
        ),
        "responder_identity_private": keys.identity.private_bytes_raw().hex(),
        "responder_identity_key": keys.identity_key.hex(),
        "responder_signing_private": signing.private_bytes_raw().hex(),
        "responder_signing_key": keys.signing_key.hex(),
        "signed_prekey_id": signed_prekey.key_id,
        "signed_prekey_private": signed_prekey_private.private_bytes_raw().hex(),
        "signed_prekey_public": public_bytes(signed_prekey_private).hex(),
        "signed_prekey_signature": signed_prekey.signature.hex(),
        "one_time_prekey_id": one_time_id,
        "one_time_prekey_private": one_time_private.private_bytes_raw().hex() if one_time_id else None,
        "one_time_prekey_public": public_bytes(one_time_private).hex() if one_time_id else None,
        "initiator_identity_private": identity.private_bytes_raw().hex(),
        "initiator_identity_key": public_bytes(identity).hex(),
        "initiator_ephemeral_private": ephemeral.private_bytes_raw().hex(),
        "initiator_ephemeral_key": public_bytes(ephemeral).hex(),
        "dh": [dh.hex() for dh in dhs],
        "ikm": ikm.hex(),
        "salt": X3DH_SALT.hex(),
        "info": X3DH_INFO.hex(),
        "shared_secret": shared_secret.hex(),
    }


def device_context_case(content_type: str) -> dict[str, Any]:
    context = DeviceContext(RECIPIENT_DEVICE_ID, SENDER_ID, SENDER_DEVICE_ID, content_type)
    return {
        "name": f"device_context_{content_type}",
        "kind": "device_context",
        "description": (
            "DeviceContext.encode(): the metadata a device-to-device message is bound to, "
            'length_prefixed("veil/device-message/v1", recipient_device_id (16 raw bytes), '
            "sender_id (16), sender_device_id (16), content_type (ASCII)). content_type is one of "
            "session_init, session_message, sender_key. It is the first part of the pairwise AEAD's "
            "associated data (the double_ratchet vectors show the rest)."
        ),
        "recipient_device_id": RECIPIENT_DEVICE_ID,
        "sender_id": SENDER_ID,
        "sender_device_id": SENDER_DEVICE_ID,
        "content_type": content_type,
        "encoding": context.encode().hex(),
    }


def _roster_user_ids() -> list[str]:
    return [SENDER_ID, OTHER_MEMBER_ID]


def group_context_case(*, with_parent: bool) -> dict[str, Any]:
    context = GroupContext(
        conversation_id=CONVERSATION_ID,
        message_id=MESSAGE_ID,
        sender_id=SENDER_ID,
        sender_device_id=SENDER_DEVICE_ID,
        content_type="text",
        key_epoch=7,
        roster_hash=roster_hash(_roster_user_ids()),
        parent_id=PARENT_ID if with_parent else None,
    )
    return {
        "name": "group_context_with_parent" if with_parent else "group_context_without_parent",
        "kind": "group_context",
        "description": (
            "GroupContext.encode(): the metadata a group message is bound to, "
            'length_prefixed("veil/group-message/v2", conversation_id (16 raw bytes), message_id (16), '
            "sender_id (16), sender_device_id (16), content_type (ASCII, 1 to 64 characters), "
            "key_epoch (u64 big-endian), roster_hash (32), parent_id (16 raw bytes, or the empty field "
            "when the message has no parent)). roster_hash is the roster_hash case's value."
        ),
        "conversation_id": context.conversation_id,
        "message_id": context.message_id,
        "sender_id": context.sender_id,
        "sender_device_id": context.sender_device_id,
        "content_type": context.content_type,
        "key_epoch": context.key_epoch,
        "roster_hash": context.roster_hash.hex(),
        "parent_id": context.parent_id,
        "encoding": context.encode().hex(),
    }


def roster_hash_case() -> dict[str, Any]:
    user_ids = _roster_user_ids()
    return {
        "name": "roster_hash_two_members",
        "kind": "roster_hash",
        "description": (
            'roster_hash(user_ids) = SHA-256("veil/roster/v1" || the distinct 16-byte user ids sorted '
            "as bytes, concatenated): one value per set of members, whatever the order or spelling."
        ),
        "user_ids": user_ids,
        "roster_hash": roster_hash(user_ids).hex(),
    }


def file_case(name: str, plaintext: bytes) -> dict[str, Any]:
    key = fixed_secret(FILE_KEY_NAME)
    sink = io.BytesIO()
    result = encrypt_file(io.BytesIO(plaintext), sink, chunk_size=FILE_CHUNK_SIZE, key=key)
    ciphertext = sink.getvalue()
    header, body = ciphertext[:FILE_HEADER_SIZE], ciphertext[FILE_HEADER_SIZE:]
    block = FILE_CHUNK_SIZE + FILE_TAG_SIZE
    sealed_chunks = [body[i : i + block] for i in range(0, len(body), block)]
    chunks = []
    for index, sealed in enumerate(sealed_chunks):
        last = index == len(sealed_chunks) - 1
        nonce = index.to_bytes(11, "big") + (b"\x01" if last else b"\x00")
        start = index * FILE_CHUNK_SIZE
        chunks.append(
            {
                "plaintext": plaintext[start : start + FILE_CHUNK_SIZE].hex(),
                "nonce": nonce.hex(),
                "ciphertext": sealed.hex(),
            }
        )
    return {
        "name": name,
        "kind": "file",
        "description": (
            'encrypt_file with a fixed key and chunk size. header = "VEILF" || version 0x01 || '
            "chunk_size (u32 big-endian). The plaintext is cut into chunk_size pieces (the last may "
            "be shorter; an empty file is one empty chunk; a file whose length is a multiple of "
            "chunk_size has no empty chunk after its last full one). Chunk i is "
            "AES-256-GCM(key, nonce_i, piece_i, aad = header), ciphertext then 16-byte tag, with "
            "nonce_i = i (11 bytes big-endian) || 0x01 for the last chunk, 0x00 otherwise. "
            "ciphertext = header || chunk 0 || chunk 1 || ...; sha256 is that of the whole ciphertext "
            "(the digest the file message carries) and size its length."
        ),
        "key": key.hex(),
        "chunk_size": FILE_CHUNK_SIZE,
        "plaintext": plaintext.hex(),
        "header": header.hex(),
        "chunks": chunks,
        "ciphertext": ciphertext.hex(),
        "sha256": result.sha256.hex(),
        "size": result.size,
    }


def keystore_kdf_case(name: str, passphrase: str) -> dict[str, Any]:
    params = ScryptParams()
    normalised = unicodedata.normalize("NFC", passphrase).encode("utf-8")
    return {
        "name": name,
        "kind": "keystore_kdf",
        "description": (
            "The keystore key: Scrypt(password = UTF-8 of the NFC-normalised passphrase, salt, "
            "N = 2**log2_n, r, p, length 32), with the production parameters (N = 2**17, r = 8, p = 1)."
        ),
        "passphrase": passphrase,
        "password": normalised.hex(),
        "salt": KEYSTORE_SALT.hex(),
        "log2_n": params.log2_n,
        "r": params.r,
        "p": params.p,
        "key": params.derive(passphrase, KEYSTORE_SALT).hex(),
    }


@contextmanager
def fixed_keystore_randomness(salt: bytes, nonce: bytes) -> Iterator[None]:
    """Make `encrypt_state`'s two `os.urandom` draws (salt, then nonce) return fixed bytes."""
    draws = iter([salt, nonce])

    def urandom(size: int) -> bytes:
        value = next(draws)
        assert len(value) == size
        return value

    with mock.patch("veil.client.sdk.keystore.os.urandom", urandom):
        yield
    assert next(draws, None) is None, "encrypt_state no longer draws exactly a salt and a nonce"


def keystore_blob_case() -> dict[str, Any]:
    params = ScryptParams()
    with fixed_keystore_randomness(KEYSTORE_SALT, KEYSTORE_NONCE):
        blob = encrypt_state(KEYSTORE_STATE, KEYSTORE_PASSPHRASE, params)
    plaintext = json.dumps(KEYSTORE_STATE, separators=(",", ":"), sort_keys=True).encode("utf-8")
    return {
        "name": "keystore_blob",
        "kind": "keystore_blob",
        "description": (
            'A whole keystore file: "VEILKS" || version 0x01 || log2_n u8 || r u8 || p u8 || salt (16) '
            "|| nonce (12) || ChaCha20-Poly1305(key, nonce, plaintext, aad = everything before the "
            "ciphertext) with the 16-byte tag at the end, where key is the keystore_kdf of passphrase "
            "and salt, and plaintext = the UTF-8 JSON of `state` with sorted keys and no whitespace "
            '(separators "," and ":"). Decrypting with the passphrase gives back `state`.'
        ),
        "passphrase": KEYSTORE_PASSPHRASE,
        "salt": KEYSTORE_SALT.hex(),
        "nonce": KEYSTORE_NONCE.hex(),
        "log2_n": params.log2_n,
        "r": params.r,
        "p": params.p,
        "state": KEYSTORE_STATE,
        "plaintext": plaintext.hex(),
        "blob": blob.hex(),
    }


def build() -> dict[str, Any]:
    """The whole vector file."""
    return {
        "description": DESCRIPTION,
        "generated_by": GENERATED_BY,
        "cases": [
            x3dh_case(with_one_time_prekey=True),
            x3dh_case(with_one_time_prekey=False),
            device_context_case("session_init"),
            device_context_case("session_message"),
            device_context_case("sender_key"),
            group_context_case(with_parent=False),
            group_context_case(with_parent=True),
            roster_hash_case(),
            file_case("file_three_chunks", b"Veil file vector: two full chunks + 8 b."),
            file_case("file_two_full_chunks", b"exactly 32 bytes: 2 full chunks."),
            file_case("file_empty", b""),
            keystore_kdf_case("keystore_kdf_ascii", KEYSTORE_PASSPHRASE),
            keystore_kdf_case("keystore_kdf_unicode_nfc", KEYSTORE_UNICODE_PASSPHRASE),
            keystore_blob_case(),
        ],
    }


def main() -> None:
    OUTPUT.write_text(json.dumps(build(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
