"""Post-quantum (ML-KEM-768) prekeys: what a valid one is, and the checks that refuse the rest.

Each one, last-resort and one-time alike, carries the Ed25519 signature of the device's signing
key over `veil/pq-prekey/v1` || key_id (u32 big-endian) || public_key, as Signal's PQXDH signs
every PQ prekey: the server must not be able to substitute them, so it refuses one that does not
verify rather than hand it out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PublicKey

from veil.core.problems import FieldError, Problem, validation_failed

PUBLIC_KEY_BYTES = 1184
SIGNATURE_CONTEXT = b"veil/pq-prekey/v1"
# At most this many unclaimed one-time PQ prekeys per device (Signal keeps 100 as well); and the
# most one request may add.
MAX_PQ_ONE_TIME_PREKEYS = 100
# The encapsulation key is t (1152 bytes: 768 12-bit coefficients) || rho (32). With t = 0 every
# ciphertext carries its message in the clear, so anyone could recompute the shared secret.
_T_BYTES = 1152


@dataclass(frozen=True)
class PqPrekey:
    key_id: int
    public_key: bytes
    signature: bytes


@dataclass(frozen=True)
class ClaimedPqPrekey:
    key: PqPrekey
    last_resort: bool


def signed_bytes(key_id: int, public_key: bytes) -> bytes:
    """What the signing key signs for a PQ prekey."""
    return SIGNATURE_CONTEXT + key_id.to_bytes(4, "big") + public_key


def _invalid(loc: tuple[str | int, ...], msg: str) -> Problem:
    return validation_failed([FieldError(loc, msg)])


def check_pq_prekey(signing_key: bytes, key: PqPrekey, loc: tuple[str | int, ...]) -> None:
    """Refuse (422 at `loc`) a key that is not a usable ML-KEM-768 encapsulation key, or whose
    signature by `signing_key` does not cover this very key_id and public key."""
    try:
        MLKEM768PublicKey.from_public_bytes(key.public_key)  # length and FIPS 203 modulus check
    except ValueError:
        raise _invalid((*loc, "public_key"), "Not a valid ML-KEM-768 public key.") from None
    if key.public_key[:_T_BYTES] == bytes(_T_BYTES):
        raise _invalid((*loc, "public_key"), "Not a usable public key.")
    try:
        Ed25519PublicKey.from_public_bytes(signing_key).verify(
            key.signature, signed_bytes(key.key_id, key.public_key)
        )
    except (InvalidSignature, ValueError):
        raise _invalid(
            (*loc, "signature"), "Not a valid Ed25519 signature of this PQ prekey by the signing key."
        ) from None


def check_pq_prekeys(signing_key: bytes, last_resort: PqPrekey | None, one_time: Sequence[PqPrekey]) -> None:
    """Check every PQ prekey of one request against `signing_key`; their key ids must differ
    (a last-resort and a one-time key are looked up by id in one namespace on the device)."""
    seen: set[int] = set()
    if last_resort is not None:
        check_pq_prekey(signing_key, last_resort, ("pq_last_resort_prekey",))
        seen.add(last_resort.key_id)
    for index, key in enumerate(one_time):
        loc: tuple[str | int, ...] = ("pq_one_time_prekeys", index)
        if key.key_id in seen:
            raise _invalid((*loc, "key_id"), "Duplicate key_id among the request's PQ prekeys.")
        seen.add(key.key_id)
        check_pq_prekey(signing_key, key, loc)
