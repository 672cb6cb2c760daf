"""`veil transparency verify`: rebuild the tree from the leaves table and check everything the log
stored against it, as an auditor with the database would.

Checked, in order: the leaves are numbered 0..n-1 without a gap; each stored leaf hash is
SHA-256(0x00 || leaf); each stored inner node is the hash of its two children, and every level
holds exactly the perfect subtrees of n leaves; every signed head's root equals the rebuilt root of
its size, and its signature verifies under one of the log's keys. The first failure is reported
by its index or head size.
"""

from __future__ import annotations

from dataclasses import dataclass

from veil.core.db import Connection
from veil.transparency.head import TreeHead, verify_head
from veil.transparency.tree import CompactRange, leaf_hash

_BATCH = 10_000


@dataclass(frozen=True)
class Report:
    leaves: int
    heads: int
    problem: str | None


async def verify_log(conn: Connection, public_keys: list[bytes]) -> Report:
    """Run inside a REPEATABLE READ transaction, so that one snapshot is checked."""
    heads = [
        TreeHead(**dict(row))
        for row in await conn.fetch(
            """SELECT tree_size, timestamp_ms, root_hash, signature, public_key
               FROM transparency_heads ORDER BY tree_size"""
        )
    ]
    pending = list(heads)
    compact = CompactRange()

    def check_heads_at(size: int) -> str | None:
        while pending and pending[0].tree_size == size:
            head = pending.pop(0)
            if head.root_hash != compact.root():
                return f"head of size {size}: its root does not match the leaves"
            if head.public_key not in public_keys:
                return f"head of size {size}: signed by a key that is not the log's"
            if not verify_head(head, head.public_key):
                return f"head of size {size}: the signature does not verify"
        return None

    if problem := check_heads_at(0):
        return Report(0, len(heads), problem)
    cursor = conn.cursor(
        """SELECT l.index, l.leaf, n.hash FROM transparency_leaves l
           LEFT JOIN transparency_nodes n ON n.level = 0 AND n.index = l.index
           ORDER BY l.index""",
        prefetch=_BATCH,
    )
    async for row in cursor:
        index = compact.size
        if row["index"] != index:
            return Report(index, len(heads), f"leaf {index} is missing (the next one is {row['index']})")
        if row["hash"] != leaf_hash(row["leaf"]):
            return Report(index, len(heads), f"leaf {index}: the stored hash is not the leaf's")
        compact.push(row["leaf"])
        if problem := check_heads_at(compact.size):
            return Report(compact.size, len(heads), problem)
    size = compact.size
    if pending:
        head = pending[0].tree_size
        return Report(size, len(heads), f"head of size {head} is beyond the log's {size} leaves")
    bad = await conn.fetchrow(
        """SELECT p.level, p.index FROM transparency_nodes p
           LEFT JOIN transparency_nodes a ON a.level = p.level - 1 AND a.index = 2 * p.index
           LEFT JOIN transparency_nodes b ON b.level = p.level - 1 AND b.index = 2 * p.index + 1
           WHERE p.level > 0
             AND (a.hash IS NULL OR b.hash IS NULL OR p.hash <> sha256('\\x01'::bytea || a.hash || b.hash))
           ORDER BY p.level, p.index LIMIT 1"""
    )
    if bad is not None:
        return Report(size, len(heads), f"node ({bad['level']}, {bad['index']}) is not its children's hash")
    counts = {
        row["level"]: row["count"]
        for row in await conn.fetch("SELECT level, count(*) AS count FROM transparency_nodes GROUP BY level")
    }
    for level in sorted(set(counts) | {lv for lv in range(size.bit_length())}):
        expected = size >> level
        if counts.get(level, 0) != expected:
            return Report(
                size, len(heads), f"level {level} holds {counts.get(level, 0)} nodes, not {expected}"
            )
    return Report(size, len(heads), None)
