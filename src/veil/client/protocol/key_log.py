"""What this device remembers of the key-transparency log (ADR 0019), and head gossip.

Pure, no I/O: the SDK (`veil.client.sdk.key_log`) asks the server and feeds the answers in here.
Kept in the key store:

- the log's public key, pinned the first time it is fetched (a head signed by another key is
  refused: the server cannot swap the key that makes its heads worth anything), and the keys it
  replaced: a rotation is followed only along endorsements, each new key signed by the one before
  (`follow_endorsements`);
- the latest verified head (`HeadStore`: it only grows, and only along consistency proofs);
- per user, the highest leaf version seen, so the log cannot show an older state of a user again;
- for the own user, the monitor: the last own leaf version and certified devices seen, and the
  changes found since (`OwnChange`), which `veil-client transparency` lists;
- gossip: when this device last sent its head to each conversation, and the conversations where a
  peer's head proved a split view (nothing is sent there until the user resumes it).

A gossip payload is the plaintext of a `system` group message: `veil/gossip/tree-head/v1` ||
tree_size (u64) || timestamp ms (u64) || root hash (32) || signature (64), all big-endian.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from veil.client.protocol.codec import b64decode, b64encode, canonical_uuid, u64
from veil.client.protocol.errors import MalformedMessageError
from veil.client.protocol.transparency import (
    HASH_SIZE,
    SIGNATURE_SIZE,
    HeadStore,
    SignedTreeHead,
    TransparencyError,
)

GOSSIP_LABEL = b"veil/gossip/tree-head/v1"
ENDORSEMENT_CONTEXT = b"veil/log-key/v1"
GOSSIP_SIZE = len(GOSSIP_LABEL) + 8 + 8 + HASH_SIZE + SIGNATURE_SIZE
GOSSIP_INTERVAL_SECONDS = 24 * 3600
STATE_VERSION = 1
MAX_OWN_CHANGES = 200  # the monitor's history; the oldest are dropped first


def encode_gossip(head: SignedTreeHead) -> bytes:
    return GOSSIP_LABEL + u64(head.tree_size) + u64(head.timestamp_ms) + head.root_hash + head.signature


def is_gossip(plaintext: bytes) -> bool:
    return plaintext.startswith(GOSSIP_LABEL)


def decode_gossip(plaintext: bytes) -> SignedTreeHead:
    """The head a gossip payload carries (not yet verified); MalformedMessageError otherwise."""
    if not is_gossip(plaintext) or len(plaintext) != GOSSIP_SIZE:
        raise MalformedMessageError(f"a tree-head gossip payload is {GOSSIP_SIZE} bytes with its label")
    body = plaintext[len(GOSSIP_LABEL) :]
    return SignedTreeHead(
        tree_size=int.from_bytes(body[:8], "big"),
        timestamp_ms=int.from_bytes(body[8:16], "big"),
        root_hash=body[16 : 16 + HASH_SIZE],
        signature=body[16 + HASH_SIZE :],
    )


@dataclass(frozen=True)
class KeyEndorsement:
    """`previous_key` vouching for its successor `public_key` (GET /v1/transparency/key)."""

    public_key: bytes
    previous_key: bytes
    signature: bytes


def follow_endorsements(pinned: bytes, served: bytes, endorsements: Sequence[KeyEndorsement]) -> list[bytes]:
    """The keys after `pinned` up to `served`, each endorsed by the one before it (a signature over
    `veil/log-key/v1` || the new key); TransparencyError if the endorsements lead nowhere else."""
    chain: list[bytes] = []
    current = pinned
    while current != served:
        step = next((e for e in endorsements if e.previous_key == current), None)
        if step is None or len(chain) >= len(endorsements):
            raise TransparencyError(
                "the log's key changed to one that the key this device pinned never endorsed"
            )
        try:
            Ed25519PublicKey.from_public_bytes(current).verify(
                step.signature, ENDORSEMENT_CONTEXT + step.public_key
            )
        except (InvalidSignature, ValueError):
            raise TransparencyError("an endorsement of the log's new key does not verify") from None
        current = step.public_key
        chain.append(current)
    return chain


@dataclass(frozen=True)
class OwnChange:
    """A change of the own user's keys that the log records, as this device's monitor found it.

    `seen_at_ms` is the timestamp of the head in which this device first saw it (the change happened
    before, after the previous head it had seen); `description` is for people; `expected` says
    whether this device made the change itself (or knew of it: its own approval of a device)."""

    version: int
    seen_at_ms: int
    description: str
    expected: bool

    def to_state(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "seen_at_ms": self.seen_at_ms,
            "description": self.description,
            "expected": self.expected,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> OwnChange:
        version, seen_at_ms = int(state["version"]), int(state["seen_at_ms"])
        return cls(version, seen_at_ms, str(state["description"]), bool(state["expected"]))


@dataclass(frozen=True)
class PendingGossip:
    """A head `sender_id` sent to a conversation, not yet checked; `attempts` failed so far."""

    conversation_id: str
    sender_id: str
    head: SignedTreeHead
    attempts: int = 0

    def to_state(self) -> dict[str, Any]:
        return {
            "conversation_id": self.conversation_id,
            "sender_id": self.sender_id,
            "head": self.head.to_wire(),
            "attempts": self.attempts,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> PendingGossip:
        return cls(
            canonical_uuid(str(state["conversation_id"])),
            canonical_uuid(str(state["sender_id"])),
            SignedTreeHead.from_wire(state["head"]),
            int(state["attempts"]),
        )


@dataclass
class KeyLogState:
    """Everything this device keeps about the log; see the module docstring."""

    log_key: bytes | None = None
    # Keys the log rotated away from, each with the largest tree size it may still have signed (the
    # head this device held when it followed the rotation): a leaked old key signs nothing newer.
    retired_log_keys: list[tuple[bytes, int]] = field(default_factory=list)
    heads: HeadStore = field(default_factory=HeadStore)
    versions: dict[str, int] = field(default_factory=dict)
    own_version: int = 0
    own_devices: dict[str, str] = field(default_factory=dict)  # device id -> fingerprint
    own_master: bytes | None = None  # the master key in the last own leaf seen
    own_changes: list[OwnChange] = field(default_factory=list)
    approved_here: set[str] = field(default_factory=set)  # devices this device certified, not yet seen
    own_checked_size: int = 0  # the own user's entries were looked through up to this tree size
    gossiped: dict[str, float] = field(default_factory=dict)  # conversation id -> when
    split_views: dict[str, str] = field(default_factory=dict)  # conversation id -> what was seen
    # Heads members sent that are not yet checked against the log: kept until a check decides, so
    # a server that fails the check once cannot skip it.
    pending_gossip: list[PendingGossip] = field(default_factory=list)

    def note_version(self, user_id: str, version: int) -> int | None:
        """Remember `version` for `user_id`; the higher version seen before if this one is lower."""
        user_id = canonical_uuid(user_id)
        before = self.versions.get(user_id, 0)
        if version < before:
            return before
        self.versions[user_id] = version
        return None

    def observe_own(
        self,
        version: int,
        master_key: bytes | None,
        certified: Mapping[str, str],
        held_master: bytes | None,
        seen_at_ms: int,
        this_device: str,
    ) -> list[OwnChange]:
        """The monitor: compare the own user's leaf (already proven and matched to the listing:
        `version`, `master_key`, `certified` device id -> fingerprint) with the last one seen, and
        record what changed. `held_master` is the master key this device holds (None: not yet
        linked). A change is `expected` when this device made it, or knows the key it shows, or it
        is the approval of this very device."""
        if version <= self.own_version:
            return []
        found: list[OwnChange] = []

        def change(description: str, expected: bool) -> None:
            found.append(OwnChange(version, seen_at_ms, description, expected))

        first = self.own_version == 0
        if first:
            change(f"first look at the log: {len(certified)} approved device(s)", True)
        else:
            if master_key != self.own_master:
                if master_key is None:
                    change("your master key was removed (the account was closed)", False)
                else:
                    change("your master key was replaced (a reset)", master_key == held_master)
            added = sorted(certified.keys() - self.own_devices.keys())
            removed = sorted(self.own_devices.keys() - certified.keys())
            for device_id in added:
                if device_id == this_device:
                    change(f"this device ({certified[device_id]}) was approved", True)
                    continue
                expected = device_id in self.approved_here
                by = "on this device" if expected else "by another of your devices, or with your master key"
                change(f"device {device_id[:8]} ({certified[device_id]}) was approved {by}", expected)
            for device_id in removed:
                change(f"device {device_id[:8]} ({self.own_devices[device_id]}) is no longer approved", True)
            # One entry per approval and per removal, except that a reset drops every certificate
            # in its own entry; whatever the versions say beyond that came and went unseen.
            reset = master_key != self.own_master
            explained = int(reset) + len(added) + (0 if reset else len(removed))
            unexplained = version - self.own_version - explained
            if unexplained > 0:
                change(f"{unexplained} more change(s) came and went before this device looked", False)
        self.approved_here -= certified.keys()
        self.own_version, self.own_master, self.own_devices = version, master_key, dict(certified)
        for item in found:
            self.own_changes.append(item)
        del self.own_changes[:-MAX_OWN_CHANGES]
        return found

    def gossip_due(self, conversation_id: str, now: float) -> bool:
        last = self.gossiped.get(canonical_uuid(conversation_id))
        return self.heads.head is not None and (last is None or now - last >= GOSSIP_INTERVAL_SECONDS)

    def to_state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "log_key": None if self.log_key is None else b64encode(self.log_key),
            "retired_log_keys": [
                {"key": b64encode(key), "max_tree_size": size} for key, size in self.retired_log_keys
            ],
            "heads": self.heads.to_state(),
            "versions": dict(self.versions),
            "own_version": self.own_version,
            "own_devices": dict(self.own_devices),
            "own_master": None if self.own_master is None else b64encode(self.own_master),
            "own_changes": [change.to_state() for change in self.own_changes],
            "approved_here": sorted(self.approved_here),
            "own_checked_size": self.own_checked_size,
            "gossiped": dict(self.gossiped),
            "pending_gossip": [pending.to_state() for pending in self.pending_gossip],
            "split_views": dict(self.split_views),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> KeyLogState:
        """Rebuild from `to_state` output; ValueError (or KeyError/TypeError) on anything else."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported key-log state version {state.get('version')!r}")
        log_key, own_master = state["log_key"], state["own_master"]
        return cls(
            log_key=None if log_key is None else b64decode(log_key, size=32, field="log_key"),
            retired_log_keys=[
                (b64decode(k["key"], size=32, field="log_key"), int(k["max_tree_size"]))
                for k in state["retired_log_keys"]
            ],
            heads=HeadStore.from_state(state["heads"]),
            versions={canonical_uuid(str(k)): int(v) for k, v in state["versions"].items()},
            own_version=int(state["own_version"]),
            own_devices={str(k): str(v) for k, v in state["own_devices"].items()},
            own_master=None if own_master is None else b64decode(own_master, size=32, field="own_master"),
            own_changes=[OwnChange.from_state(c) for c in state["own_changes"]],
            approved_here={canonical_uuid(str(d)) for d in state["approved_here"]},
            own_checked_size=int(state["own_checked_size"]),
            gossiped={canonical_uuid(str(k)): float(v) for k, v in state["gossiped"].items()},
            pending_gossip=[PendingGossip.from_state(p) for p in state["pending_gossip"]],
            split_views={canonical_uuid(str(k)): str(v) for k, v in state["split_views"].items()},
        )
