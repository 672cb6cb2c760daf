"""Housekeeping: sessions past their 30 days end (and their devices with them), expired device
messages become gap markers, and only one process does a round at a time."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg

from tests.support.keys import bundle, random_envelope
from tests.support.server import LiveServer
from tests.support.users import bearer, login, register
from veil.core.blobstore import BlobStore
from veil.core.clock import FakeClock
from veil.core.db import Database
from veil.core.metrics import Metrics
from veil.maintenance import Maintenance


async def test_a_round_ends_expired_sessions_and_their_devices(
    api: LiveServer, database_url: str, blobs: BlobStore
) -> None:
    with api.client() as client:
        alice, bob = login(client, register(client)), login(client, register(client))
        client.put("/v1/keys", json=bundle(), headers=bearer(alice))
        client.put("/v1/keys", json=bundle(), headers=bearer(bob))
        client.post(
            "/v1/devices/messages",
            json={"content_type": "session_init", "messages": [random_envelope(bob["session_id"])]},
            headers=bearer(alice),
        )

    db = Database(database_url, max_size=4, timeout=5, metrics=Metrics())
    await db.open()
    try:
        later = FakeClock(datetime.now(UTC) + timedelta(days=30, seconds=5))
        rounds = await asyncio.gather(*(Maintenance(db, blobs, later).run_once() for _ in range(2)))
        done = [r for r in rounds if r is not None]
        assert len(done) >= 1
        assert sum(r["sessions_expired"] for r in done) == 2
    finally:
        await db.close()

    conn = await asyncpg.connect(database_url)
    try:
        reasons = await conn.fetch("SELECT revoke_reason FROM sessions")
        assert {r["revoke_reason"] for r in reasons} == {"expired"}
        assert await conn.fetchval("SELECT count(*) FROM device_keys") == 0
        assert await conn.fetchval("SELECT count(*) FROM device_messages") == 0
    finally:
        await conn.close()
    with api.client() as client:
        assert client.get("/v1/auth/sessions", headers=bearer(alice)).status_code == 401
