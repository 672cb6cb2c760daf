"""Checking the key-transparency log (ADR 0019) as a client: proofs, signed heads, leaves, and the
latest head this client has seen.

Pure, no I/O. Hashing and proofs are RFC 9162's (section 2.1): leaf `SHA-256(0x00 || leaf)`, node
`SHA-256(0x01 || left || right)`; the verifiers follow 2.1.3.2 and 2.1.4.2 step by step. Nothing
here generates proofs: that is the server's job, and the client must not share its code.

An inclusion proof alone does not bind the tree size (a leaf's path can be the same in trees of
neighbouring sizes); the signed head does, so `InclusionProof.verify` takes a verified head and
requires the proof to be for exactly its size.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from veil.client.protocol.codec import b64encode, read_bytes, read_int, read_list, u64
from veil.client.protocol.errors import CryptoError
from veil.client.protocol.identity import Id, id_bytes
from veil.client.protocol.trust import ListedDevice

HASH_SIZE = 32
SIGNATURE_SIZE = 64
EMPTY_ROOT = hashlib.sha256(b"").digest()
HEAD_CONTEXT = b"veil/tree-head/v1"
USER_CONTEXT = b"veil/transparency/user/v1"
LEAF_SIZE = 104
NO_MASTER_KEY = bytes(32)
STATE_VERSION = 1

SPLIT_VIEW = "the server is showing different keys to different people"


class TransparencyError(CryptoError):
    """Something the key-transparency log says does not verify; the message names what."""


class SplitViewError(TransparencyError):
    """Two heads the log signed cannot both be true: the log was forked or its history rewritten."""


def _leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def _node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _shift_to_odd_or_zero(fn: int, sn: int) -> tuple[int, int]:
    """Right-shift both until fn's lowest bit is set or fn is 0 (a step of both RFC verifiers)."""
    while fn and not fn & 1:
        fn, sn = fn >> 1, sn >> 1
    return fn, sn


# --- RFC 9162 verification --------------------------------------------------------------------------


def verify_inclusion(
    leaf: bytes, index: int, tree_size: int, audit_path: Sequence[bytes], root_hash: bytes
) -> None:
    """RFC 9162 2.1.3.2: raise TransparencyError unless `audit_path` proves `leaf` at `index` in a
    tree of `tree_size` leaves whose root is `root_hash`."""
    what = f"inclusion proof of leaf {index} in the tree of size {tree_size}"
    if not 0 <= index < tree_size:
        raise TransparencyError(f"{what}: the leaf index is outside the tree")
    fn, sn = index, tree_size - 1
    r = _leaf_hash(leaf)
    for p in audit_path:
        if sn == 0:
            raise TransparencyError(f"{what}: the audit path is too long")
        if fn & 1 or fn == sn:
            r = _node_hash(p, r)
            fn, sn = _shift_to_odd_or_zero(fn, sn)
        else:
            r = _node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise TransparencyError(f"{what}: the audit path is too short")
    if r != root_hash:
        raise TransparencyError(f"{what}: the audit path does not lead to the root hash")


