"""Write tests/vectors/pqxdh.json: known answers for PQXDH (the ML-KEM-768 part of session set-up),
computed with the production code from fixed inputs.

Run once (`python -m tests.vectors.make_pqxdh`); the file it writes is the spec other clients
implement against, so it is never regenerated unless a format version changes. Every private key,
seed and id is fixed here. The one exception is the ML-KEM ciphertext: `cryptography` encapsulates
with fresh randomness only, so the first run recorded one ciphertext, and every later run reads it
back from the file (the file then comes out byte for byte the same). A ciphertext is an input of
the vectors, like a received message: decapsulation must give the recorded shared secret.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from veil.client.protocol import pqxdh
from veil.client.protocol.framing import PQEncapsulation, SessionInitHeader
from veil.client.protocol.keys import public_bytes
from veil.client.protocol.pairwise import session_id_for

OUTPUT = Path(__file__).with_name("pqxdh.json")
GENERATED_BY = (
    "python -m tests.vectors.make_pqxdh (run once; the file is the spec: never regenerate unless "
    "the format version changes)"
)

DESCRIPTION = """\
Known answers for PQXDH in Veil's client protocol (docs/e2ee.md; Signal's PQXDH rev. 3 with \
ML-KEM-768, adapted to Veil's keys), for anyone writing another client. All bytes are lowercase \
hex; integers are JSON numbers. X25519 and Ed25519 private keys were made as \
SHA-256("veil/vectors/pqxdh/" || name) and are given raw (X25519: the 32-byte scalar before \
clamping; Ed25519: the 32-byte seed). ML-KEM-768 private keys are given as their 64-byte seed \
d || z = SHA-512("veil/vectors/pqxdh/" || name), i.e. FIPS 203 ML-KEM.KeyGen_internal(d = seed[0:32], \
z = seed[32:64]) (the seed form OpenSSL and `cryptography` load). ML-KEM ciphertexts were made once \
by a randomised encapsulation and are recorded inputs: decapsulating them must give the recorded \
shared secret. HKDF is RFC 5869 with SHA-256. Kinds: pq_prekey (the signature over a PQ prekey), \
ml_kem_768 (key generation from a seed, decapsulation, and the implicit-rejection secret of an \
altered ciphertext), pqxdh (the combined set-up secret with and without a one-time X25519 \
prekey) and session_init_pq (the frame prefix that carries a PQXDH set-up, and its session id). \
The tests in tests/unit/client/test_vectors_pqxdh.py recompute every value with the \
production code."""

PQ_PREKEY_ID = 3
SIGNED_PREKEY_ID = 1
ONE_TIME_PREKEY_ID = 2
PQXDH_INFO = b"Veil PQXDH v2"
PQXDH_PREFIX = b"\xff" * 32
PQXDH_SALT = bytes(32)
KEM_CASE = "ml_kem_768_decapsulation"


def fixed_secret(name: str) -> bytes:
    """The 32 fixed bytes an X25519 or Ed25519 private key of these vectors is made from."""
    return hashlib.sha256(b"veil/vectors/pqxdh/" + name.encode("ascii")).digest()


def fixed_seed(name: str) -> bytes:
    """The 64-byte ML-KEM-768 seed (d || z) of these vectors' ML-KEM key `name`."""
    return hashlib.sha512(b"veil/vectors/pqxdh/" + name.encode("ascii")).digest()


def _x25519(name: str) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(fixed_secret(name))


def _dh(private_key: X25519PrivateKey, public_key: bytes) -> bytes:
    return private_key.exchange(X25519PublicKey.from_public_bytes(public_key))


def _pq_prekey() -> MLKEM768PrivateKey:
    return pqxdh.private_key_from_seed(fixed_seed("responder-pq-prekey"))


def _recorded_ciphertext() -> bytes:
    """The ciphertext of the first run (see the module docstring), or a fresh one on that run."""
    if OUTPUT.exists():
        recorded = json.loads(OUTPUT.read_text(encoding="utf-8"))
        for case in recorded["cases"]:
            if case["name"] == KEM_CASE:
                return bytes.fromhex(case["ciphertext"])
    _, ciphertext = pqxdh.encapsulate(pqxdh.public_key_bytes(_pq_prekey()))
    return ciphertext


