"""A device's long-term and prekey private keys, and the public bundle the server publishes.

The identity key (X25519) is what peers run Diffie-Hellman against; the signing key (Ed25519)
vouches for the signed prekey, because the API carries them as two separate keys. One-time prekeys
give each session set-up a fresh DH input that is deleted on use, so a later theft of this device's
keys does not open set-ups that used one. Key ids are drawn from one counter so that a signed prekey
and a one-time prekey never share an id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from veil.client.protocol.codec import (
    U32_MAX,
    b64encode,
    read_bytes,
    read_int,
    read_list,
    read_mapping,
)
from veil.client.protocol.errors import UnknownPrekeyError

# Set-ups in flight may still name the previous signed prekey after a rotation.
PREVIOUS_SIGNED_PREKEYS_KEPT = 1
KEY_SIZE = 32


def public_bytes(private_key: X25519PrivateKey) -> bytes:
    """The raw 32-byte X25519 public key of a private key."""
    return private_key.public_key().public_bytes_raw()


def device_fingerprint(identity_key: bytes, signing_key: bytes) -> str:
    """A short digest of a device's two public keys, for users to compare out of band.

    The server can publish any keys it likes; only a comparison outside the server (or a pinned
    earlier value) detects a substituted device. Both keys are covered because the API does not
    bind one to the other.
    """
    digest = hashes.Hash(hashes.SHA256())
    digest.update(b"veil/fingerprint/v1\x00" + identity_key + signing_key)
    hexdigest = digest.finalize()[:20].hex()
    return " ".join(hexdigest[i : i + 4] for i in range(0, len(hexdigest), 4))


@dataclass
class SignedPrekey:
    """The medium-term prekey and the signing key's signature over its raw public bytes."""

    key_id: int
    private_key: X25519PrivateKey
    signature: bytes

    @classmethod
    def generate(cls, key_id: int, signing: Ed25519PrivateKey) -> SignedPrekey:
        private_key = X25519PrivateKey.generate()
        return cls(key_id, private_key, signing.sign(public_bytes(private_key)))

    def public_dict(self) -> dict[str, Any]:
        """`{key_id, public_key, signature}` as the API expects it."""
        return {
            "key_id": self.key_id,
            "public_key": b64encode(public_bytes(self.private_key)),
            "signature": b64encode(self.signature),
        }


