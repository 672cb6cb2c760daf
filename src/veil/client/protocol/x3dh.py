"""Session set-up in the manner of X3DH (Signal's Extended Triple Diffie-Hellman).

The initiator A, holding identity key IK_a, fetches B's published bundle and, after checking the
signed prekey's signature, makes an ephemeral key EK_a and computes

    DH1 = DH(IK_a, SPK_b)   DH2 = DH(EK_a, IK_b)   DH3 = DH(EK_a, SPK_b)   [DH4 = DH(EK_a, OPK_b)]
    SK  = HKDF-SHA256(ikm = 0xFF*32 || DH1 || DH2 || DH3 [|| DH4], salt = 0*32, info = "Veil X3DH v2")

DH1 and DH2 authenticate both identities to each other, DH3 and DH4 give forward secrecy. The
32 0xFF bytes keep the input from ever being a valid X25519 output prefix (as in the X3DH paper).
With a signed ML-KEM-768 prekey in the bundle the set-up is PQXDH instead: the initiator also
encapsulates to it and the KEM secret joins the HKDF input (see `pqxdh`); without one it is the
classical X3DH above, so devices that publish no PQ prekeys can still be reached.
SK becomes the first root key of the session's Double Ratchet (see `double_ratchet`); the info
"v2" keeps it apart from the secrets of the version 1 (hash ratchet) sessions.
The responder repeats the computation from the `session_init` header; it must delete the one-time
private key once the first message has authenticated (the pairwise layer does so), so that no
second set-up with the same key can ever succeed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from veil.client.protocol import pqxdh
from veil.client.protocol.codec import U32_MAX, read_bytes, read_int, read_mapping
from veil.client.protocol.errors import DecryptionError, InvalidBundleError
from veil.client.protocol.framing import PQEncapsulation, SessionInitHeader
from veil.client.protocol.keys import KEY_SIZE, DeviceKeys, public_bytes
from veil.client.protocol.pqxdh import PQPrekeyOffer

SIGNATURE_SIZE = 64
SECRET_SIZE = 32
_INFO = b"Veil X3DH v2"
_PREFIX = b"\xff" * 32
_SALT = b"\x00" * 32


@dataclass(frozen=True)
class PrekeyBundle:
    """One peer device's claimed keys, decoded from the claim response."""

    device_id: str | None
    identity_key: bytes
    signing_key: bytes
    signed_prekey_id: int
    signed_prekey: bytes
    signature: bytes
    one_time_prekey_id: int | None = None
    one_time_prekey: bytes | None = None
    pq_prekey: PQPrekeyOffer | None = None

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> PrekeyBundle:
        """Parse `{device_id, identity_key, signing_key, signed_prekey, one_time_prekey, pq_prekey}`
        (`pq_prekey` may be absent or null: a server or device without PQXDH)."""
        try:
            spk = read_mapping(data, "signed_prekey")
            otk = data.get("one_time_prekey")
            if otk is not None and not isinstance(otk, Mapping):
                raise ValueError("one_time_prekey must be an object or null")
            pq = data.get("pq_prekey")
            if pq is not None and not isinstance(pq, Mapping):
                raise ValueError("pq_prekey must be an object or null")
            device_id = data.get("device_id")
            if device_id is not None and not isinstance(device_id, str):
                raise ValueError("device_id must be a string")
            return cls(
                device_id=device_id,
                identity_key=read_bytes(data, "identity_key", size=KEY_SIZE),
                signing_key=read_bytes(data, "signing_key", size=KEY_SIZE),
                signed_prekey_id=read_int(spk, "key_id", maximum=U32_MAX),
                signed_prekey=read_bytes(spk, "public_key", size=KEY_SIZE),
                signature=read_bytes(spk, "signature", size=SIGNATURE_SIZE),
                one_time_prekey_id=None if otk is None else read_int(otk, "key_id", maximum=U32_MAX),
                one_time_prekey=None if otk is None else read_bytes(otk, "public_key", size=KEY_SIZE),
                pq_prekey=None if pq is None else PQPrekeyOffer.from_wire(pq),
            )
        except ValueError as error:
            raise InvalidBundleError(f"malformed key bundle: {error}") from None

    def verify(self) -> None:
        """Refuse a bundle whose signed prekey, or PQ prekey, was not signed by its signing key."""
        try:
            Ed25519PublicKey.from_public_bytes(self.signing_key).verify(self.signature, self.signed_prekey)
        except (InvalidSignature, ValueError):
            raise InvalidBundleError("the signed prekey's signature does not verify") from None
        if self.pq_prekey is not None:
            self.pq_prekey.verify(self.signing_key)