def pq_prekey_case() -> dict[str, Any]:
    signing = Ed25519PrivateKey.from_private_bytes(fixed_secret("responder-signing"))
    public_key = pqxdh.public_key_bytes(_pq_prekey())
    signed = pqxdh.pq_prekey_signed_bytes(PQ_PREKEY_ID, public_key)
    return {
        "name": "pq_prekey_signature",
        "kind": "pq_prekey",
        "description": (
            "Every PQ prekey (last-resort and one-time alike) is signed by the device's Ed25519 "
            'signing key over signed_bytes = "veil/pq-prekey/v1" (ASCII, no terminator) || key_id '
            "(u32 big-endian) || public_key (the 1184-byte ML-KEM-768 encapsulation key). Ed25519 is "
            "deterministic, so the signature is fixed too. A claim response carries it as pq_prekey "
            "{key_id, public_key, signature, last_resort} (base64); the initiator refuses the bundle "
            "unless the signature verifies with the bundle's signing_key."
        ),
        "signing_private": signing.private_bytes_raw().hex(),
        "signing_key": signing.public_key().public_bytes_raw().hex(),
        "key_id": PQ_PREKEY_ID,
        "pq_seed": fixed_seed("responder-pq-prekey").hex(),
        "public_key": public_key.hex(),
        "signed_bytes": signed.hex(),
        "signature": pqxdh.sign_pq_prekey(signing, PQ_PREKEY_ID, public_key).hex(),
    }


def ml_kem_case(ciphertext: bytes) -> dict[str, Any]:
    private_key = _pq_prekey()
    # One flipped bit in the last byte: ML-KEM's implicit rejection then gives the secret
    # J(z || ciphertext), which the sender does not have (FIPS 203, ML-KEM.Decaps_internal).
    rejected = ciphertext[:-1] + bytes([ciphertext[-1] ^ 0x01])
    return {
        "name": KEM_CASE,
        "kind": "ml_kem_768",
        "description": (
            "ML-KEM-768 (FIPS 203). public_key is the encapsulation key of the seed; "
            "shared_secret = Decaps(private key of pq_seed, ciphertext). rejected_ciphertext is "
            "ciphertext with the lowest bit of its last byte flipped; decapsulating it does not fail "
            "but gives rejected_shared_secret (implicit rejection), so a forged ciphertext shows "
            "up only as a first message that does not authenticate."
        ),
        "pq_seed": fixed_seed("responder-pq-prekey").hex(),
        "public_key": pqxdh.public_key_bytes(private_key).hex(),
        "ciphertext": ciphertext.hex(),
        "shared_secret": pqxdh.decapsulate(private_key, ciphertext).hex(),
        "rejected_ciphertext": rejected.hex(),
        "rejected_shared_secret": pqxdh.decapsulate(private_key, rejected).hex(),
    }


def pqxdh_case(ciphertext: bytes, *, with_one_time_prekey: bool) -> dict[str, Any]:
    """Bob's X25519 keys and PQ prekey, Alice's identity and ephemeral keys, and the secret."""
    identity, ephemeral = _x25519("initiator-identity"), _x25519("initiator-ephemeral")
    responder_identity = _x25519("responder-identity")
    signed_prekey, one_time = _x25519("responder-signed-prekey"), _x25519("responder-one-time-prekey")
    dhs = [
        _dh(identity, public_bytes(signed_prekey)),
        _dh(ephemeral, public_bytes(responder_identity)),
        _dh(ephemeral, public_bytes(signed_prekey)),
    ]
    if with_one_time_prekey:
        dhs.append(_dh(ephemeral, public_bytes(one_time)))
    pq_shared_secret = pqxdh.decapsulate(_pq_prekey(), ciphertext)
    shared_secret = pqxdh.pqxdh_secret(dhs, pq_shared_secret)
    ikm = PQXDH_PREFIX + b"".join(dhs) + pq_shared_secret
    expected = HKDF(algorithm=hashes.SHA256(), length=32, salt=PQXDH_SALT, info=PQXDH_INFO).derive(ikm)
    # The description must say how the secret is made: refuse to write a vector it does not match.
    assert shared_secret == expected, f"pqxdh_secret no longer uses HKDF info {PQXDH_INFO!r}"
    return {
        "name": "pqxdh_with_one_time_prekey" if with_one_time_prekey else "pqxdh_without_one_time_prekey",
        "kind": "pqxdh",
        "description": (
            "PQXDH: X3DH's DH outputs and the ML-KEM-768 shared secret into one HKDF. A = initiator, "
            "B = responder. DH1 = X25519(IK_a, SPK_b), DH2 = X25519(EK_a, IK_b), "
            "DH3 = X25519(EK_a, SPK_b)"
            + (", DH4 = X25519(EK_a, OPK_b)" if with_one_time_prekey else " (no one-time prekey: no DH4)")
            + ". (SS, ciphertext) = Encaps(PQPK_b); B gets SS = Decaps(PQPK_b private, ciphertext). "
            "ikm = 32 bytes 0xff || DH1 || DH2 || DH3"
            + (" || DH4" if with_one_time_prekey else "")
            + " || SS. shared_secret = HKDF-SHA256(ikm, salt = 32 zero bytes, info = `info`, "
            "length 32); it is the first root key of the session's Double Ratchet, as X3DH's is. "
            "The PQ prekey (pq_prekey_id, pq_seed) is the one of the pq_prekey case."
        ),
        "responder_identity_private": responder_identity.private_bytes_raw().hex(),
        "responder_identity_key": public_bytes(responder_identity).hex(),
        "signed_prekey_id": SIGNED_PREKEY_ID,
        "signed_prekey_private": signed_prekey.private_bytes_raw().hex(),
        "signed_prekey_public": public_bytes(signed_prekey).hex(),
        "one_time_prekey_id": ONE_TIME_PREKEY_ID if with_one_time_prekey else None,
        "one_time_prekey_private": one_time.private_bytes_raw().hex() if with_one_time_prekey else None,
        "one_time_prekey_public": public_bytes(one_time).hex() if with_one_time_prekey else None,
        "pq_prekey_id": PQ_PREKEY_ID,
        "pq_seed": fixed_seed("responder-pq-prekey").hex(),
        "initiator_identity_private": identity.private_bytes_raw().hex(),
        "initiator_identity_key": public_bytes(identity).hex(),
        "initiator_ephemeral_private": ephemeral.private_bytes_raw().hex(),
        "initiator_ephemeral_key": public_bytes(ephemeral).hex(),
        "dh": [dh.hex() for dh in dhs],
        "ciphertext": ciphertext.hex(),
        "pq_shared_secret": pq_shared_secret.hex(),
        "ikm": ikm.hex(),
        "salt": PQXDH_SALT.hex(),
        "info": PQXDH_INFO.hex(),
        "shared_secret": shared_secret.hex(),
    }


