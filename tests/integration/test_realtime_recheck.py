"""The open-socket re-check against a real PostgreSQL: every socket of a process in one statement."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from veil.realtime import store

NOW = datetime.now(UTC)


async def _user(db: asyncpg.Connection[asyncpg.Record], status: str = "active") -> uuid.UUID:
    user_id = uuid.uuid4()
    await db.execute(
        """INSERT INTO users (id, email, password_hash, status, created_at, updated_at)
           VALUES ($1, $2, 'x', $3, $4, $4)""",
        user_id,
        f"{user_id}@example.org",
        status,
        NOW,
    )
    return user_id


async def _session(
    db: asyncpg.Connection[asyncpg.Record],
    user_id: uuid.UUID,
    *,
    expires_at: datetime = NOW + timedelta(days=30),
    revoked: bool = False,
) -> uuid.UUID:
    session_id = uuid.uuid4()
    await db.execute(
        """INSERT INTO sessions (id, user_id, created_at, last_seen_at, expires_at, revoked_at)
           VALUES ($1, $2, $3, $3, $4, $5)""",
        session_id,
        user_id,
        NOW - timedelta(days=1),
        expires_at,
        NOW if revoked else None,
    )
    return session_id


async def _conversation(db: asyncpg.Connection[asyncpg.Record]) -> uuid.UUID:
    conversation_id = uuid.uuid4()
    await db.execute(
        "INSERT INTO conversations (id, type, created_at) VALUES ($1, 'group', $2)", conversation_id, NOW
    )
    return conversation_id


async def _member(
    db: asyncpg.Connection[asyncpg.Record],
    conversation_id: uuid.UUID,
    user_id: uuid.UUID,
    state: str,
    after: int,
) -> None:
    await db.execute(
        """INSERT INTO members (conversation_id, user_id, role, state, joined_after_seq, created_at)
           VALUES ($1, $2, 'member', $3, $4, $5)""",
        conversation_id,
        user_id,
        state,
        after,
        NOW,
    )


async def test_one_statement_answers_for_every_socket(db: asyncpg.Connection[asyncpg.Record]) -> None:
    alice, suspended = await _user(db), await _user(db, "suspended")
    phone, laptop = await _session(db, alice), await _session(db, alice)
    revoked = await _session(db, alice, revoked=True)
    expired = await _session(db, alice, expires_at=NOW - timedelta(seconds=1))
    of_suspended = await _session(db, suspended)
    unknown = uuid.uuid4()
    joined, acked, invited = await _conversation(db), await _conversation(db), await _conversation(db)
    await _member(db, joined, alice, "joined", 3)
    await _member(db, acked, alice, "joined", 3)
    await _member(db, invited, alice, "invited", 0)
    await _member(db, joined, suspended, "joined", 0)
    await db.execute(
        "INSERT INTO device_cursors (device_id, conversation_id, acked_seq) VALUES ($1, $2, 9)", phone, acked
    )

    sockets = [(s, alice) for s in (phone, laptop, revoked, expired, unknown, of_suspended)]
    sockets[-1] = (of_suspended, suspended)
    # The first call lets asyncpg learn the statement's types (its own catalog queries).
    await store.socket_states(db, sockets[:1], NOW)  # type: ignore[arg-type]
    statements: list[Any] = []
    db.add_query_logger(statements.append)
    try:
        states = await store.socket_states(db, sockets, NOW)  # type: ignore[arg-type]
        await asyncio.sleep(0)  # loggers are called soon after, not during, the query
    finally:
        db.remove_query_logger(statements.append)

    assert len(statements) == 1
    # Delivery resumes after what the device acknowledged, and never before the user joined.
    assert states[phone] == store.SocketState(True, {joined: 3, acked: 9})
    assert states[laptop] == store.SocketState(True, {joined: 3, acked: 3})
    for ended in (revoked, expired, unknown, of_suspended):
        assert ended not in states or not states[ended].active
        assert ended not in states or states[ended].cursors == {}
