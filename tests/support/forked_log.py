"""A key-transparency log that lies: the real log's entries with some rewritten or removed, as a
malicious server would show them to some of its users, with heads signed by the real log key.

`ForkedLog(...).install(lying)` makes a `LyingServer` answer `head`, `inclusion` and `consistency`
from the forked entries, so every proof the lied-to client gets verifies against the forked head:
the fork is caught only by comparing heads with someone who sees the real log (gossip), or by a
consistency proof from a real head the client saw before. Tree hashes and proofs follow the
definitions of RFC 9162 (2.1.1, 2.1.3.1, 2.1.4.1) literally, independently of the server's code.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from typing import Any

import httpx

from tests.support.lying_server import LyingServer, Rewrite
from veil.transparency.head import LogKeys

Fork = Callable[[list[bytes]], list[bytes]]


def _leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def _node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def root(leaves: list[bytes]) -> bytes:
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return _leaf_hash(leaves[0])
    k = _split(len(leaves))
    return _node_hash(root(leaves[:k]), root(leaves[k:]))


def audit_path(index: int, leaves: list[bytes]) -> list[bytes]:
    if len(leaves) <= 1:
        return []
    k = _split(len(leaves))
    if index < k:
        return [*audit_path(index, leaves[:k]), root(leaves[k:])]
    return [*audit_path(index - k, leaves[k:]), root(leaves[:k])]


def consistency_proof(first: int, leaves: list[bytes]) -> list[bytes]:
    def subproof(m: int, part: list[bytes], whole: bool) -> list[bytes]:
        n = len(part)
        if m == n:
            return [] if whole else [root(part)]
        k = _split(n)
        if m <= k:
            return [*subproof(m, part[:k], whole), root(part[k:])]
        return [*subproof(m - k, part[k:], False), root(part[:k])]

    return [] if first in (0, len(leaves)) else subproof(first, leaves, True)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def rewrite_entries_of(user_hash: bytes) -> Fork:
    """A fork in which every entry of one user records other certified devices."""
    forged = hashlib.sha256(b"devices only some people are shown").digest()
    return lambda leaves: [leaf[:72] + forged if leaf[:32] == user_hash else leaf for leaf in leaves]


def remove_entries_of(user_hash: bytes) -> Fork:
    """A fork in which one user's entries were deleted."""
    return lambda leaves: [leaf for leaf in leaves if leaf[:32] != user_hash]


class ForkedLog:
    """The real log's entries (read with `honest`, a signed-in client that sees the truth) passed
    through `fork`, signed with `keys` (the real log key, as the server operator holds it)."""

    def __init__(self, honest: httpx.Client, keys: LogKeys, fork: Fork) -> None:
        self._honest = honest
        self._keys = keys
        self._fork = fork

    def leaves(self) -> list[bytes]:
        """The forked log as it stands now."""
        real: list[bytes] = []
        params: dict[str, Any] = {"start": 0, "limit": 200}
        while True:
            response = self._honest.get("/v1/transparency/entries", params=params)
            response.raise_for_status()
            body = response.json()
            real += [base64.b64decode(item["leaf"]) for item in body["items"]]
            if body["next_cursor"] is None:
                return self._fork(real)
            params = {"start": int(body["next_cursor"]), "limit": 200}

    def install(self, lying: LyingServer) -> list[Rewrite]:
        """Answer every head, inclusion and consistency request of `lying`'s client from the fork."""
        return [
            lying.rewrite("GET", "/v1/transparency/head", self._head),
            lying.rewrite("GET", "/v1/transparency/inclusion", self._inclusion),
            lying.rewrite("GET", "/v1/transparency/consistency", self._consistency),
        ]

    def _head(self, body: dict[str, Any]) -> dict[str, Any]:
        leaves = self.leaves()
        signed = self._keys.sign(len(leaves), int(body["timestamp"]), root(leaves))
        return {
            "tree_size": signed.tree_size,
            "root_hash": _b64(signed.root_hash),
            "timestamp": signed.timestamp_ms,
            "signature": _b64(signed.signature),
        }

    def _inclusion(self, body: dict[str, Any]) -> dict[str, Any]:
        size = int(body["tree_size"])
        leaves = self.leaves()[:size]
        user = base64.b64decode(body["leaf"])[:32]
        index = max(i for i, leaf in enumerate(leaves) if leaf[:32] == user)
        return {
            "leaf_index": index,
            "leaf": _b64(leaves[index]),
            "tree_size": size,
            "audit_path": [_b64(h) for h in audit_path(index, leaves)],
        }

    def _consistency(self, body: dict[str, Any]) -> dict[str, Any]:
        first, second = int(body["first"]), int(body["second"])
        proof = consistency_proof(first, self.leaves()[:second])
        return {"first": first, "second": second, "proof": [_b64(h) for h in proof]}
