"""One sender key at both ends: the sender's chain and signing key, a receiver's chain and
verifying key, and the distribution that hands the key from one to the other.

See `sender_keys` for the scheme, its rotation and the store that holds these keys.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from veil.client.protocol.codec import (
    U32_MAX,
    U64_MAX,
    b64encode,
    canonical_uuid,
    length_prefixed,
    read_bytes,
    read_int,
    read_mapping,
    read_optional_time,
    read_str,
    read_time,
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
from veil.client.protocol.errors import DecryptionError
from veil.client.protocol.framing import GroupMessageHeader, SenderKeyDistributionFrame
from veil.client.protocol.ratchet import CHAIN_KEY_SIZE, ReceivingChain, SendingChain

SIGNATURE_SIZE = 64
# Rotation limits of an own sender key (seconds, messages).
SENDER_KEY_MAX_AGE = 7 * 24 * 3600.0
SENDER_KEY_MAX_MESSAGES = 100
_SIGNATURE_LABEL = b"veil/group-signature/v1"


@dataclass(frozen=True)
class SenderKeyDistribution:
    """What a member device needs to read one sender key's messages, from `iteration` on."""

    conversation_id: str
    epoch: int
    roster_hash: bytes
    key_id: int
    iteration: int
    chain_key: bytes
    signing_public_key: bytes

    def encode(self) -> bytes:
        """The 130-byte binary payload (see `framing.SenderKeyDistributionFrame`)."""
        return SenderKeyDistributionFrame(
            uuid_bytes(self.conversation_id, field="conversation_id"),
            self.epoch,
            check_roster_hash(self.roster_hash),
            self.key_id,
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
            frame.key_id,
            frame.iteration,
            frame.chain_key,
            frame.signing_public_key,
        )


def _signed_bytes(context: GroupContext, ciphertext: bytes, nonce: bytes, tag: bytes) -> bytes:
    return length_prefixed(_SIGNATURE_LABEL, context.encode(), ciphertext, nonce, tag)


def _new_key_id(avoid: Iterable[int]) -> int:
    taken = set(avoid)
    while True:
        key_id = int.from_bytes(os.urandom(4), "big")
        if key_id not in taken:
            return key_id


class OwnSenderKey:
    """This device's sending chain and signing key for one conversation epoch and roster view.

    `created_at` is the caller's time when it was made; `installs_seen` is the conversation's
    count of newly installed peer keys at that moment (for `rotate_on_peer_key`).
    """

    def __init__(
        self,
        conversation_id: str,
        epoch: int,
        roster_hash: bytes,
        key_id: int,
        chain: SendingChain,
        signing: Ed25519PrivateKey,
        *,
        created_at: float,
        installs_seen: int = 0,
    ) -> None:
        if not 0 <= epoch <= U64_MAX:
            raise ValueError("epoch out of range")
        if not 0 <= key_id <= U32_MAX:
            raise ValueError("key_id out of range")
        self.conversation_id = canonical_uuid(conversation_id, field="conversation_id")
        self.epoch = epoch
        self.roster_hash = check_roster_hash(roster_hash)
        self.key_id = key_id
        self.created_at = float(created_at)
        self.installs_seen = installs_seen
        self._chain = chain
        self._signing = signing

    @classmethod
    def generate(
        cls,
        conversation_id: str,
        epoch: int,
        roster_hash: bytes,
        *,
        now: float,
        installs_seen: int = 0,
        avoid_key_ids: Iterable[int] = (),
    ) -> OwnSenderKey:
        """A fresh random key whose id is none of `avoid_key_ids`."""
        return cls(
            conversation_id,
            epoch,
            roster_hash,
            _new_key_id(avoid_key_ids),
            SendingChain(os.urandom(CHAIN_KEY_SIZE)),
            Ed25519PrivateKey.generate(),
            created_at=now,
            installs_seen=installs_seen,
        )

    @property
    def sent_count(self) -> int:
        """How many messages this key has sealed (its chain starts at iteration 0)."""
        return self._chain.index

    def rotation_due(self, now: float, peer_installs: int | None = None) -> bool:
        """Whether the key is too old or too used, or (given the conversation's install count)
        a peer key was installed since it was made."""
        return (
            now - self.created_at >= SENDER_KEY_MAX_AGE
            or self.sent_count >= SENDER_KEY_MAX_MESSAGES
            or (peer_installs is not None and peer_installs > self.installs_seen)
        )

    def distribution(self) -> SenderKeyDistribution:
        """The key as of now: receivers can read this and later messages, never earlier ones."""
        return SenderKeyDistribution(
            self.conversation_id,
            self.epoch,
            self.roster_hash,
            self.key_id,
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
        header = GroupMessageHeader(self.key_id, iteration).encode()
        sealed = seal(message_key, header, plaintext, context.encode(), reserve=SIGNATURE_SIZE)
        signature = self._signing.sign(_signed_bytes(context, sealed.ciphertext, sealed.nonce, sealed.tag))
        return Sealed(sealed.ciphertext + signature, sealed.nonce, sealed.tag)

    def to_state(self) -> dict[str, Any]:
        return {
            "conversation_id": self.conversation_id,
            "epoch": self.epoch,
            "roster_hash": b64encode(self.roster_hash),
            "key_id": self.key_id,
            "created_at": self.created_at,
            "installs_seen": self.installs_seen,
            "chain": self._chain.to_state(),
            "signing": b64encode(self._signing.private_bytes_raw()),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> OwnSenderKey:
        return cls(
            read_str(state, "conversation_id"),
            read_int(state, "epoch"),
            read_bytes(state, "roster_hash", size=ROSTER_HASH_SIZE),
            read_int(state, "key_id", maximum=U32_MAX),
            SendingChain.from_state(read_mapping(state, "chain")),
            Ed25519PrivateKey.from_private_bytes(read_bytes(state, "signing", size=32)),
            created_at=read_time(state, "created_at"),
            installs_seen=read_int(state, "installs_seen"),
        )


class PeerSenderKey:
    """One of another device's sender keys for one conversation epoch, received under one roster view.

    `superseded_at` is the caller's time when a newer key of the same sender device and epoch was
    installed (None while this is the newest): the receiver keeps it for a while after that.
    """

    def __init__(
        self,
        key_id: int,
        chain: ReceivingChain,
        signing_public_key: bytes,
        roster_hash: bytes,
        *,
        superseded_at: float | None = None,
    ) -> None:
        self.key_id = key_id
        self._chain = chain
        self.signing_public_key = signing_public_key
        self.roster_hash = roster_hash
        self.superseded_at = superseded_at

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
        if header.key_id != self.key_id:
            raise DecryptionError(f"the message names sender key {header.key_id}, not {self.key_id}")
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
            "key_id": self.key_id,
            "chain": self._chain.to_state(),
            "signing_public_key": b64encode(self.signing_public_key),
            "roster_hash": b64encode(self.roster_hash),
            "superseded_at": self.superseded_at,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> PeerSenderKey:
        return cls(
            read_int(state, "key_id", maximum=U32_MAX),
            ReceivingChain.from_state(read_mapping(state, "chain")),
            read_bytes(state, "signing_public_key", size=32),
            read_bytes(state, "roster_hash", size=ROSTER_HASH_SIZE),
            superseded_at=read_optional_time(state, "superseded_at"),
        )
