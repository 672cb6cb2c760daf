"""The post-quantum part of session set-up: PQXDH (Signal's rev. 3) with ML-KEM-768, adapted to Veil.

Besides its X25519 prekeys each device publishes ML-KEM-768 prekeys: one signed last-resort key
(kept until replaced) and signed one-time keys (deleted on use). Every PQ prekey is signed by the
device's Ed25519 signing key over

    b"veil/pq-prekey/v1" || key_id (u32 big-endian) || public_key (1184 bytes)

so the server can neither substitute a key nor move a signature to another key id. An initiator
that finds a PQ prekey in a claimed bundle encapsulates to it, (SS, CT) = Encaps(PQPK), sends CT in
its first message and mixes SS into the set-up secret after the X25519 outputs:

    SK = HKDF-SHA256(salt = 0*32, ikm = 0xFF*32 || DH1 || DH2 || DH3 [|| DH4] || SS,
                     info = "Veil PQXDH v2", length = 32)

An attacker must then break both X25519 and ML-KEM to learn SK, which protects recorded traffic
against a later quantum computer ("harvest now, decrypt later"). The other info string than
X3DH's keeps a PQXDH secret from ever equalling a classical one. This module is the primitive
layer only: key sizes, the signed bytes, and wrappers that turn the library's errors into the
core's; which key is used and when it is deleted is decided by `keys`, `x3dh` and `pairwise`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from veil.client.protocol.codec import U32_MAX, read_bytes, read_int, u32
from veil.client.protocol.errors import DecryptionError, InvalidBundleError

PQ_PUBLIC_KEY_SIZE = 1184
PQ_CIPHERTEXT_SIZE = 1088
PQ_SEED_SIZE = 64
PQ_SHARED_SECRET_SIZE = 32
SIGNATURE_SIZE = 64
SECRET_SIZE = 32
PQ_PREKEY_LABEL = b"veil/pq-prekey/v1"
_INFO = b"Veil PQXDH v2"
_PREFIX = b"\xff" * 32
_SALT = b"\x00" * 32


def pq_prekey_signed_bytes(key_id: int, public_key: bytes) -> bytes:
    """The exact bytes a PQ prekey's signature covers."""
    if len(public_key) != PQ_PUBLIC_KEY_SIZE:
        raise ValueError(f"an ML-KEM-768 public key is {PQ_PUBLIC_KEY_SIZE} bytes")
    return PQ_PREKEY_LABEL + u32(key_id) + public_key


def sign_pq_prekey(signing: Ed25519PrivateKey, key_id: int, public_key: bytes) -> bytes:
    """The signing key's signature over a PQ prekey (see `pq_prekey_signed_bytes`)."""
    return signing.sign(pq_prekey_signed_bytes(key_id, public_key))


def verify_pq_prekey(signing_key: bytes, key_id: int, public_key: bytes, signature: bytes) -> None:
    """Refuse a PQ prekey not signed under this id by `signing_key`, or not a usable ML-KEM key."""
    try:
        Ed25519PublicKey.from_public_bytes(signing_key).verify(
            signature, pq_prekey_signed_bytes(key_id, public_key)
        )
    except (InvalidSignature, ValueError):
        raise InvalidBundleError("the PQ prekey's signature does not verify") from None
    # A correctly signed key can still be malformed (a coefficient out of range): its owner's
    # bug, but refused here rather than as a confusing error during encapsulation.
    _load_public_key(public_key)


def _load_public_key(public_key: bytes) -> MLKEM768PublicKey:
    try:
        return MLKEM768PublicKey.from_public_bytes(public_key)
    except ValueError:
        raise InvalidBundleError("the PQ prekey is not a valid ML-KEM-768 public key") from None


def generate_private_key() -> MLKEM768PrivateKey:
    """A fresh ML-KEM-768 private key."""
    return MLKEM768PrivateKey.generate()


def private_key_from_seed(seed: bytes) -> MLKEM768PrivateKey:
    """The ML-KEM-768 private key of a 64-byte seed (d || z, FIPS 203), as the keystore stores it."""
    if len(seed) != PQ_SEED_SIZE:
        raise ValueError(f"an ML-KEM-768 seed is {PQ_SEED_SIZE} bytes")
    return MLKEM768PrivateKey.from_seed_bytes(seed)


def public_key_bytes(private_key: MLKEM768PrivateKey) -> bytes:
    """The raw 1184-byte encapsulation key of a private key."""
    return private_key.public_key().public_bytes_raw()


def encapsulate(public_key: bytes) -> tuple[bytes, bytes]:
    """`(shared_secret, ciphertext)` for a peer's PQ prekey; `InvalidBundleError` if it is unusable."""
    shared_secret, ciphertext = _load_public_key(public_key).encapsulate()
    return shared_secret, ciphertext


def decapsulate(private_key: MLKEM768PrivateKey, ciphertext: bytes) -> bytes:
    """The shared secret of a received ciphertext.

    A ciphertext of the right size always decapsulates (ML-KEM's implicit rejection gives a
    pseudo-random secret for a forged one), so a forgery shows up as the first message failing
    to authenticate, not here. A wrong size raises `DecryptionError`.
    """
    try:
        return private_key.decapsulate(ciphertext)
    except ValueError:
        raise DecryptionError("malformed ML-KEM-768 ciphertext") from None


def pqxdh_secret(dh_outputs: Iterable[bytes], pq_shared_secret: bytes) -> bytes:
    """SK = HKDF-SHA256(0*32, 0xFF*32 || DH1 || DH2 || DH3 [|| DH4] || SS, "Veil PQXDH v2")."""
    if len(pq_shared_secret) != PQ_SHARED_SECRET_SIZE:
        raise ValueError(f"an ML-KEM-768 shared secret is {PQ_SHARED_SECRET_SIZE} bytes")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=SECRET_SIZE, salt=_SALT, info=_INFO)
    return hkdf.derive(_PREFIX + b"".join(dh_outputs) + pq_shared_secret)


@dataclass(frozen=True)
class PQPrekeyOffer:
    """A peer device's PQ prekey as the claim response carries it (`pq_prekey`)."""

    key_id: int
    public_key: bytes
    signature: bytes
    last_resort: bool

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> PQPrekeyOffer:
        """Parse `{key_id, public_key, signature, last_resort}`; raises `ValueError` if malformed."""
        last_resort = data.get("last_resort")
        if not isinstance(last_resort, bool):
            raise ValueError("last_resort must be a boolean")
        return cls(
            key_id=read_int(data, "key_id", maximum=U32_MAX),
            public_key=read_bytes(data, "public_key", size=PQ_PUBLIC_KEY_SIZE),
            signature=read_bytes(data, "signature", size=SIGNATURE_SIZE),
            last_resort=last_resort,
        )

    def verify(self, signing_key: bytes) -> None:
        """Refuse the offer unless `signing_key` signed this key under this id."""
        verify_pq_prekey(signing_key, self.key_id, self.public_key, self.signature)
