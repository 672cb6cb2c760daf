"""Which master key this device trusts for each user, and which listed devices that makes trusted.

A peer's master key is pinned the first time it is seen (trust on first use). A different key seen
later is never adopted silently: it is kept as *pending* and nothing of that user's is trusted until
the person at this device accepts it (`accept`), which also drops "verified", since the safety
number they compared was of the old key. The own user's key is not learnt from the server at all:
it is installed when this device generates it or is linked by a device that holds it.

A listed device is trusted only if its user's pinned key is set, nothing is pending, and its
certificate verifies under that key over the very identity and signing keys listed: so a device the
server adds, or one that pairs a certified identity key with a foreign signing key, is refused.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from veil.client.protocol.codec import (
    b64encode,
    canonical_uuid,
    read_bytes,
    read_mapping,
    read_str,
)
from veil.client.protocol.identity import (
    KEY_SIZE,
    SIGNATURE_SIZE,
    MasterKey,
    is_acceptable_master_key,
    require_master_key,
    verify_certificate,
)

STATE_VERSION = 1

# Why `certified` refused a device: shown to the user as is, after the device's name or id.
REFUSED_NO_MASTER_KEY = "its owner's master key is not known yet"
REFUSED_KEY_CHANGED = "owner's key changed"
REFUSED_NOT_APPROVED = "not approved by its owner"
REFUSED_BAD_CERTIFICATE = "certificate does not verify"


class TrustState(enum.Enum):
    """What `observe` made of a user's master key as the server reports it."""

    FIRST_SEEN = "first_seen"  # nothing was pinned: this key is now
    SAME = "same"  # the pinned key, nothing pending
    CHANGED = "changed"  # differs from the pinned key (or an earlier change is still unaccepted)
    NOT_LINKED = "not_linked"  # the own user, before this device was linked: nothing pinned


@dataclass(frozen=True)
class ListedDevice:
    """One device as a user's device listing (or a claim answer) presents it."""

    device_id: str
    identity_key: bytes
    signing_key: bytes
    certificate: bytes | None

    @classmethod
    def from_api(cls, item: Mapping[str, Any]) -> ListedDevice:
        """From a `GET /v1/users/{id}/devices` item or a claim answer (`certificate` is
        `{signature}` or null); `ValueError` on a malformed one."""
        certificate = item.get("certificate")
        if certificate is not None:
            certificate = read_bytes(read_mapping(item, "certificate"), "signature", size=SIGNATURE_SIZE)
        return cls(
            device_id=canonical_uuid(read_str(item, "device_id"), field="device_id"),
            identity_key=read_bytes(item, "identity_key", size=KEY_SIZE),
            signing_key=read_bytes(item, "signing_key", size=KEY_SIZE),
            certificate=certificate,
        )


@dataclass
class _UserTrust:
    pinned: bytes
    history: list[bytes] = field(default_factory=list)
    verified: bool = False
    pending: bytes | None = None


