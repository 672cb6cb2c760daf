"""A device's long-term and prekey private keys, and the public bundle the server publishes.

The identity key (X25519) is what peers run Diffie-Hellman against; the signing key (Ed25519)
vouches for the signed prekey, because the API carries them as two separate keys. One-time prekeys
give each session set-up a fresh DH input that is deleted on use, so a later theft of this device's
keys does not open set-ups that used one. The ML-KEM-768 prekeys do the same for PQXDH (see
`pqxdh`): one signed last-resort key, used when the server has no one-time PQ key left, and signed
one-time PQ keys, deleted on use. Key ids are drawn from one counter so that no two prekeys of any
kind share an id, and a `session_init` naming an id names exactly one key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey
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
from veil.client.protocol.pqxdh import (
    PQ_SEED_SIZE,
    SIGNATURE_SIZE,
    generate_private_key,
    private_key_from_seed,
    public_key_bytes,
    sign_pq_prekey,
)

# Set-ups in flight may still name the previous signed (or PQ last-resort) prekey after a rotation.
PREVIOUS_SIGNED_PREKEYS_KEPT = 1
PREVIOUS_PQ_LAST_RESORT_PREKEYS_KEPT = 1
# The signed prekey and the PQ last-resort prekey are replaced this often (X3DH suggests weekly or
# monthly): it bounds how long a stolen one opens set-ups that used no one-time key.
PREKEY_ROTATION_SECONDS = 7 * 24 * 3600
# Each one-time PQ prekey costs 1.6 kB in the bundle and on the server (which keeps at most 100
# unclaimed per device), so fewer are made than X25519 ones; the last-resort key covers a run-out.
DEFAULT_PQ_ONE_TIME_PREKEYS = 20
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


@dataclass
class PQPrekey:
    """An ML-KEM-768 prekey (last-resort or one-time) and the signing key's signature over it."""

    key_id: int
    private_key: MLKEM768PrivateKey
    signature: bytes

    @classmethod
    def generate(cls, key_id: int, signing: Ed25519PrivateKey) -> PQPrekey:
        private_key = generate_private_key()
        return cls(key_id, private_key, sign_pq_prekey(signing, key_id, public_key_bytes(private_key)))

    @property
    def public_key(self) -> bytes:
        """The raw 1184-byte ML-KEM-768 public key."""
        return public_key_bytes(self.private_key)

    def public_dict(self) -> dict[str, Any]:
        """`{key_id, public_key, signature}` as the API expects it."""
        return {
            "key_id": self.key_id,
            "public_key": b64encode(self.public_key),
            "signature": b64encode(self.signature),
        }

    def to_state(self) -> dict[str, Any]:
        """`{key_id, seed, signature}`: the 64-byte seed is the whole private key (FIPS 203)."""
        return {
            "key_id": self.key_id,
            "seed": b64encode(self.private_key.private_bytes_raw()),
            "signature": b64encode(self.signature),
        }

    @classmethod
    def from_state(cls, item: object) -> PQPrekey:
        if not isinstance(item, Mapping):
            raise ValueError("a PQ prekey entry must be an object")
        return cls(
            read_int(item, "key_id", maximum=U32_MAX),
            private_key_from_seed(read_bytes(item, "seed", size=PQ_SEED_SIZE)),
            read_bytes(item, "signature", size=SIGNATURE_SIZE),
        )


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
        *,
        pq_last_resort_prekey: PQPrekey | None = None,
        previous_pq_last_resort_prekeys: dict[int, PQPrekey] | None = None,
        pq_one_time_prekeys: dict[int, PQPrekey] | None = None,
        prekeys_rotated_at: int | None = None,
        prekeys_unpublished: bool = False,
    ) -> None:
        self.identity = identity
        self.signing = signing
        self.signed_prekey = signed_prekey
        self._one_time = one_time_prekeys
        self._next_key_id = next_key_id
        self._previous_signed = previous_signed_prekeys or {}
        self._pq_last_resort = pq_last_resort_prekey
        self._previous_pq_last_resort = previous_pq_last_resort_prekeys or {}
        self._pq_one_time = pq_one_time_prekeys or {}
        # When the signed and PQ last-resort prekeys were last replaced, in seconds since the epoch;
        # None until the first `rotate_prekeys_if_due` (a new device, or a state from before).
        self.prekeys_rotated_at = prekeys_rotated_at
        # Replaced prekeys the server does not have yet (the `PUT /v1/keys` failed or never ran).
        self._prekeys_unpublished = prekeys_unpublished

    @classmethod
    def generate(cls, *, one_time: int = 100, pq_one_time: int = DEFAULT_PQ_ONE_TIME_PREKEYS) -> DeviceKeys:
        """Fresh keys for a new device: `one_time` one-time prekeys, a PQ last-resort prekey and
        `pq_one_time` one-time PQ prekeys."""
        signing = Ed25519PrivateKey.generate()
        keys = cls(X25519PrivateKey.generate(), signing, SignedPrekey.generate(1, signing), {}, 2)
        keys.add_one_time_prekeys(one_time)
        keys.ensure_pq_last_resort_prekey()
        keys.add_pq_one_time_prekeys(pq_one_time)
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

    @property
    def pq_one_time_count(self) -> int:
        """How many one-time PQ prekeys this device still holds privately."""
        return len(self._pq_one_time)

    @property
    def pq_last_resort_prekey(self) -> PQPrekey | None:
        """The current PQ last-resort prekey (None for a device from before PQXDH that made none)."""
        return self._pq_last_resort

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

    def add_pq_one_time_prekeys(self, count: int) -> list[dict[str, Any]]:
        """Generate `count` one-time PQ prekeys; return their public `{key_id, public_key,
        signature}` list for upload (`pq_one_time_prekeys` of `POST /v1/keys/one-time`)."""
        if count < 0:
            raise ValueError("count must not be negative")
        added: list[dict[str, Any]] = []
        for _ in range(count):
            prekey = PQPrekey.generate(self._allocate_key_id(), self.signing)
            self._pq_one_time[prekey.key_id] = prekey
            added.append(prekey.public_dict())
        return added

    def ensure_pq_last_resort_prekey(self) -> dict[str, Any] | None:
        """Make the PQ last-resort prekey if this device has none (a keystore written before PQXDH).

        Returns the new key's public `{key_id, public_key, signature}` to publish with `PUT
        /v1/keys` (`pq_last_resort_prekey`), or None when the device already had one.
        """
        if self._pq_last_resort is not None:
            return None
        self._pq_last_resort = PQPrekey.generate(self._allocate_key_id(), self.signing)
        return self._pq_last_resort.public_dict()

    def rotate_pq_last_resort_prekey(self) -> dict[str, Any]:
        """Replace the PQ last-resort prekey, keeping the previous one briefly for set-ups in
        flight (as `rotate_signed_prekey`). Returns the new public `{key_id, public_key, signature}`."""
        old = self._pq_last_resort
        if old is not None:
            self._previous_pq_last_resort[old.key_id] = old
            while len(self._previous_pq_last_resort) > PREVIOUS_PQ_LAST_RESORT_PREKEYS_KEPT:
                del self._previous_pq_last_resort[min(self._previous_pq_last_resort)]
        self._pq_last_resort = PQPrekey.generate(self._allocate_key_id(), self.signing)
        return self._pq_last_resort.public_dict()

    def public_bundle(self, *, include_one_time: bool = True) -> dict[str, Any]:
        """The `PUT /v1/keys` body. With `include_one_time=False` both one-time lists are empty, for
        a re-upload that must not offer keys the server already has. `pq_last_resort_prekey` is
        left out while the device has none (absent means "keep the current one" to the server)."""
        one_time = (
            [
                {"key_id": key_id, "public_key": b64encode(public_bytes(private_key))}
                for key_id, private_key in sorted(self._one_time.items())
            ]
            if include_one_time
            else []
        )
        pq_one_time = (
            [prekey.public_dict() for _, prekey in sorted(self._pq_one_time.items())]
            if include_one_time
            else []
        )
        bundle: dict[str, Any] = {
            "identity_key": b64encode(self.identity_key),
            "signing_key": b64encode(self.signing_key),
            "signed_prekey": self.signed_prekey.public_dict(),
            "one_time_prekeys": one_time,
        }
        if self._pq_last_resort is not None:
            bundle["pq_last_resort_prekey"] = self._pq_last_resort.public_dict()
        bundle["pq_one_time_prekeys"] = pq_one_time
        return bundle

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

    def rotate_prekeys_if_due(self, now: float) -> bool:
        """Replace the signed prekey and the PQ last-resort prekey once they are
        `PREKEY_ROTATION_SECONDS` old, keeping the previous ones for set-ups in flight. True while
        replaced prekeys wait to be published (`public_bundle(include_one_time=False)`, then
        `prekeys_published`); until then nothing is replaced again, so the key the server still
        hands out stays openable. The first call only starts the clock, so a new device or an
        older state does not rotate at once."""
        if self.prekeys_rotated_at is None:
            self.prekeys_rotated_at = int(now)
            return False
        if not self._prekeys_unpublished and now - self.prekeys_rotated_at >= PREKEY_ROTATION_SECONDS:
            self.rotate_signed_prekey()
            if self._pq_last_resort is not None:
                self.rotate_pq_last_resort_prekey()
            self.prekeys_rotated_at = int(now)
            self._prekeys_unpublished = True
        return self._prekeys_unpublished

    def prekeys_published(self, now: float) -> None:
        """The server accepted the replaced prekeys: their week counts from now."""
        self._prekeys_unpublished = False
        self.prekeys_rotated_at = int(now)

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

    def pq_prekey_private(self, key_id: int) -> MLKEM768PrivateKey:
        """The private PQ prekey with this id: last-resort (current or recently rotated) or
        one-time, left in place (see `consume_pq_one_time_prekey`)."""
        if self._pq_last_resort is not None and key_id == self._pq_last_resort.key_id:
            return self._pq_last_resort.private_key
        prekey = self._previous_pq_last_resort.get(key_id) or self._pq_one_time.get(key_id)
        if prekey is None:
            raise UnknownPrekeyError(f"no PQ prekey {key_id} (already used, rotated away, or never issued)")
        return prekey.private_key

    def is_pq_one_time_prekey(self, key_id: int) -> bool:
        """Whether `key_id` names a one-time PQ prekey this device still holds (one to consume on use)."""
        return key_id in self._pq_one_time

    def consume_pq_one_time_prekey(self, key_id: int) -> MLKEM768PrivateKey:
        """Remove and return a one-time PQ prekey: once a set-up has used it, it must never work again.

        Last-resort keys are never consumed: their ids raise `UnknownPrekeyError` here.
        """
        prekey = self._pq_one_time.pop(key_id, None)
        if prekey is None:
            raise UnknownPrekeyError(f"no one-time PQ prekey {key_id} (already used, or never issued)")
        return prekey.private_key

    def to_state(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot, private keys included: only ever stored encrypted.

        PQ members appear only when they hold a key, so a state from before PQXDH that never made
        any writes back exactly as it was read.
        """
        state: dict[str, Any] = {
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
        if self._pq_last_resort is not None:
            state["pq_last_resort_prekey"] = self._pq_last_resort.to_state()
        if self._previous_pq_last_resort:
            state["previous_pq_last_resort_prekeys"] = [
                prekey.to_state() for _, prekey in sorted(self._previous_pq_last_resort.items())
            ]
        if self._pq_one_time:
            state["pq_one_time_prekeys"] = [
                prekey.to_state() for _, prekey in sorted(self._pq_one_time.items())
            ]
        if self.prekeys_rotated_at is not None:
            state["prekeys_rotated_at"] = self.prekeys_rotated_at
        if self._prekeys_unpublished:
            state["prekeys_unpublished"] = True
        return state

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> DeviceKeys:
        """Rebuild from `to_state` output. A state written before PQXDH (no PQ members) loads with
        no PQ prekeys; `ensure_pq_last_resort_prekey` and `add_pq_one_time_prekeys` make them."""
        spk = read_mapping(state, "signed_prekey")
        last_resort = state.get("pq_last_resort_prekey")
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
            pq_last_resort_prekey=None if last_resort is None else PQPrekey.from_state(last_resort),
            previous_pq_last_resort_prekeys=_read_pq_prekeys(state, "previous_pq_last_resort_prekeys"),
            pq_one_time_prekeys=_read_pq_prekeys(state, "pq_one_time_prekeys"),
            prekeys_rotated_at=(
                read_int(state, "prekeys_rotated_at") if "prekeys_rotated_at" in state else None
            ),
            prekeys_unpublished=state.get("prekeys_unpublished") is True,
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


def _read_pq_prekeys(state: Mapping[str, Any], key: str) -> dict[int, PQPrekey]:
    """The PQ prekeys of a state list by id; a missing list (a state from before PQXDH) is empty."""
    if key not in state:
        return {}
    prekeys = [PQPrekey.from_state(item) for item in read_list(state, key)]
    return {prekey.key_id: prekey for prekey in prekeys}
