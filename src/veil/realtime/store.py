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


@dataclass(frozen=True)
class SocketState:
    """What an open socket may still do: whether its session is active, and where delivery starts
    in each conversation its user is a joined member of."""

    active: bool
    cursors: dict[uuid.UUID, int]


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


async def joined_among(
    conn: Connection, members: list[tuple[uuid.UUID, uuid.UUID]]
) -> dict[tuple[uuid.UUID, uuid.UUID], int]:
    """Which (conversation_id, user_id) pairs are joined members, with their joined_after_seq."""
    rows = await conn.fetch(
        """SELECT m.conversation_id, m.user_id, m.joined_after_seq
           FROM unnest($1::uuid[], $2::uuid[]) AS t (conversation_id, user_id)
           JOIN members m ON m.conversation_id = t.conversation_id AND m.user_id = t.user_id
           WHERE m.state = 'joined'""",
        [conversation_id for conversation_id, _ in members],
        [user_id for _, user_id in members],
    )
    return {(row["conversation_id"], row["user_id"]): row["joined_after_seq"] for row in rows}


async def socket_states(
    conn: Connection, sockets: list[tuple[uuid.UUID, uuid.UUID]], now: datetime
) -> dict[uuid.UUID, SocketState]:
    """For every (session_id, user_id) of an open socket, in one statement: is the session still
    active (as `SessionGuard` decides) and its delivery cursors (as `delivery_cursors` computes),
    keyed by session id. A session missing from the answer is not active."""
    rows = await conn.fetch(
        """SELECT t.session_id,
                  EXISTS (SELECT 1 FROM sessions s JOIN users u ON u.id = s.user_id
                          WHERE s.id = t.session_id AND s.user_id = t.user_id
                            AND s.revoked_at IS NULL AND s.expires_at > $3
                            AND u.status = 'active') AS active,
                  m.conversation_id,
                  GREATEST(m.joined_after_seq, COALESCE(d.acked_seq, 0)) AS cursor
           FROM unnest($1::uuid[], $2::uuid[]) AS t (session_id, user_id)
           LEFT JOIN members m ON m.user_id = t.user_id AND m.state = 'joined'
           LEFT JOIN device_cursors d
               ON d.device_id = t.session_id AND d.conversation_id = m.conversation_id""",
        [session for session, _ in sockets],
        [user for _, user in sockets],
        now,
    )
    states: dict[uuid.UUID, SocketState] = {}
    for row in rows:
        state = states.setdefault(row["session_id"], SocketState(row["active"], {}))
        if row["conversation_id"] is not None and state.active:
            state.cursors[row["conversation_id"]] = row["cursor"]
    return states
