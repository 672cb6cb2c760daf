"""SQL for the key-transparency log. Leaves and subtree hashes are written by the database itself
(migration 0018) in the transaction of the change they record; this module only reads them and
stores signed heads."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from veil.core.db import Connection
from veil.transparency.head import TreeHead
from veil.transparency.tree import Node

_HEAD_COLUMNS = "tree_size, timestamp_ms, root_hash, signature, public_key"


async def tree_size(conn: Connection) -> int:
    size: int = await conn.fetchval("SELECT coalesce(max(index) + 1, 0) FROM transparency_leaves")
    return size


async def latest_head(conn: Connection) -> TreeHead | None:
    row = await conn.fetchrow(
        f"SELECT {_HEAD_COLUMNS} FROM transparency_heads ORDER BY tree_size DESC LIMIT 1"  # noqa: S608
    )
    return TreeHead(**dict(row)) if row else None


async def head_of_size(conn: Connection, size: int) -> TreeHead | None:
    row = await conn.fetchrow(
        f"SELECT {_HEAD_COLUMNS} FROM transparency_heads WHERE tree_size = $1",  # noqa: S608
        size,
    )
    return TreeHead(**dict(row)) if row else None


async def insert_head(conn: Connection, head: TreeHead, now: datetime) -> None:
    """Keep the head unless one of that size is stored already (one head per size, ever)."""
    await conn.execute(
        f"""INSERT INTO transparency_heads ({_HEAD_COLUMNS}, created_at)
            VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tree_size) DO NOTHING""",  # noqa: S608
        head.tree_size,
        head.timestamp_ms,
        head.root_hash,
        head.signature,
        head.public_key,
        now,
    )


async def nodes(conn: Connection, wanted: Sequence[Node]) -> dict[Node, bytes]:
    """The stored subtree hashes asked for, in one query."""
    rows = await conn.fetch(
        """SELECT n.level, n.index, n.hash FROM transparency_nodes n
           JOIN unnest($1::smallint[], $2::bigint[]) AS w(level, index)
             ON n.level = w.level AND n.index = w.index""",
        [node.level for node in wanted],
        [node.index for node in wanted],
    )
    return {Node(row["level"], row["index"]): row["hash"] for row in rows}


async def entries(conn: Connection, start: int, limit: int) -> list[tuple[int, bytes]]:
    rows = await conn.fetch(
        "SELECT index, leaf FROM transparency_leaves WHERE index >= $1 ORDER BY index LIMIT $2", start, limit
    )
    return [(row["index"], row["leaf"]) for row in rows]


async def latest_leaf_of(conn: Connection, user_hash: bytes, size: int) -> tuple[int, bytes] | None:
    """The user's last leaf among the first `size` leaves."""
    row = await conn.fetchrow(
        """SELECT index, leaf FROM transparency_leaves
           WHERE substring(leaf FROM 1 FOR 32) = $1 AND index < $2
           ORDER BY index DESC LIMIT 1""",
        user_hash,
        size,
    )
    return (row["index"], row["leaf"]) if row else None


async def user_is_active(conn: Connection, user_id: uuid.UUID) -> bool:
    """Whether the account may be looked up (the device listing's rule, kept to the same answer)."""
    return await conn.fetchval("SELECT 1 FROM users WHERE id = $1 AND status = 'active'", user_id) is not None
