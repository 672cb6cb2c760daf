"""Key-transparency use cases: the log key, signed tree heads, entries for monitors, inclusion and
consistency proofs. Every proof is read from O(log n) stored subtree hashes (`tree.nodes_for`
names them, one query fetches them), never by rebuilding the tree."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from veil.core.clock import Clock
from veil.core.db import Connection, Database
from veil.core.problems import FieldError, Problem, not_found, validation_failed
from veil.transparency import store, tree
from veil.transparency.head import LogKeys, TreeHead
from veil.transparency.leaf import user_hash

T = TypeVar("T")


@dataclass(frozen=True)
class Inclusion:
    leaf_index: int
    leaf: bytes
    tree_size: int
    audit_path: list[bytes]


@dataclass(frozen=True)
class Entries:
    items: list[tuple[int, bytes]]
    next_start: int | None


def _invalid(name: str, msg: str) -> Problem:
    return validation_failed([FieldError((name,), msg)])


async def _computed(conn: Connection, build: Callable[[tree.NodeReader], T]) -> T:
    """Run a root or proof computation on the stored nodes it needs, fetched in one query."""
    wanted = tree.nodes_for(build)
    return build(tree.reader(await store.nodes(conn, wanted)))


class TransparencyService:
    def __init__(self, db: Database, keys: LogKeys, clock: Clock) -> None:
        self._db = db
        self._keys = keys
        self._clock = clock

    @property
    def public_key(self) -> bytes:
        return self._keys.public_key

    @property
    def keys(self) -> LogKeys:
        return self._keys

    async def head(self) -> TreeHead:
        """The signed head of the whole log as committed now. A head is signed once per size and
        kept: asking again before the log grows returns the same head, unless the log key was
        rotated since it was signed; then the same size and root come signed by the active key
        (`GET /v1/transparency/key` names only that one), and the stored head stays the record."""
        now = self._clock.now()
        async with self._db.transaction("transparency_head") as conn:
            size = await store.tree_size(conn)
            latest = await store.latest_head(conn)
            if latest is not None and latest.tree_size >= size:
                if latest.public_key == self._keys.public_key:
                    return latest
                return self._keys.sign(latest.tree_size, int(now.timestamp() * 1000), latest.root_hash)
            root = await _computed(conn, lambda read: tree.root(read, size))
            await store.insert_head(conn, self._keys.sign(size, int(now.timestamp() * 1000), root), now)
            stored = await store.head_of_size(conn, size)
        assert stored is not None  # inserted above, or by a concurrent request; heads stay
        return stored

    async def _signed_size(self, conn: Connection) -> int:
        latest = await store.latest_head(conn)
        return latest.tree_size if latest is not None else 0

    async def inclusion(self, user_id: uuid.UUID, tree_size: int | None) -> Inclusion:
        """The user's latest leaf in the tree of `tree_size` leaves (by default the latest signed
        head's) and its audit path. A size beyond the latest signed head is a 422; a user with no
        leaf in that tree a 404."""
        if tree_size is None:
            tree_size = (await self.head()).tree_size
        async with self._db.transaction("transparency_inclusion", isolation="repeatable_read") as conn:
            # As the device listing: nothing about an account that is not active (not even that
            # it exists).
            if not await store.user_is_active(conn, user_id):
                raise not_found(f"This user has no leaf in the tree of size {tree_size}.")
            signed = await self._signed_size(conn)
            if tree_size > signed:
                raise _invalid("tree_size", f"Beyond the latest signed tree head (size {signed}).")
            found = await store.latest_leaf_of(conn, user_hash(user_id), tree_size)
            if found is None:
                raise not_found(f"This user has no leaf in the tree of size {tree_size}.")
            index, leaf = found
            path = await _computed(conn, lambda read: tree.inclusion_path(read, index, tree_size))
        return Inclusion(index, leaf, tree_size, path)

    async def consistency(self, first: int, second: int) -> list[bytes]:
        """RFC 9162 consistency proof from the tree of `first` leaves to that of `second`."""
        if first > second:
            raise _invalid("first", "Must not be larger than `second`.")
        async with self._db.transaction("transparency_consistency", isolation="repeatable_read") as conn:
            signed = await self._signed_size(conn)
            if second > signed:
                raise _invalid("second", f"Beyond the latest signed tree head (size {signed}).")
            return await _computed(conn, lambda read: tree.consistency_proof(read, first, second))

    async def entries(self, start: int, limit: int) -> Entries:
        async with self._db.transaction("transparency_entries", isolation="repeatable_read") as conn:
            items = await store.entries(conn, start, limit)
            size = await store.tree_size(conn)
        after = items[-1][0] + 1 if items else start
        return Entries(items, after if after < size else None)