class DeviceKeys:
    """All private keys of one device; the only place they exist outside the encrypted keystore."""

    def __init__(
        self,
        identity: X25519PrivateKey,
        signing: Ed25519PrivateKey,
        signed_prekey: SignedPrekey,
        one_time_prekeys: dict[int, X25519PrivateKey],
        next_key_id: int,
        previous_signed_prekeys: dict[int, X25519PrivateKey] | None = None,
    ) -> None:
        self.identity = identity
        self.signing = signing
        self.signed_prekey = signed_prekey
        self._one_time = one_time_prekeys
        self._next_key_id = next_key_id
        self._previous_signed = previous_signed_prekeys or {}

    @classmethod
    def generate(cls, *, one_time: int = 100) -> DeviceKeys:
        """Fresh keys for a new device, with `one_time` one-time prekeys."""
        signing = Ed25519PrivateKey.generate()
        keys = cls(X25519PrivateKey.generate(), signing, SignedPrekey.generate(1, signing), {}, 2)
        keys.add_one_time_prekeys(one_time)
        return keys

    @property
    def identity_key(self) -> bytes:
        """This device's raw X25519 identity public key."""
        return public_bytes(self.identity)

    @property
    def signing_key(self) -> bytes:
        """This device's raw Ed25519 public key."""
        return self.signing.public_key().public_bytes_raw()

    @property
    def one_time_count(self) -> int:
        """How many one-time prekeys this device still holds privately."""
        return len(self._one_time)

    def fingerprint(self) -> str:
        """This device's fingerprint (see `device_fingerprint`)."""
        return device_fingerprint(self.identity_key, self.signing_key)

    def _allocate_key_id(self) -> int:
        key_id = self._next_key_id
        if key_id > U32_MAX:
            raise OverflowError("this device has used every 32-bit key id")
        self._next_key_id += 1
        return key_id

    def add_one_time_prekeys(self, count: int) -> list[dict[str, Any]]:
        """Generate `count` one-time prekeys; return their public `{key_id, public_key}` list for upload."""
        if count < 0:
            raise ValueError("count must not be negative")
        added: list[dict[str, Any]] = []
        for _ in range(count):
            key_id = self._allocate_key_id()
            private_key = X25519PrivateKey.generate()
            self._one_time[key_id] = private_key
            added.append({"key_id": key_id, "public_key": b64encode(public_bytes(private_key))})
        return added

    def public_bundle(self, *, include_one_time: bool = True) -> dict[str, Any]:
        """The `PUT /v1/keys` body. With `include_one_time=False` the one-time list is empty, for a
        re-upload that must not offer keys the server already has."""
        one_time = (
            [
                {"key_id": key_id, "public_key": b64encode(public_bytes(private_key))}
                for key_id, private_key in sorted(self._one_time.items())
            ]
            if include_one_time
            else []
        )
        return {
            "identity_key": b64encode(self.identity_key),
            "signing_key": b64encode(self.signing_key),
            "signed_prekey": self.signed_prekey.public_dict(),
            "one_time_prekeys": one_time,
        }

    def rotate_signed_prekey(self) -> dict[str, Any]:
        """Replace the signed prekey, keeping the previous one briefly for set-ups already in flight.

        Rotation bounds how long a stolen signed prekey (or a replayed set-up without a one-time
        key) stays useful. Returns the new public `{key_id, public_key, signature}`.
        """
        old = self.signed_prekey
        self._previous_signed[old.key_id] = old.private_key
        while len(self._previous_signed) > PREVIOUS_SIGNED_PREKEYS_KEPT:
            del self._previous_signed[min(self._previous_signed)]
        self.signed_prekey = SignedPrekey.generate(self._allocate_key_id(), self.signing)
        return self.signed_prekey.public_dict()

    def signed_prekey_private(self, key_id: int) -> X25519PrivateKey:
        """The private signed prekey with this id, current or recently rotated."""
        if key_id == self.signed_prekey.key_id:
            return self.signed_prekey.private_key
        try:
            return self._previous_signed[key_id]
        except KeyError:
            raise UnknownPrekeyError(f"no signed prekey {key_id}") from None

    def one_time_prekey_private(self, key_id: int) -> X25519PrivateKey:
        """The private one-time prekey with this id, left in place (see `consume_one_time_prekey`)."""
        try:
            return self._one_time[key_id]
        except KeyError:
            raise UnknownPrekeyError(f"no one-time prekey {key_id} (already used, or never issued)") from None

    def consume_one_time_prekey(self, key_id: int) -> X25519PrivateKey:
        """Remove and return a one-time prekey: once a set-up has used it, it must never work again."""
        private_key = self.one_time_prekey_private(key_id)
        del self._one_time[key_id]
        return private_key

    def to_state(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot, private keys included: only ever stored encrypted."""
        return {
            "identity": b64encode(self.identity.private_bytes_raw()),
            "signing": b64encode(self.signing.private_bytes_raw()),
            "signed_prekey": {
                "key_id": self.signed_prekey.key_id,
                "private_key": b64encode(self.signed_prekey.private_key.private_bytes_raw()),
                "signature": b64encode(self.signed_prekey.signature),
            },
            "previous_signed_prekeys": [
                {"key_id": key_id, "private_key": b64encode(key.private_bytes_raw())}
                for key_id, key in sorted(self._previous_signed.items())
            ],
            "one_time_prekeys": [
                {"key_id": key_id, "private_key": b64encode(key.private_bytes_raw())}
                for key_id, key in sorted(self._one_time.items())
            ],
            "next_key_id": self._next_key_id,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> DeviceKeys:
        """Rebuild from `to_state` output."""
        spk = read_mapping(state, "signed_prekey")
        return cls(
            identity=X25519PrivateKey.from_private_bytes(read_bytes(state, "identity", size=KEY_SIZE)),
            signing=Ed25519PrivateKey.from_private_bytes(read_bytes(state, "signing", size=KEY_SIZE)),
            signed_prekey=SignedPrekey(
                key_id=read_int(spk, "key_id", maximum=U32_MAX),
                private_key=X25519PrivateKey.from_private_bytes(
                    read_bytes(spk, "private_key", size=KEY_SIZE)
                ),
                signature=read_bytes(spk, "signature", size=64),
            ),
            one_time_prekeys=_read_private_keys(read_list(state, "one_time_prekeys")),
            next_key_id=read_int(state, "next_key_id", maximum=U32_MAX + 1),
            previous_signed_prekeys=_read_private_keys(read_list(state, "previous_signed_prekeys")),
        )


def _read_private_keys(items: list[Any]) -> dict[int, X25519PrivateKey]:
    keys: dict[int, X25519PrivateKey] = {}
    for item in items:
        if not isinstance(item, Mapping):
            raise ValueError("a prekey entry must be an object")
        keys[read_int(item, "key_id", maximum=U32_MAX)] = X25519PrivateKey.from_private_bytes(
            read_bytes(item, "private_key", size=KEY_SIZE)
        )
    return keys
