"""Merkle tree hashing, proofs and their verification as RFC 9162 section 2.1 defines them.

Pure functions, no I/O. The tree of n leaves is the RFC's: its left subtree holds the largest power
of two below n, so every left child is a perfect subtree aligned on its size. The server keeps the
hash of every perfect subtree (`Node(level, index)` covers leaves [index * 2^level, (index + 1) *
2^level)), and any root or proof is built from O(log n) of them: `nodes_for_*` says which, before
they are read, so that one query fetches them all.

    leaf hash  SHA-256(0x00 || leaf)        node hash  SHA-256(0x01 || left || right)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

EMPTY_ROOT = hashlib.sha256(b"").digest()


@dataclass(frozen=True, order=True)
class Node:
    level: int
    index: int


NodeReader = Callable[[Node], bytes]


class ProofError(ValueError):
    """A proof that does not verify; the message says which check failed."""


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(size: int) -> int:
    """The largest power of two smaller than `size` (size >= 2)."""
    return 1 << ((size - 1).bit_length() - 1)


def subtree_hash(read: NodeReader, start: int, end: int) -> bytes:
    """MTH(D[start:end]) for a range of the RFC tree: a stored node if perfect, else the hash of
    its left (perfect) part and its right part."""
    size = end - start
    if size <= 0:
        raise ValueError("empty range")
    if size & (size - 1) == 0:
        level = size.bit_length() - 1
        if start % size:
            raise ValueError(f"range [{start}, {end}) is not a subtree of the tree")
        return read(Node(level, start >> level))
    k = _split(size)
    return node_hash(subtree_hash(read, start, start + k), subtree_hash(read, start + k, end))


def root(read: NodeReader, size: int) -> bytes:
    return EMPTY_ROOT if size == 0 else subtree_hash(read, 0, size)


def inclusion_path(read: NodeReader, index: int, size: int) -> list[bytes]:
    """PATH(m, D[n]) of RFC 9162 2.1.3.1: the siblings from the leaf up."""
    if not 0 <= index < size:
        raise ValueError("leaf index outside the tree")
    path: list[bytes] = []
    start, end = 0, size
    # Iterative form of the recursion; siblings are found top-down and returned bottom-up.
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            path.append(subtree_hash(read, start + k, end))
            end = start + k
        else:
            path.append(subtree_hash(read, start, start + k))
            start += k
    path.reverse()
    return path


def consistency_proof(read: NodeReader, first: int, second: int) -> list[bytes]:
    """PROOF(m, D[n]) of RFC 9162 2.1.4.1; empty when first is 0 or equals second."""
    if not 0 <= first <= second:
        raise ValueError("first must be from 0 to second")
    if first in (0, second):
        return []
    proof: list[bytes] = []
    start, end, m, whole = 0, second, first, True
    while True:
        if m == end - start:
            if not whole:
                proof.append(subtree_hash(read, start, end))
            break
        k = _split(end - start)
        if m <= k:
            proof.append(subtree_hash(read, start + k, end))
            end = start + k
        else:
            proof.append(subtree_hash(read, start, start + k))
            start, m, whole = start + k, m - k, False
    proof.reverse()
    return proof


def nodes_for(build: Callable[[NodeReader], object]) -> list[Node]:
    """The stored nodes a computation reads, found by running it on placeholder hashes: which
    nodes a root or proof needs depends only on the sizes and indexes, never on the hashes."""
    wanted: list[Node] = []

    def record(node: Node) -> bytes:
        wanted.append(node)
        return bytes(32)

    build(record)
    return sorted(set(wanted))


def reader(nodes: dict[Node, bytes]) -> NodeReader:
    def read(node: Node) -> bytes:
        try:
            return nodes[node]
        except KeyError:
            raise LookupError(f"node {node} is not stored") from None

    return read


# --- verification (RFC 9162 2.1.3.2 and 2.1.4.2) ------------------------------------------------


def verify_inclusion(leaf: bytes, index: int, size: int, path: Sequence[bytes], root_hash: bytes) -> None:
    """Raise ProofError unless `path` proves `leaf` at `index` in the tree of `size` with `root_hash`."""
    if not 0 <= index < size:
        raise ProofError("the leaf index is not inside the tree")
    fn, sn = index, size - 1
    r = leaf_hash(leaf)
    for p in path:
        if sn == 0:
            raise ProofError("the inclusion path is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the inclusion path is too short")
    if r != root_hash:
        raise ProofError("the inclusion path does not lead to the root hash")


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> None:
    """Raise ProofError unless `proof` shows the tree of size `first` with `first_root` is a prefix
    of the tree of size `second` with `second_root`."""
    if not 0 <= first <= second:
        raise ProofError("the first size is larger than the second")
    if first == second:
        if proof:
            raise ProofError("a proof between equal sizes must be empty")
        if first_root != second_root:
            raise ProofError("two different roots for the same size")
        return
    if first == 0:
        if proof:
            raise ProofError("a proof from the empty tree must be empty")
        return
    if not proof:
        raise ProofError("the consistency proof is empty")
    path = list(proof)
    if first & (first - 1) == 0:  # a power of two: the first root is the proof's implied start
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("the consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the consistency proof is too short")
    if fr != first_root:
        raise ProofError("the consistency proof does not lead to the first root")
    if sr != second_root:
        raise ProofError("the consistency proof does not lead to the second root")


class CompactRange:
    """The perfect subtrees of a growing tree (its right edge), for rebuilding a tree leaf by leaf
    in O(log n) memory: `veil transparency verify` and monitors. `push` returns every node the
    leaf completes, so a rebuild can compare them with stored ones."""

    def __init__(self) -> None:
        self.size = 0
        self._stack: list[tuple[int, bytes]] = []  # (level, hash), highest level first

    def push(self, leaf: bytes) -> list[tuple[Node, bytes]]:
        index = self.size
        h = leaf_hash(leaf)
        made = [(Node(0, index), h)]
        level = 0
        while self._stack and self._stack[-1][0] == level:
            _, left = self._stack.pop()
            h = node_hash(left, h)
            level += 1
            made.append((Node(level, index >> level), h))
        self._stack.append((level, h))
        self.size += 1
        return made

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        h = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            h = node_hash(left, h)
        return h


def root_of(leaves: Iterable[bytes]) -> bytes:
    compact = CompactRange()
    for leaf in leaves:
        compact.push(leaf)
    return compact.root()
