"""SQL for WebSocket tickets and for the facts the hub needs to route events."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from veil.core.db import Connection


@dataclass(frozen=True)
class MembershipEvent:
    conversation_id: uuid.UUID
    kind: str
    actor_id: uuid.UUID | None
    subject_id: uuid.UUID
    epoch: int
    created_at: datetime


async def insert_ticket(
    conn: Connection, ticket_hash: bytes, session_id: uuid.UUID, expires_at: datetime
) -> None:
    await conn.execute(
        "INSERT INTO ws_tickets (ticket_hash, session_id, expires_at) VALUES ($1, $2, $3)",
        ticket_hash,
        session_id,
        expires_at,
    )


async def consume_ticket(
    conn: Connection, ticket_hash: bytes, now: datetime
) -> tuple[uuid.UUID, uuid.UUID] | None:
    """Single use: the row is deleted by the first presentation, valid or not."""
    row = await conn.fetchrow(
        """WITH used AS (DELETE FROM ws_tickets WHERE ticket_hash = $1 RETURNING session_id, expires_at)
           SELECT s.user_id, used.session_id FROM used JOIN sessions s ON s.id = used.session_id
           WHERE used.expires_at > $2""",
        ticket_hash,
        now,
    )
    return (row["user_id"], row["session_id"]) if row else None


async def membership_event(conn: Connection, event_id: int) -> MembershipEvent | None:
    row = await conn.fetchrow(
        """SELECT conversation_id, kind, actor_id, subject_id, epoch, created_at
           FROM membership_events WHERE id = $1""",
        event_id,
    )
    return MembershipEvent(**dict(row)) if row else None


async def member_ids(conn: Connection, conversation_id: uuid.UUID) -> list[uuid.UUID]:
    rows = await conn.fetch("SELECT user_id FROM members WHERE conversation_id = $1", conversation_id)
    return [row["user_id"] for row in rows]


async def joined_after(conn: Connection, conversation_id: uuid.UUID, user_id: uuid.UUID) -> int | None:
    value: int | None = await conn.fetchval(
        """SELECT joined_after_seq FROM members
           WHERE conversation_id = $1 AND user_id = $2 AND state = 'joined'""",
        conversation_id,
        user_id,
    )
    return value


async def contacts_of(conn: Connection, user_id: uuid.UUID) -> list[uuid.UUID]:
    """Users who share a conversation with `user_id` (themselves included, for their other devices)."""
    rows = await conn.fetch(
        """SELECT DISTINCT other.user_id FROM members mine
           JOIN members other ON other.conversation_id = mine.conversation_id
           WHERE mine.user_id = $1 AND mine.state = 'joined' AND other.state = 'joined'""",
        user_id,
    )
    return [row["user_id"] for row in rows] or [user_id]
