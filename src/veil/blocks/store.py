"""SQL for the `blocks` table. No HTTP, no JSON."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from veil.core.db import Connection


@dataclass(frozen=True)
class BlockRecord:
    user_id: uuid.UUID
    created_at: datetime


async def block(conn: Connection, blocker: uuid.UUID, blocked: uuid.UUID, now: datetime) -> bool:
    """Block `blocked` (a repeat keeps the first time); False when no such account exists.

    One statement: the existence check and the insert see the same snapshot, and the foreign key
    stays the final guard against an account purged in between."""
    exists: bool = await conn.fetchval(
        """WITH target AS (SELECT id FROM users WHERE id = $2),
                inserted AS (
                    INSERT INTO blocks (blocker_id, blocked_id, created_at)
                    SELECT $1, id, $3 FROM target
                    ON CONFLICT (blocker_id, blocked_id) DO NOTHING)
           SELECT EXISTS (SELECT 1 FROM target)""",
        blocker,
        blocked,
        now,
    )
    return exists


async def unblock(conn: Connection, blocker: uuid.UUID, blocked: uuid.UUID) -> None:
    await conn.execute("DELETE FROM blocks WHERE blocker_id = $1 AND blocked_id = $2", blocker, blocked)


async def blocks_of(
    conn: Connection, blocker: uuid.UUID, after: uuid.UUID | None, limit: int
) -> list[BlockRecord]:
    """The users `blocker` blocked, by user id (the primary key's order), after the cursor."""
    rows = await conn.fetch(
        """SELECT blocked_id AS user_id, created_at FROM blocks
           WHERE blocker_id = $1 AND ($2::uuid IS NULL OR blocked_id > $2)
           ORDER BY blocked_id LIMIT $3""",
        blocker,
        after,
        limit,
    )
    return [BlockRecord(**dict(row)) for row in rows]


async def is_blocked(conn: Connection, *, blocker: uuid.UUID, blocked: uuid.UUID) -> bool:
    """Whether `blocker` has blocked `blocked` (an index lookup on the primary key)."""
    found = await conn.fetchval(
        "SELECT 1 FROM blocks WHERE blocker_id = $1 AND blocked_id = $2", blocker, blocked
    )
    return found is not None
