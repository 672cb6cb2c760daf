"""Housekeeping: sessions past their 30 days end (and their devices with them), expired device
messages become gap markers, and only one process does a round at a time."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg

from tests.support.keys import bundle, random_envelope
from tests.support.server import LiveServer
from tests.support.users import bearer, login, new_email, register, request_signup
from veil.auth.signup import create_invite
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


async def test_a_round_forgets_unconfirmed_sign_ups_spent_invites_and_old_device_tokens(
    api: LiveServer, database_url: str, blobs: BlobStore
) -> None:
    with api.client() as client:
        email = register(client)
        login(client, email)  # a known-device token
        pending = request_signup(client, new_email())  # never confirmed
        client.post("/v1/auth/password-reset", json={"email": email})
    assert pending
    db = Database(database_url, max_size=2, timeout=5, metrics=Metrics())
    await db.open()
    try:
        await create_invite(db, FakeClock(datetime.now(UTC)), uses=1, lifetime=timedelta(hours=1))
        kept = await Maintenance(db, blobs, FakeClock(datetime.now(UTC))).run_once()
        assert kept is not None
        assert kept["signups_expired"] == kept["invites_dropped"] == kept["device_tokens_expired"] == 0
        later = FakeClock(datetime.now(UTC) + timedelta(days=181))
        counts = await Maintenance(db, blobs, later).run_once()
        assert counts is not None
        assert counts["signups_expired"] == counts["invites_dropped"] == 1
        assert counts["device_tokens_expired"] == 1
        assert counts["password_resets_expired"] == 1
    finally:
        await db.close()
    conn = await asyncpg.connect(database_url)
    try:
        for table in ("signups", "invites", "device_tokens", "password_resets"):
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0, table  # noqa: S608
    finally:
        await conn.close()
