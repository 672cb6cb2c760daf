"""An export job is built as soon as it is queued: its NOTIFY wakes the builder, which otherwise
does not look again for an hour here."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from veil.account import store
from veil.account.exports import ExportBuilder
from veil.account.store import RequestRecord
from veil.core.blobstore import BlobStore
from veil.core.clock import SystemClock
from veil.core.db import Database
from veil.core.listener import Notifications
from veil.core.metrics import Metrics


class ObservedBuilder(ExportBuilder):
    """Reports the outcome of every round it runs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rounds: asyncio.Queue[bool] = asyncio.Queue()

    async def build_next(self) -> bool:
        built = await super().build_next()
        self.rounds.put_nowait(built)
        return built


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    db = Database(database_url, max_size=4, timeout=5, metrics=Metrics())
    await db.open()
    try:
        yield db
    finally:
        await db.close()


async def queue_export(db: Database) -> uuid.UUID:
    """A user with a confirmed export request, as `AccountService.confirm` leaves it."""
    now = datetime.now(UTC)
    user_id, request_id = uuid.uuid4(), uuid.uuid4()
    async with db.transaction("test_queue_export") as conn:
        await conn.execute(
            """INSERT INTO users (id, email, password_hash, email_verified, created_at, updated_at)
               VALUES ($1, $2, 'not-a-hash', true, $3, $3)""",
            user_id,
            f"{user_id.hex}@example.org",
            now,
        )
        await store.insert_request(
            conn,
            RequestRecord(
                id=request_id,
                user_id=user_id,
                type="export",
                new_email=None,
                code_hash=bytes(32),
                attempts=0,
                created_at=now,
                expires_at=now + timedelta(hours=1),
                confirmed_at=now,
            ),
        )
        await store.queue_export(
            conn, secrets.token_urlsafe(32), user_id, request_id, now, now + timedelta(hours=1)
        )
    return request_id


async def test_a_queued_export_is_built_at_once_without_polling(
    database: Database, notifications: Notifications, blobs: BlobStore
) -> None:
    builder = ObservedBuilder(
        database, blobs, SystemClock(), timedelta(minutes=5), notifications, idle_seconds=3600
    )
    await builder.start()
    try:
        # The round at start, then the one when the listener is up: from now on only a
        # notification wakes the builder.
        assert await asyncio.wait_for(builder.rounds.get(), 10) is False
        assert await asyncio.wait_for(builder.rounds.get(), 10) is False
        request_id = await queue_export(database)
        assert await asyncio.wait_for(builder.rounds.get(), 5) is True
    finally:
        await builder.close()
    async with database.connection() as conn:
        job = await store.export_of_request(conn, request_id)
    assert job is not None and job.state == "ready"
