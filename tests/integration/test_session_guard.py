"""The per-process cache of active sessions (core/security/sessions.py) against a real PostgreSQL:
what it may vouch for, and the races that would let a revoked session in."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from tests.support.waiting import until
from veil.core.db import Connection, Database
from veil.core.listener import APPLICATION_NAME, Notifications
from veil.core.metrics import Metrics
from veil.core.security.sessions import SessionGuard


class PausingDatabase(Database):
    """The real pool, except that a connection handed out while `hold` is set is only given back
    once `release` is set: it stops a check between its query and what it does with the answer."""

    def __init__(self, dsn: str) -> None:
        super().__init__(dsn, max_size=2, timeout=5, metrics=Metrics())
        self.hold = False
        self.queried = asyncio.Event()
        self.release = asyncio.Event()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        async with super().connection() as conn:
            yield conn
        if self.hold:
            self.queried.set()
            await self.release.wait()


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[PausingDatabase]:
    db = PausingDatabase(database_url)
    await db.open()
    try:
        yield db
    finally:
        await db.close()


@pytest.fixture
async def guard(database: PausingDatabase, database_url: str) -> AsyncIterator[SessionGuard]:
    notifications = Notifications(database_url)
    notifications.start()
    sessions = SessionGuard(database, notifications)
    await sessions.start()
    await until(lambda: sessions.listening, "the guard listens")
    try:
        yield sessions
    finally:
        await notifications.close()


async def _session(db: asyncpg.Connection[asyncpg.Record], expires_in: timedelta) -> uuid.UUID:
    now = datetime.now(UTC)
    user_id, session_id = uuid.uuid4(), uuid.uuid4()
    await db.execute(
        """INSERT INTO users (id, email, password_hash, status, created_at, updated_at)
           VALUES ($1, $2, 'x', 'active', $3, $3)""",
        user_id,
        f"{user_id}@example.org",
        now,
    )
    await db.execute(
        """INSERT INTO sessions (id, user_id, created_at, last_seen_at, expires_at)
           VALUES ($1, $2, $3, $3, $4)""",
        session_id,
        user_id,
        now,
        now + expires_in,
    )
    return session_id


async def _revoke_without_notice(db: asyncpg.Connection[asyncpg.Record], session_id: uuid.UUID) -> None:
    """Revoke in the database only, as if the NOTIFY had not reached this process yet."""
    await db.execute(
        "UPDATE sessions SET revoked_at = now(), revoke_reason = 'logout' WHERE id = $1", session_id
    )


async def test_the_revoking_process_refuses_at_once_without_waiting_for_the_notice(
    guard: SessionGuard, db: asyncpg.Connection[asyncpg.Record]
) -> None:
    session_id = await _session(db, timedelta(days=1))
    other_id = await _session(db, timedelta(days=1))
    for sid in (session_id, other_id):
        assert await guard.is_active(sid, datetime.now(UTC))  # now cached
    await _revoke_without_notice(db, session_id)
    await _revoke_without_notice(db, other_id)
    # The cache is real: without being told, it still vouches for both.
    assert await guard.is_active(session_id, datetime.now(UTC))
    guard.revoked([session_id])
    assert not await guard.is_active(session_id, datetime.now(UTC))
    assert await guard.is_active(other_id, datetime.now(UTC))


async def _held_after_its_query(
    guard: SessionGuard, database: PausingDatabase, session_id: uuid.UUID
) -> asyncio.Task[bool]:
    """A check of the session that has read "active" and is held just before it may cache that."""
    database.hold = True
    check = asyncio.create_task(guard.is_active(session_id, datetime.now(UTC)))
    await asyncio.wait_for(database.queried.wait(), 5)
    return check


def _let_go(database: PausingDatabase) -> None:
    database.hold = False
    database.release.set()


async def test_an_answer_read_before_a_revocation_is_not_cached(
    guard: SessionGuard, database: PausingDatabase, db: asyncpg.Connection[asyncpg.Record]
) -> None:
    session_id = await _session(db, timedelta(days=1))
    check = await _held_after_its_query(guard, database, session_id)
    await _revoke_without_notice(db, session_id)
    guard.revoked([session_id])
    _let_go(database)
    assert await check  # it was active when asked
    assert not await guard.is_active(session_id, datetime.now(UTC))  # but that answer was not kept


async def test_a_notice_from_another_process_drops_the_session(
    guard: SessionGuard, db: asyncpg.Connection[asyncpg.Record]
) -> None:
    session_id = await _session(db, timedelta(days=1))
    assert await guard.is_active(session_id, datetime.now(UTC))
    await _revoke_without_notice(db, session_id)
    await db.execute("SELECT pg_notify('veil_session_revoked', $1)", str(session_id))

    async def refused() -> bool:
        return not await guard.is_active(session_id, datetime.now(UTC))

    await until(refused, "the revocation notice reached the cache")


async def test_the_cache_never_vouches_for_a_session_past_its_end(
    guard: SessionGuard, db: asyncpg.Connection[asyncpg.Record]
) -> None:
    session_id = await _session(db, timedelta(seconds=1))
    assert await guard.is_active(session_id, datetime.now(UTC))
    await asyncio.sleep(1.2)
    assert not await guard.is_active(session_id, datetime.now(UTC))


async def test_an_answer_read_before_the_listener_came_back_is_not_cached(
    guard: SessionGuard, database: PausingDatabase, db: asyncpg.Connection[asyncpg.Record]
) -> None:
    session_id = await _session(db, timedelta(days=1))
    check = await _held_after_its_query(guard, database, session_id)
    # The listening connection drops; a revocation's notice is lost in the gap; it comes back.
    await db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
        APPLICATION_NAME,
    )
    await until(lambda: not guard.listening, "the guard noticed its listener dropped")
    await _revoke_without_notice(db, session_id)
    await until(lambda: guard.listening, "the guard listens again")
    _let_go(database)
    assert await check
    assert not await guard.is_active(session_id, datetime.now(UTC))
