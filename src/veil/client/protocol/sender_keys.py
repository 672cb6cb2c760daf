"""Group sender keys: each device encrypts a conversation's messages once, with its own chain.

Per (conversation, epoch, sender device) the sender draws a random chain key and an Ed25519 key
pair. The chain (see `ratchet`) gives a fresh message key per message; the distribution message,
sent to each other member device over a pairwise session as a `sender_key` device message, hands
over the current chain key, its iteration and the signature public key. Every member who holds a
sender key could compute its message keys, so each group message is also signed with the sender
key's private signing key, which never leaves the sender: other members can read, but not forge,
that device's messages.

A membership change raises the conversation's epoch, and a new epoch means a new sender key,
distributed only to the members of the new epoch, so a removed member never learns it. Within an
epoch there is forward secrecy (old message keys are deleted) but no post-compromise security.

Every sender key is bound to one roster hash (the sender's verified view of the roster at that
epoch): it travels in the distribution, a receiver installs it only if its own view has the same
hash, and it is part of every message's associated data. A sender whose view changes for the same
epoch makes a new key, so a chain held under one roster is never used under another. Receiving
keys of epochs older than the newest one in use are retired after a grace period
(`epoch_retirement`).

Group ciphertext frame: `group header (6 bytes) || AEAD ciphertext || Ed25519 signature (64 bytes)`;
the signature covers the bound metadata, the framed ciphertext, the nonce and the tag.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from veil.client.protocol.codec import (
    U64_MAX,
    b64encode,
    canonical_uuid,
    length_prefixed,
    read_bytes,
    read_int,
    read_list,
    read_mapping,
    read_str,
    uuid_bytes,
    uuid_str,
)
from veil.client.protocol.envelope import (
    ROSTER_HASH_SIZE,
    GroupContext,
    Sealed,
    check_roster_hash,
    ensure_fits,
    open_sealed,
    seal,
)
from veil.client.protocol.epoch_retirement import EpochRetirement
from veil.client.protocol.errors import (
    DecryptionError,
    MalformedMessageError,
    SenderKeyRefusedError,
    UnknownSenderKeyError,
)
from veil.client.protocol.framing import GroupMessageHeader, SenderKeyDistributionFrame
from veil.client.protocol.ratchet import CHAIN_KEY_SIZE, ReceivingChain, SendingChain

SIGNATURE_SIZE = 64
_SIGNATURE_LABEL = b"veil/group-signature/v1"


@dataclass(frozen=True)
class SenderKeyDistribution:
    """What a member device needs to read one sender device's messages in one epoch."""

    conversation_id: str
    epoch: int
    roster_hash: bytes
    iteration: int
    chain_key: bytes
    signing_public_key: bytes

    def encode(self) -> bytes:
        """The 126-byte binary payload (see `framing.SenderKeyDistributionFrame`)."""
        return SenderKeyDistributionFrame(
            uuid_bytes(self.conversation_id, field="conversation_id"),
            self.epoch,
            check_roster_hash(self.roster_hash),
            self.iteration,
            self.chain_key,
            self.signing_public_key,
        ).encode()

    @classmethod
    def decode(cls, payload: bytes) -> SenderKeyDistribution:
        """Parse the payload of a decrypted `sender_key` device message (`MalformedMessageError`)."""
        frame = SenderKeyDistributionFrame.decode(payload)
        return cls(
            uuid_str(frame.conversation_id),
            frame.epoch,
            frame.roster_hash,
            frame.iteration,
            frame.chain_key,
            frame.signing_public_key,
        )


def _signed_bytes(context: GroupContext, ciphertext: bytes, nonce: bytes, tag: bytes) -> bytes:
    return length_prefixed(_SIGNATURE_LABEL, context.encode(), ciphertext, nonce, tag)