def _dh(private_key: X25519PrivateKey, public_key: bytes) -> bytes:
    try:
        return private_key.exchange(X25519PublicKey.from_public_bytes(public_key))
    except ValueError:
        # A low-order point gives an all-zero output that OpenSSL refuses: never a real peer.
        raise DecryptionError("degenerate X25519 public key") from None


def _kdf(*shared: bytes) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=SECRET_SIZE, salt=_SALT, info=_INFO)
    return hkdf.derive(_PREFIX + b"".join(shared))


def initiate(
    identity: X25519PrivateKey, bundle: PrekeyBundle, *, ephemeral: X25519PrivateKey | None = None
) -> tuple[bytes, SessionInitHeader]:
    """Verify `bundle`, then return the shared secret and the header the responder needs.

    With a PQ prekey in the bundle the secret is PQXDH's and the header carries the KEM ciphertext
    (a `session_init_pq`). `ephemeral` is for known-answer vectors only; production leaves it None.
    """
    bundle.verify()
    if ephemeral is None:
        ephemeral = X25519PrivateKey.generate()
    try:
        shared = [
            _dh(identity, bundle.signed_prekey),
            _dh(ephemeral, bundle.identity_key),
            _dh(ephemeral, bundle.signed_prekey),
        ]
        if bundle.one_time_prekey is not None:
            shared.append(_dh(ephemeral, bundle.one_time_prekey))
    except DecryptionError as error:
        raise InvalidBundleError(str(error)) from None
    header = SessionInitHeader(
        identity_key=public_bytes(identity),
        ephemeral_key=public_bytes(ephemeral),
        signed_prekey_id=bundle.signed_prekey_id,
        one_time_prekey_id=bundle.one_time_prekey_id if bundle.one_time_prekey is not None else None,
    )
    if bundle.pq_prekey is None:
        return _kdf(*shared), header
    pq_secret, ciphertext = pqxdh.encapsulate(bundle.pq_prekey.public_key)
    header = dataclasses.replace(header, pq=PQEncapsulation(bundle.pq_prekey.key_id, ciphertext))
    return pqxdh.pqxdh_secret(shared, pq_secret), header


def respond(keys: DeviceKeys, header: SessionInitHeader) -> bytes:
    """The responder's copy of the shared secret.

    Leaves the one-time prekeys (X25519 and PQ) in place: the caller consumes them once the first
    message has authenticated, so a forged `session_init` cannot burn a key that a genuine one
    needs. Raises `UnknownPrekeyError` when a named prekey is gone (used before, or rotated away).
    """
    signed_prekey = keys.signed_prekey_private(header.signed_prekey_id)
    shared = [
        _dh(signed_prekey, header.identity_key),
        _dh(keys.identity, header.ephemeral_key),
        _dh(signed_prekey, header.ephemeral_key),
    ]
    if header.one_time_prekey_id is not None:
        shared.append(_dh(keys.one_time_prekey_private(header.one_time_prekey_id), header.ephemeral_key))
    if header.pq is None:
        return _kdf(*shared)
    pq_secret = pqxdh.decapsulate(keys.pq_prekey_private(header.pq.prekey_id), header.pq.ciphertext)
    return pqxdh.pqxdh_secret(shared, pq_secret)
