"""A user's master key, the device certificates it signs, device link codes and safety numbers.

The master key (Ed25519) is the user's own word on which devices are theirs: it signs a certificate
over each device's id and both of its public keys, so a device the server adds, or a bundle that
pairs a device's identity key with someone else's signing key, carries no valid certificate. Only
*primary* devices hold its private half. A new device is linked by an existing one: the new device
shows a link code (its id and a digest of its keys), the approver checks it against the server's
listing, certifies the device and sends it a link payload over their pairwise session.

Safety numbers follow Signal's NumericFingerprint with the master key in place of the identity key
and the 16 raw bytes of the user id as the stable identifier, so two users who compare them check
the very keys their clients pinned.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from veil.client.protocol import crockford
from veil.client.protocol.codec import b64encode, length_prefixed, read_bytes, uuid_bytes, uuid_str
from veil.client.protocol.errors import InvalidMasterKeyError, MalformedMessageError

KEY_SIZE = 32
SIGNATURE_SIZE = 64
ID_SIZE = 16

CERTIFICATE_CONTEXT = b"veil/device-certificate/v1"

# A user or device id: a UUID string (any spelling) or its 16 raw bytes; both name the same 16 bytes,
# which are what every signature and digest covers.
Id = str | bytes


def id_bytes(value: Id, *, field: str = "id") -> bytes:
    """The 16 raw bytes of a user or device id given as a UUID string or as those bytes."""
    if isinstance(value, bytes):
        if len(value) != ID_SIZE:
            raise ValueError(f"{field} must be 16 bytes, not {len(value)}")
        return value
    return uuid_bytes(value, field=field)


# --- Master keys ----------------------------------------------------------------------------------

_P = 2**255 - 19
# The y-coordinates of the eight points of order dividing 8 (identity: 1; order 2: p-1; order 4: 0,
# twice; order 8: these two values, each with both signs of x). The list is libsodium's blocklist in
# `ge25519_has_small_order` (src/libsodium/crypto_core/ed25519/ref10/ed25519_ref10.c), which also
# compares y with the sign bit cleared. The two order-8 values sum to p.
_SMALL_ORDER_Y = frozenset(
    {
        0,
        1,
        _P - 1,
        int.from_bytes(
            bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"), "little"
        ),
        int.from_bytes(
            bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"), "little"
        ),
    }
)


def is_acceptable_master_key(key: bytes) -> bool:
    """True if `key` is 32 bytes, loads as Ed25519, encodes y < p and is not a small-order point.

    A small-order key lets whoever publishes it craft one signature that verifies over many messages,
    and a non-canonical encoding gives one key two spellings (two pins, two safety numbers). An
    encoding that is not on the curve is not refused here: no signature ever verifies under it, so
    it certifies nothing.
    """
    if not isinstance(key, bytes) or len(key) != KEY_SIZE:
        return False
    y = int.from_bytes(key, "little") & ((1 << 255) - 1)  # the top bit is the sign of x
    if y >= _P or y in _SMALL_ORDER_Y:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(key)
    except ValueError:
        return False
    return True


def require_master_key(key: bytes) -> bytes:
    """`key` itself if it is an acceptable master key, else `InvalidMasterKeyError`."""
    if not is_acceptable_master_key(key):
        raise InvalidMasterKeyError("not a usable master key (wrong size, small order or non-canonical)")
    return key


def certificate_bytes(user_id: Id, device_id: Id, identity_key: bytes, signing_key: bytes) -> bytes:
    """What a device certificate signs (API.md, `PUT /v1/devices/{id}/certificate`):
    `veil/device-certificate/v1` || user_id (16) || device_id (16) || identity_key (32) || signing_key (32).
    """
    if len(identity_key) != KEY_SIZE or len(signing_key) != KEY_SIZE:
        raise ValueError("identity and signing keys must be 32 bytes each")
    return (
        CERTIFICATE_CONTEXT
        + id_bytes(user_id, field="user_id")
        + id_bytes(device_id, field="device_id")
        + identity_key
        + signing_key
    )


def verify_certificate(
    master_key: bytes,
    user_id: Id,
    device_id: Id,
    identity_key: bytes,
    signing_key: bytes,
    signature: bytes | None,
) -> bool:
    """True only if `signature` is the master key's certificate of exactly this user, device and
    key pair. Any malformed input (sizes, ids, an unacceptable master key) is False, never an error."""
    try:
        if not is_acceptable_master_key(master_key):
            return False
        if not isinstance(signature, bytes) or len(signature) != SIGNATURE_SIZE:
            return False
        payload = certificate_bytes(user_id, device_id, identity_key, signing_key)
        Ed25519PublicKey.from_public_bytes(master_key).verify(signature, payload)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


class MasterKey:
    """The private half of a user's master key; exists only on primary devices."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private_key = private_key
        require_master_key(self.public_key)

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> MasterKey:
        """The master key whose 32-byte Ed25519 seed is `raw` (as a link payload carries it)."""
        if len(raw) != KEY_SIZE:
            raise ValueError("a master private key is 32 bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(raw))

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte Ed25519 public key, as `PUT /v1/identity` publishes it."""
        return self._private_key.public_key().public_bytes_raw()

    def private_bytes(self) -> bytes:
        """The 32-byte seed: only for the keystore and for a link payload making a primary device."""
        return self._private_key.private_bytes_raw()

    def certify(self, user_id: Id, device_id: Id, identity_key: bytes, signing_key: bytes) -> bytes:
        """The 64-byte certificate of one device of `user_id` with exactly these public keys."""
        return self._private_key.sign(certificate_bytes(user_id, device_id, identity_key, signing_key))

    def to_state(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot, private key included: only ever stored encrypted."""
        return {"private_key": b64encode(self.private_bytes())}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> MasterKey:
        if set(state) != {"private_key"}:
            raise ValueError("a master key state has exactly one member, private_key")
        return cls.from_private_bytes(read_bytes(state, "private_key", size=KEY_SIZE))


# --- Link codes -----------------------------------------------------------------------------------

LINK_CODE_PREFIX = "VL1-"
LINK_DIGEST_SIZE = 10
LINK_SECRET_SIZE = 10
LINK_PROOF_SIZE = 32
_LINK_DIGEST_CONTEXT = b"veil/link-code/v1"
_LINK_PROOF_CONTEXT = b"veil/link-proof/v1"
_LINK_CODE_BYTES = ID_SIZE + LINK_DIGEST_SIZE + LINK_SECRET_SIZE


def link_digest(identity_key: bytes, signing_key: bytes) -> bytes:
    """The first 10 bytes of SHA-256(`veil/link-code/v1` || identity_key || signing_key)."""
    if len(identity_key) != KEY_SIZE or len(signing_key) != KEY_SIZE:
        raise ValueError("identity and signing keys must be 32 bytes each")
    return hashlib.sha256(_LINK_DIGEST_CONTEXT + identity_key + signing_key).digest()[:LINK_DIGEST_SIZE]


def link_code(device_id: Id, identity_key: bytes, signing_key: bytes, *, secret: bytes) -> str:
    """The code a pending device shows so that one of its user's devices can approve it:
    "VL1-" then device_id (16) || link_digest (10) || secret (10) in Crockford base32, in groups
    of four. The secret is random, kept by the pending device and shown only on its screen: the
    approving device proves with it (`link_proof`) that its link payload answers this code, so a
    server cannot link the device to a master key of its own."""
    if len(secret) != LINK_SECRET_SIZE:
        raise ValueError(f"a link secret is {LINK_SECRET_SIZE} bytes")
    symbols = crockford.encode(
        id_bytes(device_id, field="device_id") + link_digest(identity_key, signing_key) + secret
    )
    return LINK_CODE_PREFIX + "-".join(symbols[i : i + 4] for i in range(0, len(symbols), 4))


def parse_link_code(text: str) -> tuple[str, bytes, bytes]:
    """(device_id as a canonical UUID string, the 10-byte key digest, the 10-byte secret) from a
    typed or scanned code.

    Case, spaces and dashes do not matter, nor O for 0 and I or L for 1. Anything else that is not
    a well-formed code is a `ValueError` whose text can be shown to the user as it is.
    """
    compact = "".join(text.split()).replace("-", "").upper()
    prefix = LINK_CODE_PREFIX.rstrip("-")
    if not compact.startswith(prefix):
        raise ValueError("a Veil link code starts with VL1-")
    raw = crockford.decode(compact[len(prefix) :], _LINK_CODE_BYTES)
    digest_end = ID_SIZE + LINK_DIGEST_SIZE
    return uuid_str(raw[:ID_SIZE]), raw[ID_SIZE:digest_end], raw[digest_end:]


def link_proof(secret: bytes, device_id: Id, master_public_key: bytes) -> bytes:
    """HMAC-SHA256(secret, `veil/link-proof/v1` || device_id || master public key): what the
    approving device puts in the link payload to show it read this device's code."""
    mac = hmac.new(secret, _LINK_PROOF_CONTEXT + id_bytes(device_id, field="device_id"), "sha256")
    mac.update(master_public_key)
    return mac.digest()


def link_digest_matches(digest: bytes, identity_key: bytes, signing_key: bytes) -> bool:
    """True if a parsed code's digest is that of these listed keys (False on malformed keys)."""
    try:
        return hmac.compare_digest(digest, link_digest(identity_key, signing_key))
    except (ValueError, TypeError):
        return False


# --- Link payload ---------------------------------------------------------------------------------

LINK_PAYLOAD_LABEL = b"veil/link/v1"


@dataclass(frozen=True)
class LinkPayload:
    """What an approving device sends a newly linked one: the master public key, and its private
    half only when the new device is to be primary. Nothing else (no contacts, no verifications).

    Construction checks both fields (`ValueError`): an acceptable master key, and a private half
    that is that very key's, so a payload can never make a device primary for another key.
    """

    master_public_key: bytes
    master_private_key: bytes | None = None
    proof: bytes = bytes(LINK_PROOF_SIZE)  # `link_proof` of the code being answered

    def __post_init__(self) -> None:
        if not is_acceptable_master_key(self.master_public_key):
            raise ValueError("the master key is not usable")
        if len(self.proof) != LINK_PROOF_SIZE:
            raise ValueError(f"a link proof is {LINK_PROOF_SIZE} bytes")
        if self.master_private_key is None:
            return
        if len(self.master_private_key) != KEY_SIZE:
            raise ValueError("a master private key is 32 bytes")
        if MasterKey.from_private_bytes(self.master_private_key).public_key != self.master_public_key:
            raise ValueError("the private key is not the master key's")


def encode_link_payload(payload: LinkPayload) -> bytes:
    """length_prefixed(`veil/link/v1`, master public key (32), master private key (32, or empty),
    proof (32))."""
    return length_prefixed(
        LINK_PAYLOAD_LABEL, payload.master_public_key, payload.master_private_key or b"", payload.proof
    )


def decode_link_payload(data: bytes) -> LinkPayload:
    """Parse a link payload; anything but exactly the encoding above, with keys `LinkPayload`
    accepts, is `MalformedMessageError`."""
    fields = _split_length_prefixed(data)
    if len(fields) != 4 or fields[0] != LINK_PAYLOAD_LABEL:
        raise MalformedMessageError("not a veil/link/v1 payload")
    try:
        return LinkPayload(fields[1], fields[2] or None, fields[3])
    except ValueError as error:
        raise MalformedMessageError(f"link payload: {error}") from None


def _split_length_prefixed(data: bytes) -> list[bytes]:
    """The inverse of `codec.length_prefixed`; truncated or trailing bytes are malformed."""
    fields: list[bytes] = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < 4:
            raise MalformedMessageError("truncated length prefix")
        (length,) = struct.unpack_from(">I", data, offset)
        offset += 4
        if len(data) - offset < length:
            raise MalformedMessageError("a field runs past the end of the message")
        fields.append(data[offset : offset + length])
        offset += length
    return fields


# --- Safety numbers -------------------------------------------------------------------------------

SAFETY_NUMBER_VERSION = 0
SAFETY_NUMBER_ITERATIONS = 5200
SAFETY_NUMBER_DIGITS = 60
SAFETY_NUMBER_QR_PREFIX = "VEIL-SN1:"


def _safety_number_half(user_id: bytes, master_key: bytes) -> str:
    # The model is libsignal's NumericFingerprintGenerator (rust/protocol/src/fingerprint.rs,
    # `Fingerprint::get_fingerprint` and `get_encoded_string`): iterated SHA-512 to slow down a search
    # for a key whose number collides, then six 5-byte big-endian chunks, each mod 100000.
    # One difference, as design14 specifies it: Signal's first round hashes
    # version || key || id || key, Veil's hashes version || key || id (5,200 rounds in both).
    digest = hashlib.sha512(struct.pack(">H", SAFETY_NUMBER_VERSION) + master_key + user_id).digest()
    for _ in range(SAFETY_NUMBER_ITERATIONS - 1):
        digest = hashlib.sha512(digest + master_key).digest()
    return "".join(
        f"{int.from_bytes(digest[offset : offset + 5], 'big') % 100_000:05d}" for offset in range(0, 30, 5)
    )


def safety_number(user_a: Id, master_key_a: bytes, user_b: Id, master_key_b: bytes) -> str:
    """The 60-digit safety number of two users and their master keys; the same for both sides,
    because the two 30-digit halves are ordered by user id bytes (lower first)."""
    for key in (master_key_a, master_key_b):
        if len(key) != KEY_SIZE:
            raise ValueError("a master key is 32 bytes")
    halves = sorted(
        [
            (id_bytes(user_a, field="user_a"), master_key_a),
            (id_bytes(user_b, field="user_b"), master_key_b),
        ]
    )
    return "".join(_safety_number_half(user_id, key) for user_id, key in halves)


def format_safety_number(number: str) -> str:
    """The number as people compare it: twelve groups of five digits."""
    digits = _safety_number_digits(number)
    return " ".join(digits[i : i + 5] for i in range(0, SAFETY_NUMBER_DIGITS, 5))


def safety_number_qr(number: str) -> str:
    """The QR payload of a safety number: "VEIL-SN1:" then its 60 digits."""
    return SAFETY_NUMBER_QR_PREFIX + _safety_number_digits(number)


def parse_safety_number_qr(text: str) -> str:
    """The 60 digits of a scanned QR payload; `ValueError` if it is not one."""
    if not text.startswith(SAFETY_NUMBER_QR_PREFIX):
        raise ValueError("not a Veil safety number code")
    digits = text[len(SAFETY_NUMBER_QR_PREFIX) :]
    if len(digits) != SAFETY_NUMBER_DIGITS or not (digits.isascii() and digits.isdigit()):
        raise ValueError("a Veil safety number code holds exactly 60 digits")
    return digits


def _safety_number_digits(number: str) -> str:
    digits = "".join(number.split())
    if len(digits) != SAFETY_NUMBER_DIGITS or not (digits.isascii() and digits.isdigit()):
        raise ValueError("a safety number is 60 digits")
    return digits