class OwnSenderKey:
    """This device's sending chain and signing key for one conversation epoch and roster view."""

    def __init__(
        self,
        conversation_id: str,
        epoch: int,
        roster_hash: bytes,
        chain: SendingChain,
        signing: Ed25519PrivateKey,
    ) -> None:
        self.conversation_id = conversation_id
        self.epoch = epoch
        self.roster_hash = roster_hash
        self._chain = chain
        self._signing = signing

    @classmethod
    def generate(cls, conversation_id: str, epoch: int, roster_hash: bytes) -> OwnSenderKey:
        if not 0 <= epoch <= U64_MAX:
            raise ValueError("epoch out of range")
        chain = SendingChain(os.urandom(CHAIN_KEY_SIZE))
        return cls(
            canonical_uuid(conversation_id),
            epoch,
            check_roster_hash(roster_hash),
            chain,
            Ed25519PrivateKey.generate(),
        )

    def distribution(self) -> SenderKeyDistribution:
        """The key as of now: receivers can read this and later messages, never earlier ones."""
        return SenderKeyDistribution(
            self.conversation_id,
            self.epoch,
            self.roster_hash,
            self._chain.index,
            self._chain.chain_key,
            self._signing.public_key().public_bytes_raw(),
        )

    def encrypt(self, context: GroupContext, plaintext: bytes) -> Sealed:
        """Seal on the next iteration and append the signature trailer."""
        if context.roster_hash != self.roster_hash or context.key_epoch != self.epoch:
            raise ValueError("the message context names another epoch or roster than this sender key")
        ensure_fits(GroupMessageHeader.LAYOUT.size, len(plaintext), SIGNATURE_SIZE)
        iteration, message_key = self._chain.next_message_key()
        header = GroupMessageHeader(iteration).encode()
        sealed = seal(message_key, header, plaintext, context.encode(), reserve=SIGNATURE_SIZE)
        signature = self._signing.sign(_signed_bytes(context, sealed.ciphertext, sealed.nonce, sealed.tag))
        return Sealed(sealed.ciphertext + signature, sealed.nonce, sealed.tag)

    def to_state(self) -> dict[str, Any]:
        return {
            "conversation_id": self.conversation_id,
            "epoch": self.epoch,
            "roster_hash": b64encode(self.roster_hash),
            "chain": self._chain.to_state(),
            "signing": b64encode(self._signing.private_bytes_raw()),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> OwnSenderKey:
        return cls(
            read_str(state, "conversation_id"),
            read_int(state, "epoch"),
            read_bytes(state, "roster_hash", size=ROSTER_HASH_SIZE),
            SendingChain.from_state(read_mapping(state, "chain")),
            Ed25519PrivateKey.from_private_bytes(read_bytes(state, "signing", size=32)),
        )


class PeerSenderKey:
    """Another device's sender key for one conversation epoch, as received under one roster view."""

    def __init__(self, chain: ReceivingChain, signing_public_key: bytes, roster_hash: bytes) -> None:
        self._chain = chain
        self.signing_public_key = signing_public_key
        self.roster_hash = roster_hash

    def decrypt(self, context: GroupContext, sealed: Sealed, *, now: float) -> bytes:
        """Check the sender's signature, then open the message on its chain index."""
        if context.roster_hash != self.roster_hash:
            # The AD would refuse it too; this names the cause (forked or changed membership view).
            raise DecryptionError("the sender key was installed under another view of the roster")
        header_size = GroupMessageHeader.LAYOUT.size
        if len(sealed.ciphertext) < header_size + SIGNATURE_SIZE:
            raise DecryptionError("group ciphertext is shorter than its header and signature")
        framed, signature = sealed.ciphertext[:-SIGNATURE_SIZE], sealed.ciphertext[-SIGNATURE_SIZE:]
        try:
            Ed25519PublicKey.from_public_bytes(self.signing_public_key).verify(
                signature, _signed_bytes(context, framed, sealed.nonce, sealed.tag)
            )
        except InvalidSignature:
            raise DecryptionError("the sender's signature does not verify") from None
        header = GroupMessageHeader.decode(framed)
        unsigned = Sealed(framed, sealed.nonce, sealed.tag)
        return self._chain.open(
            header.iteration,
            lambda key: open_sealed(key, unsigned, header_size, context.encode()),
            now=now,
        )

    def expire(self, now: float) -> None:
        """Drop skipped message keys that are too old (see `ratchet.SKIPPED_MAX_AGE`)."""
        self._chain.expire(now)

    def to_state(self) -> dict[str, Any]:
        return {
            "chain": self._chain.to_state(),
            "signing_public_key": b64encode(self.signing_public_key),
            "roster_hash": b64encode(self.roster_hash),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> PeerSenderKey:
        return cls(
            ReceivingChain.from_state(read_mapping(state, "chain")),
            read_bytes(state, "signing_public_key", size=32),
            read_bytes(state, "roster_hash", size=ROSTER_HASH_SIZE),
        )


_PeerKey = tuple[str, int, str, str]


class SenderKeyStore:
    """Own sender keys by (conversation, epoch), received ones by (conversation, epoch, user, device),
    and each conversation's epoch retirement clock."""

    def __init__(
        self,
        own: dict[tuple[str, int], OwnSenderKey] | None = None,
        peers: dict[_PeerKey, PeerSenderKey] | None = None,
        retirements: dict[str, EpochRetirement] | None = None,
        *,
        epoch_grace_seconds: float = 3600.0,
    ) -> None:
        self._own = own or {}
        self._peers = peers or {}
        self._retirements = retirements or {}
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

    def own_key(self, conversation_id: str, epoch: int, roster_hash: bytes) -> OwnSenderKey:
        """This device's sender key for the epoch and roster view, created on first use.

        Asking with another roster hash than the current key's makes a new key: a chain others hold
        under one roster must never carry messages under another. Creating one for a new epoch
        drops our keys for earlier epochs of that conversation: the server refuses messages in any
        epoch but the current one, so they can never be used again.
        """
        conversation_id = canonical_uuid(conversation_id, field="conversation_id")
        key = self._own.get((conversation_id, epoch))
        if key is None or key.roster_hash != check_roster_hash(roster_hash):
            key = OwnSenderKey.generate(conversation_id, epoch, roster_hash)
            for stale in [k for k in self._own if k[0] == conversation_id and k[1] < epoch]:
                del self._own[stale]
            self._own[(conversation_id, epoch)] = key
        return key

    def has_own_key(self, conversation_id: str, epoch: int, roster_hash: bytes) -> bool:
        key = self._own.get((canonical_uuid(conversation_id, field="conversation_id"), epoch))
        return key is not None and key.roster_hash == roster_hash

    def encrypt(self, context: GroupContext, plaintext: bytes, *, now: float) -> Sealed:
        """Seal with our key for the context's epoch and roster (`UnknownSenderKeyError` if none).

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
    ) -> bool:
        """Store a received sender key; True if stored, False if it repeats a key we hold.

        Refused (`SenderKeyRefusedError`) when its roster hash is not `expected_roster_hash` (the
        receiver's verified roster at that epoch) or its epoch is retired. A repeat of a key we
        hold (same signing key and roster) is ignored, so a re-delivered distribution cannot roll
        the chain back; a different key for the same slot replaces the old one.
        """
        expected_roster_hash = check_roster_hash(expected_roster_hash)
        conversation_id = canonical_uuid(distribution.conversation_id, field="conversation_id")
        if distribution.epoch < self._advance(conversation_id, now):
            raise SenderKeyRefusedError(f"epoch {distribution.epoch} of this conversation is retired")
        if distribution.roster_hash != expected_roster_hash:
            raise SenderKeyRefusedError(
                "the sender key is bound to another roster than the one verified for its epoch"
            )
        slot = (
            conversation_id,
            distribution.epoch,
            canonical_uuid(sender_id, field="sender_id"),
            canonical_uuid(sender_device_id, field="sender_device_id"),
        )
        existing = self._peers.get(slot)
        if existing is not None and existing.signing_public_key == distribution.signing_public_key:
            if existing.roster_hash != distribution.roster_hash:
                # A genuine sender makes a new key for another roster; one chain under two is forged.
                raise SenderKeyRefusedError("this sender key was already received under another roster")
            return False
        try:
            Ed25519PublicKey.from_public_bytes(distribution.signing_public_key)
        except ValueError:
            raise MalformedMessageError("the sender key's signing key is not an Ed25519 key") from None
        chain = ReceivingChain(distribution.chain_key, distribution.iteration)
        self._peers[slot] = PeerSenderKey(chain, distribution.signing_public_key, distribution.roster_hash)
        return True

    def decrypt(self, context: GroupContext, sealed: Sealed, *, now: float) -> bytes:
        """Open another device's message: retired epochs are refused, and expiry runs first."""
        conversation_id = canonical_uuid(context.conversation_id, field="conversation_id")
        retired_before = self._advance(conversation_id, now)
        self._expire_skipped(conversation_id, now)
        if context.key_epoch < retired_before:
            raise UnknownSenderKeyError(
                f"epoch {context.key_epoch} of this conversation is retired (epochs below "
                f"{retired_before} are no longer accepted)"
            )
        plaintext = self.peer_key(context).decrypt(context, sealed, now=now)
        self._retirement(conversation_id).observe(context.key_epoch, now=now, grace=self.epoch_grace_seconds)
        return plaintext

    def peer_key(self, context: GroupContext) -> PeerSenderKey:
        """The received sender key that opens a message with this context."""
        slot = (
            canonical_uuid(context.conversation_id, field="conversation_id"),
            context.key_epoch,
            canonical_uuid(context.sender_id, field="sender_id"),
            canonical_uuid(context.sender_device_id, field="sender_device_id"),
        )
        try:
            return self._peers[slot]
        except KeyError:
            raise UnknownSenderKeyError(
                f"no sender key of device {context.sender_device_id} for epoch {context.key_epoch}"
            ) from None

    def expire(self, now: float) -> None:
        """Apply due epoch retirements and drop too-old skipped keys in every conversation."""
        conversations = {slot[0] for slot in self._peers} | set(self._retirements)
        for conversation_id in conversations:
            self._advance(conversation_id, now)
            self._expire_skipped(conversation_id, now)

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

    def _expire_skipped(self, conversation_id: str, now: float) -> None:
        for slot, key in self._peers.items():
            if slot[0] == conversation_id:
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
                for (conversation_id, epoch, sender_id, sender_device_id), key in self._peers.items()
            ],
            "retirements": [
                {"conversation_id": conversation_id, **retirement.to_state()}
                for conversation_id, retirement in self._retirements.items()
            ],
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], *, epoch_grace_seconds: float) -> SenderKeyStore:
        own: dict[tuple[str, int], OwnSenderKey] = {}
        for item in read_list(state, "own"):
            key = OwnSenderKey.from_state(_mapping(item))
            own[(key.conversation_id, key.epoch)] = key
        peers: dict[_PeerKey, PeerSenderKey] = {}
        for item in read_list(state, "peers"):
            entry = _mapping(item)
            slot = (
                read_str(entry, "conversation_id"),
                read_int(entry, "epoch"),
                read_str(entry, "sender_id"),
                read_str(entry, "sender_device_id"),
            )
            peers[slot] = PeerSenderKey.from_state(read_mapping(entry, "key"))
        retirements: dict[str, EpochRetirement] = {}
        for item in read_list(state, "retirements"):
            entry = _mapping(item)
            retirements[read_str(entry, "conversation_id")] = EpochRetirement.from_state(entry)
        return cls(own, peers, retirements, epoch_grace_seconds=epoch_grace_seconds)


def _mapping(item: object) -> Mapping[str, Any]:
    if not isinstance(item, Mapping):
        raise ValueError("a sender key entry must be an object")
    return item