class TrustStore:
    """Pinned master keys per user (the own user's included), kept in the keystore."""

    def __init__(self, own_user_id: str, own_master: MasterKey | None = None) -> None:
        self._own_user_id = canonical_uuid(own_user_id, field="own_user_id")
        self._users: dict[str, _UserTrust] = {}
        self._own_master: MasterKey | None = None
        if own_master is not None:
            self.install_own_master(own_master.public_key, own_master)

    @property
    def own_user_id(self) -> str:
        return self._own_user_id

    @property
    def own_master_public_key(self) -> bytes | None:
        """The own user's master key, once generated here or received from a linking device."""
        return self.pinned(self._own_user_id)

    @property
    def own_master(self) -> MasterKey | None:
        """The master key's private half: set only on a primary device."""
        return self._own_master

    def install_own_master(self, public_key: bytes, master: MasterKey | None = None) -> None:
        """Pin the own user's master key (generated here, or from a verified link payload), with its
        private half if this device is primary. A different key already pinned is a `ValueError`:
        replacing the own key goes through `observe` and `accept` like any change."""
        require_master_key(public_key)
        if master is not None and master.public_key != public_key:
            raise ValueError("the private master key does not belong to this public key")
        current = self._users.get(self._own_user_id)
        if current is None:
            self._users[self._own_user_id] = _UserTrust(pinned=public_key)
        elif current.pinned != public_key or current.pending is not None:
            raise ValueError("a different master key is already pinned for this user")
        if master is not None:
            self._own_master = master

    def forget_own_master(self) -> None:
        """Drop the own user's master key (both halves): one made here that the account never
        published, because another device published its own first."""
        self._users.pop(self._own_user_id, None)
        self._own_master = None

    def observe(self, user_id: str, master_key: bytes) -> TrustState:
        """Record the master key the server reports for `user_id` (`InvalidMasterKeyError` if it is
        not a usable key). While the result is CHANGED, send nothing to that user's devices."""
        require_master_key(master_key)
        user_id = canonical_uuid(user_id, field="user_id")
        trust = self._users.get(user_id)
        if trust is None:
            if user_id == self._own_user_id:
                return TrustState.NOT_LINKED  # the server's word is not how the own key is learnt
            self._users[user_id] = _UserTrust(pinned=master_key)
            return TrustState.FIRST_SEEN
        if master_key != trust.pinned:
            trust.pending = master_key  # the latest claim is the one the user will be asked about
        # A pending change stays until accepted, even if the server shows the old key again.
        return TrustState.SAME if trust.pending is None else TrustState.CHANGED

    def accept(self, user_id: str, master_key: bytes | None = None) -> None:
        """Pin the pending key of `user_id`, keeping the old one in the history, and clear
        "verified". With `master_key`, only if that is the pending key (the one the user was shown).
        For the own user this also drops the private master key, which belonged to the old key."""
        user_id = canonical_uuid(user_id, field="user_id")
        trust = self._users.get(user_id)
        if trust is None or trust.pending is None:
            raise ValueError("no changed master key is waiting to be accepted for this user")
        if master_key is not None and master_key != trust.pending:
            raise ValueError("the master key changed again since it was shown: check it anew")
        trust.history.append(trust.pinned)
        trust.pinned, trust.pending, trust.verified = trust.pending, None, False
        if user_id == self._own_user_id:
            self._own_master = None

    def mark_verified(self, user_id: str) -> None:
        """Record that the user compared safety numbers over the pinned key of `user_id`."""
        trust = self._users.get(canonical_uuid(user_id, field="user_id"))
        if trust is None:
            raise ValueError("no master key is pinned for this user")
        if trust.pending is not None:
            raise ValueError("this user's master key changed: accept the new key before verifying")
        trust.verified = True

    def is_verified(self, user_id: str) -> bool:
        trust = self._users.get(canonical_uuid(user_id, field="user_id"))
        return trust is not None and trust.verified

    def pinned(self, user_id: str) -> bytes | None:
        """The master key trusted for `user_id`, or None before one is pinned."""
        trust = self._users.get(canonical_uuid(user_id, field="user_id"))
        return None if trust is None else trust.pinned

    def pending(self, user_id: str) -> bytes | None:
        """A changed master key seen for `user_id` and not yet accepted."""
        trust = self._users.get(canonical_uuid(user_id, field="user_id"))
        return None if trust is None else trust.pending

    def users(self) -> list[str]:
        """Every user with a pinned master key, the own user included."""
        return list(self._users)

    def history(self, user_id: str) -> list[bytes]:
        """The master keys pinned for `user_id` before the current one, oldest first."""
        trust = self._users.get(canonical_uuid(user_id, field="user_id"))
        return [] if trust is None else list(trust.history)

    def refusal(self, user_id: str, device: ListedDevice) -> str | None:
        """Why `device` of `user_id` is not trusted (one of the REFUSED_* texts), or None if it is."""
        trust = self._users.get(canonical_uuid(user_id, field="user_id"))
        if trust is None:
            return REFUSED_NO_MASTER_KEY
        if trust.pending is not None:
            return REFUSED_KEY_CHANGED
        if device.certificate is None:
            return REFUSED_NOT_APPROVED
        if not verify_certificate(
            trust.pinned,
            user_id,
            device.device_id,
            device.identity_key,
            device.signing_key,
            device.certificate,
        ):
            return REFUSED_BAD_CERTIFICATE
        return None

    def certified(
        self, user_id: str, devices: Iterable[ListedDevice]
    ) -> tuple[list[ListedDevice], list[tuple[ListedDevice, str]]]:
        """Split a user's listed devices into (trusted, [(refused, reason)]), in listing order."""
        trusted: list[ListedDevice] = []
        refused: list[tuple[ListedDevice, str]] = []
        for device in devices:
            reason = self.refusal(user_id, device)
            if reason is None:
                trusted.append(device)
            else:
                refused.append((device, reason))
        return trusted, refused

    def to_state(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot (the private master key included: stored encrypted only)."""
        return {
            "version": STATE_VERSION,
            "own_user_id": self._own_user_id,
            "own_master": None if self._own_master is None else self._own_master.to_state(),
            "users": {
                user_id: {
                    "pinned": b64encode(trust.pinned),
                    "history": [b64encode(key) for key in trust.history],
                    "verified": trust.verified,
                    "pending": None if trust.pending is None else b64encode(trust.pending),
                }
                for user_id, trust in sorted(self._users.items())
            },
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> TrustStore:
        """Rebuild from `to_state` output; anything else (unknown members, a wrong version, an
        unusable key, a private master key not matching the pinned own key) is a `ValueError`."""
        _exact_members(state, {"version", "own_user_id", "own_master", "users"}, "trust store")
        if state["version"] != STATE_VERSION or isinstance(state["version"], bool):
            raise ValueError(f"unsupported trust store version {state['version']!r}")
        own_user_id = read_str(state, "own_user_id")
        if canonical_uuid(own_user_id, field="own_user_id") != own_user_id:
            raise ValueError("own_user_id is not a canonical UUID")
        store = cls(own_user_id)
        for user_id, item in read_mapping(state, "users").items():
            if not isinstance(user_id, str) or canonical_uuid(user_id) != user_id:
                raise ValueError("a trust store user id is not a canonical UUID")
            if not isinstance(item, Mapping):
                raise ValueError("a trust store entry must be an object")
            store._users[user_id] = _read_user_trust(item)
        own_master_state = state["own_master"]
        if own_master_state is not None:
            if not isinstance(own_master_state, Mapping):
                raise ValueError("own_master must be an object or null")
            master = MasterKey.from_state(own_master_state)
            own = store._users.get(own_user_id)
            if own is None or own.pinned != master.public_key or own.pending is not None:
                raise ValueError("the private master key does not match the own pinned master key")
            store._own_master = master
        return store


def _read_user_trust(item: Mapping[str, Any]) -> _UserTrust:
    _exact_members(item, {"pinned", "history", "verified", "pending"}, "trust store entry")
    history = item["history"]
    verified = item["verified"]
    if not isinstance(history, list) or not isinstance(verified, bool):
        raise ValueError("history must be a list and verified a boolean")
    trust = _UserTrust(
        pinned=_read_master_key(item, "pinned"),
        history=[_read_master_key({"key": key}, "key") for key in history],
        verified=verified,
        pending=None if item["pending"] is None else _read_master_key(item, "pending"),
    )
    if trust.pending == trust.pinned:
        raise ValueError("a pending master key equal to the pinned one")
    return trust


def _read_master_key(data: Mapping[str, Any], key: str) -> bytes:
    raw = read_bytes(data, key, size=KEY_SIZE)
    if not is_acceptable_master_key(raw):
        raise ValueError(f"{key} is not a usable master key")
    return raw


def _exact_members(data: Mapping[str, Any], names: set[str], what: str) -> None:
    if set(data) != names:
        raise ValueError(f"a {what} has exactly the members {sorted(names)}")
