"""The realtime reads against a real PostgreSQL, each one statement for a whole process: the
open-socket re-check, and the messages and memberships behind a burst of notifications."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from veil.messaging import store as messaging_store
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


async def _message(
    db: asyncpg.Connection[asyncpg.Record], conversation_id: uuid.UUID, sender: uuid.UUID, seq: int
) -> None:
    await db.execute(
        """INSERT INTO messages (conversation_id, seq, message_id, sender_id, sender_device_id,
               content_type, ciphertext, nonce, auth_tag, key_epoch, envelope_digest, created_at)
           VALUES ($1, $2, $3, $4, $3, 'text', '\\x01', '\\x02', '\\x03', 0, '\\x04', $5)""",
        conversation_id,
        seq,
        uuid.uuid4(),
        sender,
        NOW,
    )


async def test_a_burst_of_notifications_is_read_in_one_statement_each(
    db: asyncpg.Connection[asyncpg.Record],
) -> None:
    alice, bob = await _user(db), await _user(db)
    first, second = await _conversation(db), await _conversation(db)
    await _member(db, first, alice, "joined", 0)  # bob: not a member (left, or never joined)
    await _member(db, second, alice, "joined", 2)
    await _member(db, second, bob, "invited", 0)
    for conversation_id, seq in ((first, 1), (first, 2), (second, 1), (second, 3)):
        await _message(db, conversation_id, alice, seq)

    wanted = [(first, 1), (first, 2), (second, 3), (second, 2)]  # (second, 2) was never stored
    records = await messaging_store.messages_at(db, wanted)
    assert sorted((r.conversation_id, r.seq) for r in records) == sorted(wanted[:3])

    pairs = [(c, u) for c in (first, second) for u in (alice, bob)]
    assert await store.joined_among(db, pairs) == {(first, alice): 0, (second, alice): 2}
