"""Group sender keys: each device encrypts a conversation's messages once, with its own chain.

Per (conversation, epoch, sender device) the sender draws a random chain key, an Ed25519 key pair
and a random 32-bit `key_id`. The chain (see `ratchet`) gives a fresh message key per message; the
distribution message, sent to each other member device over a pairwise session as a `sender_key`
device message, hands over the key id, the current chain key, its iteration and the signature
public key. Every member who holds a sender key could compute its message keys, so each group
message is also signed with the sender key's private signing key, which never leaves the sender:
other members can read, but not forge, that device's messages.

Rotation. A sender key is replaced by a new one (new key id, chain and signing key; the old one is
deleted) when the caller next asks for it (`SenderKeyStore.own_key`) and:
- the epoch is new, or the sender's view of the roster (its hash) changed;
- it is `SENDER_KEY_MAX_AGE` old, or has sent `SENDER_KEY_MAX_MESSAGES` messages (Signal's and
  Megolm's reference limits: about a week or 100 messages);
- with `rotate_on_peer_key`, another user's sender key for the conversation was newly installed
  here since the key was made (keys of this user's other devices do not count): in a direct
  conversation each reply round trip then carries a fresh key over pairwise sessions that
  ratcheted meanwhile.
Sending never rotates; the caller distributes the new key first. A thief who copied a member's
state (and watches every ciphertext) reads every message of the sender keys that state holds, and
of every key later distributed to that member over a pairwise session the thief can still follow.
A key is safe from it once distributed over a healed session (`double_ratchet`): the sender had
received, before distributing, a reply that the robbed member sent after receiving one of the
sender's messages under a ratchet key new to it.

Receivers keep the keys of each (conversation, epoch, sender device) by the key id in each
message header, so a message on an earlier key still opens after later keys arrived: a key is
kept until `SKIPPED_MAX_AGE` (a week, as for skipped message keys) after a newer key of the same
slot was installed, however many keys came meanwhile (a member offline through many rotations
installs them all before reading). The newest key of a slot never ages out; beyond
`MAX_SENDER_KEYS_PER_SLOT` keys the oldest is dropped, so a hostile sender cannot grow the state
without bound.

Every sender key is bound to one roster hash (the sender's verified view of the roster at that
epoch): it travels in the distribution, a receiver installs it only if its own view has the same
hash, and it is part of every message's associated data. Receiving keys of epochs older than the
newest one in use are retired after a grace period (`epoch_retirement`).

Group ciphertext frame: `group header (10 bytes: key id, iteration) || AEAD ciphertext || Ed25519
signature (64 bytes)`; the header is in the associated data, and the signature covers the bound
metadata, the framed ciphertext, the nonce and the tag.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from veil.client.protocol.codec import canonical_uuid, read_int, read_list, read_mapping, read_str
from veil.client.protocol.envelope import GroupContext, Sealed, check_roster_hash
from veil.client.protocol.epoch_retirement import EpochRetirement
from veil.client.protocol.errors import (
    MalformedMessageError,
    RetiredEpochError,
    SenderKeyRefusedError,
    UnknownSenderKeyError,
)
from veil.client.protocol.framing import GroupMessageHeader
from veil.client.protocol.ratchet import SKIPPED_MAX_AGE, ReceivingChain
from veil.client.protocol.sender_key_chains import (
    SENDER_KEY_MAX_AGE,
    SENDER_KEY_MAX_MESSAGES,
    SIGNATURE_SIZE,
    OwnSenderKey,
    PeerSenderKey,
    SenderKeyDistribution,
)

__all__ = [
    "MAX_SENDER_KEYS_PER_SLOT",
    "SENDER_KEY_MAX_AGE",
    "SENDER_KEY_MAX_MESSAGES",
    "SIGNATURE_SIZE",
    "OwnSenderKey",
    "PeerSenderKey",
    "SenderKeyDistribution",
    "SenderKeyStore",
]

# The most keys of one sender device and epoch a receiver keeps, whatever their age (the oldest
# is dropped beyond): 6,400 messages at one rotation per 100, so only a sender that rotates much
# faster within a week makes an offline reader lose its oldest keys.
MAX_SENDER_KEYS_PER_SLOT = 64


# (conversation, epoch, sender user, sender device) -> that device's keys by key id, oldest first.
_Slot = tuple[str, int, str, str]
_SlotKeys = dict[int, PeerSenderKey]


def _slot(conversation_id: str, epoch: int, sender_id: str, sender_device_id: str) -> _Slot:
    return (
        canonical_uuid(conversation_id, field="conversation_id"),
        epoch,
        canonical_uuid(sender_id, field="sender_id"),
        canonical_uuid(sender_device_id, field="sender_device_id"),
    )


class SenderKeyStore:
    """Own sender keys by (conversation, epoch), received ones by slot and key id, each
    conversation's epoch retirement clock and its count of newly installed keys of other users."""

    def __init__(
        self,
        own: dict[tuple[str, int], OwnSenderKey] | None = None,
        peers: dict[_Slot, _SlotKeys] | None = None,
        retirements: dict[str, EpochRetirement] | None = None,
        installs: dict[str, int] | None = None,
        *,
        epoch_grace_seconds: float = 3600.0,
    ) -> None:
        self._own = own or {}
        self._peers = peers or {}
        self._retirements = retirements or {}
        # Per conversation: how many keys of other users were newly installed (`rotate_on_peer_key`).
        self._installs = installs or {}
        self.epoch_grace_seconds = epoch_grace_seconds

    @property
    def epoch_grace_seconds(self) -> float:
        """How long after the first message of a newer epoch the older epochs stay readable."""
        return self._grace

    @epoch_grace_seconds.setter
    def epoch_grace_seconds(self, seconds: float) -> None:
        if isinstance(seconds, bool) or not 0 <= seconds < math.inf:
            raise ValueError("epoch_grace_seconds must be a finite number of seconds, not negative")
        self._grace = float(seconds)

    def own_key(
        self,
        conversation_id: str,
        epoch: int,
        roster_hash: bytes,
        *,
        now: float,
        rotate_on_peer_key: bool = False,
    ) -> OwnSenderKey:
        """This device's sender key for the epoch and roster view, made anew when none exists or
        a rotation is due (see the module docstring); the key it replaces is deleted.

        A chain others hold under one roster must never carry messages under another, so another
        roster hash makes a new key. A key for a new epoch drops our keys for earlier epochs of
        the conversation: the server refuses messages in any epoch but the current one.
        """
        conversation_id = canonical_uuid(conversation_id, field="conversation_id")
        installs = self._installs.get(conversation_id, 0)
        key = self._own.get((conversation_id, epoch))
        if (
            key is None
            or key.roster_hash != check_roster_hash(roster_hash)
            or key.rotation_due(now, installs if rotate_on_peer_key else None)
        ):
            key = OwnSenderKey.generate(
                conversation_id,
                epoch,
                roster_hash,
                now=now,
                installs_seen=installs,
                avoid_key_ids=() if key is None else (key.key_id,),
            )
            for stale in [k for k in self._own if k[0] == conversation_id and k[1] < epoch]:
                del self._own[stale]
            self._own[(conversation_id, epoch)] = key
        return key

    def has_own_key(self, conversation_id: str, epoch: int, roster_hash: bytes) -> bool:
        key = self._own.get((canonical_uuid(conversation_id, field="conversation_id"), epoch))
        return key is not None and key.roster_hash == roster_hash

    def encrypt(self, context: GroupContext, plaintext: bytes, *, now: float) -> Sealed:
        """Seal with our current key for the context's epoch and roster (`UnknownSenderKeyError`
        if none). Never rotates: a due rotation waits for the next `own_key`.

        Sending in an epoch starts its grace period like receiving does: this device then knows
        the membership changed, even if nobody else speaks.
        """
        if not self.has_own_key(context.conversation_id, context.key_epoch, context.roster_hash):
            raise UnknownSenderKeyError("no sender key for this epoch and roster: distribute one first")
        conversation_id = canonical_uuid(context.conversation_id, field="conversation_id")
        sealed = self._own[(conversation_id, context.key_epoch)].encrypt(context, plaintext)
        self._retirement(conversation_id).observe(context.key_epoch, now=now, grace=self.epoch_grace_seconds)
        return sealed

    def install(
        self,
        sender_id: str,
        sender_device_id: str,
        distribution: SenderKeyDistribution,
        expected_roster_hash: bytes,
        *,
        now: float,
        own_user_id: str | None = None,
    ) -> bool:
        """Store a received sender key; True if stored, False if it repeats a key we hold.

        Refused (`SenderKeyRefusedError`) when its roster hash is not `expected_roster_hash` (the
        receiver's verified roster at that epoch), its epoch is retired, or its signing key came
        before with another key id or roster. A repeat of a key we hold (same key id and signing
        key) is ignored, so a re-delivered distribution cannot roll the chain back; another
        signing key under a held key id replaces that key. The slot's earlier keys count as
        superseded from `now` (see the module docstring for how long they are kept).

        `own_user_id` is this device's user: a key from one of its other devices is not the other
        side's turn, so it does not count for `rotate_on_peer_key` (with None, every key counts).
        """
        expected_roster_hash = check_roster_hash(expected_roster_hash)
        conversation_id = canonical_uuid(distribution.conversation_id, field="conversation_id")
        if distribution.epoch < self._advance(conversation_id, now):
            raise SenderKeyRefusedError(f"epoch {distribution.epoch} of this conversation is retired")
        if distribution.roster_hash != expected_roster_hash:
            raise SenderKeyRefusedError(
                "the sender key is bound to another roster than the one verified for its epoch"
            )
        slot = _slot(conversation_id, distribution.epoch, sender_id, sender_device_id)
        keys = self._peers.get(slot, {})
        for key in keys.values():
            if key.signing_public_key != distribution.signing_public_key:
                continue
            # A genuine sender makes a new signing key with every new key: one key under two
            # rosters or two ids is forged, and accepting it could restart its chain.
            if key.roster_hash != distribution.roster_hash:
                raise SenderKeyRefusedError("this sender key was already received under another roster")
            if key.key_id != distribution.key_id:
                raise SenderKeyRefusedError("this sender key was already received under another key id")
            return False
        try:
            Ed25519PublicKey.from_public_bytes(distribution.signing_public_key)
        except ValueError:
            raise MalformedMessageError("the sender key's signing key is not an Ed25519 key") from None
        keys.pop(distribution.key_id, None)  # a replaced key id moves to the newest place
        for key in keys.values():
            if key.superseded_at is None:
                key.superseded_at = float(now)
        keys[distribution.key_id] = PeerSenderKey(
            distribution.key_id,
            ReceivingChain(distribution.chain_key, distribution.iteration),
            distribution.signing_public_key,
            distribution.roster_hash,
        )
        for oldest in list(keys)[: max(0, len(keys) - MAX_SENDER_KEYS_PER_SLOT)]:
            del keys[oldest]
        self._peers[slot] = keys
        if own_user_id is None or slot[2] != canonical_uuid(own_user_id, field="own_user_id"):
            self._installs[conversation_id] = self._installs.get(conversation_id, 0) + 1
        return True

    def decrypt(self, context: GroupContext, sealed: Sealed, *, now: float) -> bytes:
        """Open another device's message: retired epochs are refused, and expiry runs first."""
        conversation_id = canonical_uuid(context.conversation_id, field="conversation_id")
        retired_before = self._advance(conversation_id, now)
        self._expire_keys(conversation_id, now)
        if context.key_epoch < retired_before:
            raise RetiredEpochError(
                f"epoch {context.key_epoch} of this conversation is retired (epochs below "
                f"{retired_before} are no longer accepted)"
            )
        # The header is not authenticated yet: it only picks the key, which then checks it.
        header = GroupMessageHeader.decode(sealed.ciphertext)
        plaintext = self.peer_key(context, header.key_id).decrypt(context, sealed, now=now)
        self._retirement(conversation_id).observe(context.key_epoch, now=now, grace=self.epoch_grace_seconds)
        return plaintext

    def peer_key(self, context: GroupContext, key_id: int) -> PeerSenderKey:
        """The received sender key `key_id` of the context's sender device and epoch."""
        slot = _slot(context.conversation_id, context.key_epoch, context.sender_id, context.sender_device_id)
        key = self._peers.get(slot, {}).get(key_id)
        if key is None:
            raise UnknownSenderKeyError(
                f"no sender key {key_id} of device {context.sender_device_id} for epoch {context.key_epoch}"
            )
        return key

    def expire(self, now: float) -> None:
        """Apply due epoch retirements and drop superseded keys and skipped message keys that are
        too old, in every conversation."""
        conversations = {slot[0] for slot in self._peers} | set(self._retirements)
        for conversation_id in conversations:
            self._advance(conversation_id, now)
            self._expire_keys(conversation_id, now)

    def forget_epochs_before(self, conversation_id: str, epoch: int) -> None:
        """Delete every key of the conversation older than `epoch` (history before it becomes unreadable)."""
        conversation_id = canonical_uuid(conversation_id, field="conversation_id")
        for own in [k for k in self._own if k[0] == conversation_id and k[1] < epoch]:
            del self._own[own]
        for peer in [k for k in self._peers if k[0] == conversation_id and k[1] < epoch]:
            del self._peers[peer]

    def _retirement(self, conversation_id: str) -> EpochRetirement:
        retirement = self._retirements.get(conversation_id)
        if retirement is None:
            retirement = self._retirements[conversation_id] = EpochRetirement()
        return retirement

    def _advance(self, conversation_id: str, now: float) -> int:
        """Apply the conversation's due retirements (deleting those keys); the first live epoch."""
        retirement = self._retirements.get(conversation_id)
        if retirement is None:
            return 0
        retired_before = retirement.advance(now)
        for slot in [k for k in self._peers if k[0] == conversation_id and k[1] < retired_before]:
            del self._peers[slot]
        return retired_before

    def _expire_keys(self, conversation_id: str, now: float) -> None:
        """Drop the conversation's keys superseded `SKIPPED_MAX_AGE` ago (the newest key of a slot
        is never superseded), then the too-old skipped message keys of those left."""
        for slot, keys in self._peers.items():
            if slot[0] != conversation_id:
                continue
            for key_id, key in list(keys.items()):
                if key.superseded_at is not None and now - key.superseded_at >= SKIPPED_MAX_AGE:
                    del keys[key_id]
                else:
                    key.expire(now)

    def to_state(self) -> dict[str, Any]:
        return {
            "own": [key.to_state() for key in self._own.values()],
            "peers": [
                {
                    "conversation_id": conversation_id,
                    "epoch": epoch,
                    "sender_id": sender_id,
                    "sender_device_id": sender_device_id,
                    "key": key.to_state(),
                }
                for (conversation_id, epoch, sender_id, sender_device_id), keys in self._peers.items()
                for key in keys.values()
            ],
            "retirements": [
                {"conversation_id": conversation_id, **retirement.to_state()}
                for conversation_id, retirement in self._retirements.items()
            ],
            "installs": [
                {"conversation_id": conversation_id, "count": count}
                for conversation_id, count in self._installs.items()
            ],
        }

    @classmethod
    def from_state(
        cls, state: Mapping[str, Any], *, epoch_grace_seconds: float, legacy: bool = False
    ) -> SenderKeyStore:
        """Rebuild from `to_state` output; `ValueError` on anything malformed or missing.

        `legacy=True` reads a store saved by the version-1-frame client (client state version 2):
        only its epoch retirements are kept. Its sender keys were handed over without key ids, so
        no version 2 group message can name them, and the version 1 messages they opened are
        refused by their frame version. The next send makes and distributes a new key.
        """
        if legacy:
            retirements_only: dict[str, Any] = {
                "own": [],
                "peers": [],
                "retirements": state.get("retirements"),
                "installs": [],
            }
            return cls.from_state(retirements_only, epoch_grace_seconds=epoch_grace_seconds)
        own: dict[tuple[str, int], OwnSenderKey] = {}
        for item in read_list(state, "own"):
            key = OwnSenderKey.from_state(_mapping(item))
            own[(key.conversation_id, key.epoch)] = key
        peers: dict[_Slot, _SlotKeys] = {}
        for item in read_list(state, "peers"):  # in slot order, oldest key first
            entry = _mapping(item)
            slot = (
                read_str(entry, "conversation_id"),
                read_int(entry, "epoch"),
                read_str(entry, "sender_id"),
                read_str(entry, "sender_device_id"),
            )
            peer = PeerSenderKey.from_state(read_mapping(entry, "key"))
            peers.setdefault(slot, {})[peer.key_id] = peer
        for keys in peers.values():
            if len(keys) > MAX_SENDER_KEYS_PER_SLOT:
                raise ValueError("a sender key slot holds more keys than allowed")
            # Only the newest key of a slot is current: an older one without superseded_at would
            # never age out, and a superseded newest key would.
            if [key.superseded_at is None for key in keys.values()] != [False] * (len(keys) - 1) + [True]:
                raise ValueError("in a sender key slot every key but the newest must be superseded_at a time")
        retirements: dict[str, EpochRetirement] = {}
        for item in read_list(state, "retirements"):
            entry = _mapping(item)
            retirements[read_str(entry, "conversation_id")] = EpochRetirement.from_state(entry)
        installs: dict[str, int] = {}
        for item in read_list(state, "installs"):
            entry = _mapping(item)
            installs[read_str(entry, "conversation_id")] = read_int(entry, "count")
        return cls(own, peers, retirements, installs, epoch_grace_seconds=epoch_grace_seconds)


def _mapping(item: object) -> Mapping[str, Any]:
    if not isinstance(item, Mapping):
        raise ValueError("a sender key entry must be an object")
    return item