def verify_consistency(
    first_size: int, second_size: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 2.1.4.2: raise TransparencyError unless `proof` shows that the tree of `first_size`
    leaves with `first_root` is a prefix of the tree of `second_size` leaves with `second_root`.
    Equal sizes need equal roots and an empty proof; the empty tree is a prefix of every tree."""
    what = f"consistency proof from size {first_size} to {second_size}"
    if not 0 <= first_size <= second_size:
        raise TransparencyError(f"{what}: the first size is not from 0 to the second")
    if first_size in (0, second_size):
        if proof:
            raise TransparencyError(f"{what}: the proof must be empty")
        if first_size == 0 and first_root != EMPTY_ROOT:
            raise TransparencyError(f"{what}: the first root is not the empty tree's")
        if first_size == second_size and first_root != second_root:
            raise TransparencyError(f"{what}: two different roots for the same size")
        return
    if not proof:
        raise TransparencyError(f"{what}: the proof is empty")
    path = list(proof)
    if first_size & (first_size - 1) == 0:
        path.insert(0, first_root)  # a perfect first tree is itself the proof's first node
    fn, sn = first_size - 1, second_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise TransparencyError(f"{what}: the proof is too long")
        if fn & 1 or fn == sn:
            fr, sr = _node_hash(c, fr), _node_hash(c, sr)
            fn, sn = _shift_to_odd_or_zero(fn, sn)
        else:
            sr = _node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise TransparencyError(f"{what}: the proof is too short")
    if fr != first_root:
        raise TransparencyError(f"{what}: the proof does not lead to the first root")
    if sr != second_root:
        raise TransparencyError(f"{what}: the proof does not lead to the second root")


# --- signed tree heads ------------------------------------------------------------------------------


def _from_wire(what: str, body: Mapping[str, Any], names: set[str]) -> None:
    if not isinstance(body, Mapping) or set(body) != names:
        raise TransparencyError(f"malformed {what}: it has exactly the members {sorted(names)}")


@dataclass(frozen=True)
class SignedTreeHead:
    """A tree head as the server (or a peer, by gossip) presents it; not yet checked."""

    tree_size: int
    timestamp_ms: int
    root_hash: bytes
    signature: bytes

    @classmethod
    def from_wire(cls, body: Mapping[str, Any]) -> SignedTreeHead:
        """From `{tree_size, root_hash, timestamp, signature}` (GET /v1/transparency/head)."""
        _from_wire("tree head", body, {"tree_size", "root_hash", "timestamp", "signature"})
        try:
            return cls(
                tree_size=read_int(body, "tree_size"),
                timestamp_ms=read_int(body, "timestamp"),
                root_hash=read_bytes(body, "root_hash", size=HASH_SIZE),
                signature=read_bytes(body, "signature", size=SIGNATURE_SIZE),
            )
        except ValueError as error:
            raise TransparencyError(f"malformed tree head: {error}") from None

    def to_wire(self) -> dict[str, Any]:
        return {
            "tree_size": self.tree_size,
            "root_hash": b64encode(self.root_hash),
            "timestamp": self.timestamp_ms,
            "signature": b64encode(self.signature),
        }

    def signed_bytes(self) -> bytes:
        """`veil/tree-head/v1 || tree_size u64 BE || timestamp ms u64 BE || root_hash`."""
        return HEAD_CONTEXT + u64(self.tree_size) + u64(self.timestamp_ms) + self.root_hash

    def verify(self, log_public_key: bytes) -> VerifiedTreeHead:
        """This head, once its signature verifies under the log's Ed25519 key; else TransparencyError."""
        what = f"the signed tree head of size {self.tree_size}"
        try:
            Ed25519PublicKey.from_public_bytes(log_public_key).verify(self.signature, self.signed_bytes())
        except (InvalidSignature, ValueError):
            raise TransparencyError(f"{what}: the log key's signature does not verify") from None
        if self.tree_size == 0 and self.root_hash != EMPTY_ROOT:
            raise TransparencyError(f"{what}: the root is not the empty tree's")
        return VerifiedTreeHead(self.tree_size, self.timestamp_ms, self.root_hash, self.signature)


@dataclass(frozen=True)
class VerifiedTreeHead(SignedTreeHead):
    """A head whose signature verified under the log key (made by `SignedTreeHead.verify`)."""


@dataclass(frozen=True)
class InclusionProof:
    """A user's leaf and its audit path (GET /v1/transparency/inclusion)."""

    leaf_index: int
    leaf: bytes
    tree_size: int
    audit_path: tuple[bytes, ...]

    @classmethod
    def from_wire(cls, body: Mapping[str, Any]) -> InclusionProof:
        _from_wire("inclusion proof", body, {"leaf_index", "leaf", "tree_size", "audit_path"})
        try:
            path = read_list(body, "audit_path")
            return cls(
                leaf_index=read_int(body, "leaf_index"),
                leaf=read_bytes(body, "leaf", size=LEAF_SIZE),
                tree_size=read_int(body, "tree_size"),
                audit_path=tuple(read_bytes({"hash": h}, "hash", size=HASH_SIZE) for h in path),
            )
        except ValueError as error:
            raise TransparencyError(f"malformed inclusion proof: {error}") from None

    def verify(self, head: VerifiedTreeHead) -> Leaf:
        """The proven leaf, decoded, if the proof holds in the tree `head` signed."""
        if self.tree_size != head.tree_size:
            raise TransparencyError(
                f"the inclusion proof is for the tree of size {self.tree_size}, "
                f"not the signed head's {head.tree_size}"
            )
        verify_inclusion(self.leaf, self.leaf_index, self.tree_size, self.audit_path, head.root_hash)
        return Leaf.decode(self.leaf)


@dataclass(frozen=True)
class ConsistencyProof:
    """A consistency proof between two sizes (GET /v1/transparency/consistency)."""

    first: int
    second: int
    proof: tuple[bytes, ...]

    @classmethod
    def from_wire(cls, body: Mapping[str, Any]) -> ConsistencyProof:
        _from_wire("consistency proof", body, {"first", "second", "proof"})
        try:
            path = read_list(body, "proof")
            return cls(
                first=read_int(body, "first"),
                second=read_int(body, "second"),
                proof=tuple(read_bytes({"hash": h}, "hash", size=HASH_SIZE) for h in path),
            )
        except ValueError as error:
            raise TransparencyError(f"malformed consistency proof: {error}") from None


# --- leaves -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Leaf:
    """One state of a user's keys as the log records it (ADR 0019; all integers big-endian):
    SHA-256(USER_CONTEXT || user_id) (32) || version (u64) || master key (32; zeros: none) ||
    SHA-256 over the certified devices by ascending raw device_id, each device_id (16) ||
    identity_key (32) || signing_key (32) || certificate (64)."""

    user_hash: bytes
    version: int
    master_key: bytes
    devices_hash: bytes

    def encode(self) -> bytes:
        return self.user_hash + u64(self.version) + self.master_key + self.devices_hash

    @classmethod
    def decode(cls, raw: bytes) -> Leaf:
        if len(raw) != LEAF_SIZE:
            raise TransparencyError(f"a log leaf is {LEAF_SIZE} bytes, not {len(raw)}")
        return cls(raw[:32], int.from_bytes(raw[32:40], "big"), raw[40:72], raw[72:])


def user_hash(user_id: Id) -> bytes:
    return hashlib.sha256(USER_CONTEXT + id_bytes(user_id, field="user_id")).digest()


def devices_hash(listing: Iterable[ListedDevice]) -> bytes:
    """The hash of the certified devices of a listing; uncertified (pending) ones are not logged."""
    certified = sorted(
        ((id_bytes(d.device_id, field="device_id"), d) for d in listing if d.certificate is not None),
        key=lambda pair: pair[0],
    )
    digest = hashlib.sha256()
    for raw_id, device in certified:
        assert device.certificate is not None  # filtered above
        digest.update(raw_id + device.identity_key + device.signing_key + device.certificate)
    return digest.digest()


def expected_leaf(
    user_id: Id, version: int, master_key: bytes | None, listing: Iterable[ListedDevice]
) -> Leaf:
    """The leaf the log must hold for a user whose master key and device listing are these."""
    return Leaf(user_hash(user_id), version, master_key or NO_MASTER_KEY, devices_hash(listing))


def require_leaf_matches(
    leaf: Leaf, user_id: Id, master_key: bytes | None, listing: Iterable[ListedDevice]
) -> None:
    """TransparencyError unless `leaf` records exactly this user's master key and certified
    devices. The version is not compared: only the log knows how many changes came before."""
    expected = expected_leaf(user_id, leaf.version, master_key, listing)
    if leaf.user_hash != expected.user_hash:
        raise TransparencyError("the log's leaf is of another user")
    if leaf.master_key != expected.master_key:
        raise TransparencyError("the master key the server shows is not the one in the log")
    if leaf.devices_hash != expected.devices_hash:
        raise TransparencyError("the certified devices the server lists are not those in the log")


# --- the latest head seen -----------------------------------------------------------------------------


class HeadStore:
    """The latest verified head this client has seen. It only moves forward, and only to a head
    that a consistency proof shows extends it; every head it is shown, newer or older, must be
    consistent with it."""

    def __init__(self, head: VerifiedTreeHead | None = None) -> None:
        self._head = head

    @property
    def head(self) -> VerifiedTreeHead | None:
        return self._head

    def advance(self, new_head: VerifiedTreeHead, proof: ConsistencyProof | None = None) -> VerifiedTreeHead:
        """Check `new_head` against the stored head and keep the larger; return the stored head.

        The first head is taken as is. Another of the same size must have the same root; one of
        another size needs `proof` from the smaller size to the larger (a smaller head is checked,
        never stored: the store does not roll back). Two heads that cannot both be true are a
        SplitViewError; a missing or mismatched proof a TransparencyError, the store unchanged.
        """
        stored = self._head
        if stored is None:
            self._head = new_head
            return new_head
        if new_head.tree_size == stored.tree_size:
            if new_head.root_hash != stored.root_hash:
                raise SplitViewError(
                    f"{SPLIT_VIEW}: two signed heads of size {stored.tree_size} with different roots"
                )
            return stored
        older, newer = sorted((stored, new_head), key=lambda head: head.tree_size)
        sizes = f"from size {older.tree_size} to {newer.tree_size}"
        if proof is None:
            raise TransparencyError(f"a consistency proof {sizes} is required")
        if (proof.first, proof.second) != (older.tree_size, newer.tree_size):
            raise TransparencyError(
                f"the consistency proof is from size {proof.first} to {proof.second}, not {sizes}"
            )
        try:
            verify_consistency(
                older.tree_size, newer.tree_size, older.root_hash, newer.root_hash, proof.proof
            )
        except TransparencyError as error:
            raise SplitViewError(
                f"{SPLIT_VIEW}: the head of size {newer.tree_size} does not extend the head of size "
                f"{older.tree_size} ({error})"
            ) from None
        self._head = newer
        return newer

    def to_state(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "head": None if self._head is None else self._head.to_wire()}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> HeadStore:
        """Rebuild from `to_state` output (the keystore, authenticated: the head verified when it
        was stored, and the log key may have rotated since); anything else is a ValueError."""
        if not isinstance(state, Mapping) or set(state) != {"version", "head"}:
            raise ValueError("a head store has exactly the members ['head', 'version']")
        if state["version"] != STATE_VERSION or isinstance(state["version"], bool):
            raise ValueError(f"unsupported head store version {state['version']!r}")
        if state["head"] is None:
            return cls()
        try:
            head = SignedTreeHead.from_wire(state["head"])
        except TransparencyError as error:
            raise ValueError(str(error)) from None
        return cls(VerifiedTreeHead(head.tree_size, head.timestamp_ms, head.root_hash, head.signature))
