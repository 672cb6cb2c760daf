"""The process-wide writer of replay cursors (realtime/cursors.py) against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import asyncpg
import pytest

from veil.core.db import Connection, Database
from veil.core.metrics import Metrics
from veil.realtime.cursors import CursorWriter

NOW = datetime.now(UTC)


class CountingDatabase(Database):
    """The real pool, counting the connections taken (one per write)."""

    def __init__(self, dsn: str) -> None:
        super().__init__(dsn, max_size=2, timeout=5, metrics=Metrics())
        self.taken = 0

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        self.taken += 1
        async with super().connection() as conn:
            yield conn


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[CountingDatabase]:
    db = CountingDatabase(database_url)
    await db.open()
    db.taken = 0  # opening pings the server
    try:
        yield db
    finally:
        await db.close()


async def _user(db: asyncpg.Connection[asyncpg.Record]) -> uuid.UUID:
    user_id = uuid.uuid4()
    await db.execute(
        """INSERT INTO users (id, email, password_hash, status, created_at, updated_at)
           VALUES ($1, $2, 'x', 'active', $3, $3)""",
        user_id,
        f"{user_id}@example.org",
        NOW,
    )
    return user_id


async def _device(db: asyncpg.Connection[asyncpg.Record], user_id: uuid.UUID) -> uuid.UUID:
    session_id = uuid.uuid4()
    await db.execute(
        """INSERT INTO sessions (id, user_id, created_at, last_seen_at, expires_at)
           VALUES ($1, $2, $3::timestamptz, $3, $3::timestamptz + interval '1 day')""",
        session_id,
        user_id,
        NOW,
    )
    return session_id


async def _conversation(
    db: asyncpg.Connection[asyncpg.Record], last_seq: int, *members: uuid.UUID
) -> uuid.UUID:
    conversation_id = uuid.uuid4()
    await db.execute(
        "INSERT INTO conversations (id, type, created_at, last_seq) VALUES ($1, 'group', $2, $3)",
        conversation_id,
        NOW,
        last_seq,
    )
    for user_id in members:
        await db.execute(
            """INSERT INTO members (conversation_id, user_id, role, state, joined_after_seq, created_at)
               VALUES ($1, $2, 'member', 'joined', 0, $3)""",
            conversation_id,
            user_id,
            NOW,
        )
    return conversation_id


async def _cursors(db: asyncpg.Connection[asyncpg.Record]) -> dict[tuple[uuid.UUID, uuid.UUID], int]:
    rows = await db.fetch("SELECT device_id, conversation_id, acked_seq FROM device_cursors")
    return {(r["device_id"], r["conversation_id"]): r["acked_seq"] for r in rows}


async def test_one_write_moves_every_devices_cursors_forward_only_where_they_belong(
    database: CountingDatabase, db: asyncpg.Connection[asyncpg.Record]
) -> None:
    alice, bob, mallory = await _user(db), await _user(db), await _user(db)
    phone, laptop, bobs, mallorys = (
        await _device(db, alice),
        await _device(db, alice),
        await _device(db, bob),
        await _device(db, mallory),
    )
    both = await _conversation(db, 10, alice, bob)
    alone = await _conversation(db, 5, alice)
    writer = CursorWriter(database)

    writer.record(alice, phone, both, 7)
    writer.record(alice, phone, both, 4)  # cumulative: the highest seq wins, whatever the order
    writer.record(alice, phone, alone, 99)  # never past the conversation's last seq
    writer.record(alice, laptop, both, 2)
    writer.record(bob, bobs, both, 10)
    writer.record(bob, bobs, alone, 3)  # not his conversation: nothing
    writer.record(mallory, mallorys, both, 9)  # not a member: nothing
    await writer.flush()

    assert database.taken == 1
    assert await _cursors(db) == {(phone, both): 7, (phone, alone): 5, (laptop, both): 2, (bobs, both): 10}
    writer.record(alice, laptop, both, 1)  # an older ack later: the cursor stays
    await writer.flush()
    await writer.flush()  # nothing pending: no write
    assert database.taken == 2
    assert (await _cursors(db))[(laptop, both)] == 2


async def test_acks_that_arrive_together_are_written_together(
    database: CountingDatabase, db: asyncpg.Connection[asyncpg.Record]
) -> None:
    users = [await _user(db) for _ in range(20)]
    devices = [await _device(db, user) for user in users]
    conversation = await _conversation(db, 100, *users)
    writer = CursorWriter(database, gather_seconds=0.05)
    running = asyncio.create_task(writer.run_forever())
    try:
        for seq in range(1, 6):
            for user, device in zip(users, devices, strict=True):
                writer.record(user, device, conversation, seq)
            await asyncio.sleep(0.001)
        for _ in range(100):
            if len(await _cursors(db)) == len(devices):
                break
            await asyncio.sleep(0.02)
    finally:
        running.cancel()
    assert await _cursors(db) == {(device, conversation): 5 for device in devices}
    assert database.taken <= 2  # 100 acks from 20 sockets: one write (two if a round split them)


async def test_an_ack_of_a_device_deleted_meanwhile_holds_back_no_other(
    database: CountingDatabase, db: asyncpg.Connection[asyncpg.Record]
) -> None:
    alice = await _user(db)
    phone, gone = await _device(db, alice), await _device(db, alice)
    conversation = await _conversation(db, 3, alice)
    writer = CursorWriter(database)
    writer.record(alice, gone, conversation, 2)
    writer.record(alice, phone, conversation, 3)
    await db.execute("DELETE FROM sessions WHERE id = $1", gone)  # retention, say, before the write
    await writer.flush()
    assert await _cursors(db) == {(phone, conversation): 3}