def session_init_pq_case(ciphertext: bytes) -> dict[str, Any]:
    """The prefix of the `session_init_pq` frame of the pqxdh_with_one_time_prekey set-up."""
    identity, ephemeral = _x25519("initiator-identity"), _x25519("initiator-ephemeral")
    header = SessionInitHeader(
        identity_key=public_bytes(identity),
        ephemeral_key=public_bytes(ephemeral),
        signed_prekey_id=SIGNED_PREKEY_ID,
        one_time_prekey_id=ONE_TIME_PREKEY_ID,
        pq=PQEncapsulation(PQ_PREKEY_ID, ciphertext),
    )
    return {
        "name": "session_init_pq_prefix",
        "kind": "session_init_pq",
        "description": (
            "The prefix of a session_init_pq frame (frame version 2, type 4), all integers "
            "big-endian: 0x02 | 0x04 | IK_a[32] | EK_a[32] | spk_id u32 | has_opk u8 | opk_id u32 | "
            "pq_key_id u32 | ciphertext[1088] = 1167 bytes (has_opk is 0 or 1, and opk_id is 0 when "
            "has_opk is 0). The 40-byte Double Ratchet header DHs[32] | pn u32 | n u32 follows, then "
            "the AEAD body, exactly as in a session_init (type 1; see double_ratchet.json), and the "
            "whole prefix is bound into the associated data. The device message's content_type stays "
            'session_init. session_id = SHA-256("veil/session-id/v2" || 0x00 || IK_a || EK_a)[0:16], '
            "as for type 1. These are the inputs of the pqxdh_with_one_time_prekey case."
        ),
        "identity_key": header.identity_key.hex(),
        "ephemeral_key": header.ephemeral_key.hex(),
        "signed_prekey_id": SIGNED_PREKEY_ID,
        "one_time_prekey_id": ONE_TIME_PREKEY_ID,
        "pq_prekey_id": PQ_PREKEY_ID,
        "ciphertext": ciphertext.hex(),
        "prefix": header.encode().hex(),
        "session_id": session_id_for(header).hex(),
    }


def build() -> dict[str, Any]:
    ciphertext = _recorded_ciphertext()
    return {
        "description": DESCRIPTION,
        "generated_by": GENERATED_BY,
        "cases": [
            pq_prekey_case(),
            ml_kem_case(ciphertext),
            pqxdh_case(ciphertext, with_one_time_prekey=True),
            pqxdh_case(ciphertext, with_one_time_prekey=False),
            session_init_pq_case(ciphertext),
        ],
    }


def main() -> None:
    OUTPUT.write_text(json.dumps(build(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
