"""Data-subject rights end to end: real server processes, the real mail sink, PostgreSQL and S3.

Codes are read from the messages the development mail sink received, as a user would read them.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import ServerFactory
from tests.support.files import back_up, direct, put_to_store, reserve_backup, s3_client, upload
from tests.support.keys import bundle
from tests.support.mail import body, latest_code, messages_to, wait_for_mail
from tests.support.messaging import envelope, group, send
from tests.support.server import LiveServer
from tests.support.users import PASSWORD, bearer, login, new_email, register
from tests.support.ws import next_frame, registered, ws_connect
from veil.core.blobstore import BlobStore
from veil.core.clock import FakeClock
from veil.core.config import Settings
from veil.core.db import Database
from veil.core.metrics import Metrics
from veil.maintenance import Maintenance
from veil.retention import RetentionPolicy

# Longer than any grace window here, so an erasure test sees the purge and not retention.
LONG = RetentionPolicy(timedelta(days=90), timedelta(days=90), timedelta(days=90))


def user(client: httpx.Client) -> dict[str, Any]:
    email = register(client)
    pair = login(client, email)
    pair["email"] = email
    return pair


def ask(client: httpx.Client, who: dict[str, Any], **request: Any) -> httpx.Response:
    return client.post("/v1/account/requests", json=request, headers=bearer(who))


def confirm(client: httpx.Client, who: dict[str, Any], request_id: str, code: str) -> httpx.Response:
    return client.post(f"/v1/account/requests/{request_id}/confirm", json={"code": code}, headers=bearer(who))


async def frames_until_closed(ws: Any) -> None:
    while True:  # events about her own devices may come first
        await next_frame(ws, timeout=5)


def login_status(client: httpx.Client, email: str) -> int:
    return client.post("/v1/auth/login", json={"email": email, "password": PASSWORD}).status_code


async def exists(db: asyncpg.Connection[asyncpg.Record], table: str, row_id: str) -> bool:
    return bool(await db.fetchval(f"SELECT count(*) FROM {table} WHERE id = $1::uuid", row_id))  # noqa: S608


def other_code(code: str) -> str:
    return f"{(int(code) + 1) % 10**6:06d}"


async def run_maintenance(
    database_url: str, blobs: BlobStore, at: datetime, retention: RetentionPolicy = RetentionPolicy.DEFAULT
) -> dict[str, int]:
    db = Database(database_url, max_size=2, timeout=5, metrics=Metrics())
    await db.open()
    try:
        counts = await Maintenance(db, blobs, FakeClock(at), retention).run_once()
    finally:
        await db.close()
    assert counts is not None
    return counts


async def tables_mentioning(conn: asyncpg.Connection[asyncpg.Record], needles: list[str]) -> list[str]:
    """Every table with a row whose text form (all columns) contains one of `needles`."""
    tables = [
        row["table_name"]
        for row in await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
    ]
    found = []
    for table in tables:
        for needle in needles:
            query = f'SELECT count(*) FROM "{table}" t WHERE strpos(t::text, $1) > 0'  # noqa: S608
            hits = await conn.fetchval(query, needle)
            if hits:
                found.append(f"{table} ({needle})")
    return found


def test_the_account_view(api: LiveServer) -> None:
    with api.client() as client:
        alice = user(client)
        account = client.get("/v1/account", headers=bearer(alice))
        assert account.status_code == 200
        body = account.json()
        assert set(body) == {"user_id", "email", "email_verified", "created_at", "status"}
        assert body["user_id"] == alice["user_id"]
        assert body["email"] == alice["email"]
        assert body["status"] == "active"
        assert client.get("/v1/account").status_code == 401


def test_export_with_an_emailed_code(api: LiveServer, settings: Settings) -> None:
    with api.client() as client:
        alice, bob = user(client), user(client)
        client.put("/v1/keys", json=bundle(), headers=bearer(alice))
        cid = direct(client, alice, bob)
        assert send(client, alice, cid, envelope()).status_code == 201
        attachment_id = upload(client, alice, cid, os.urandom(777))
        backup = back_up(client, alice, os.urandom(999))

        asked = ask(client, alice, type="export")
        assert asked.status_code == 202
        request_id = asked.json()["request_id"]
        code = latest_code(settings, alice["email"], count=2)  # after her sign-up code
        [_, mail] = messages_to(settings, alice["email"])
        assert "a copy of your data" in body(mail)

        malformed = confirm(client, alice, request_id, "12ab56")
        assert malformed.status_code == 422
        wrong = confirm(client, alice, request_id, other_code(code))
        assert wrong.status_code == 400
        assert "4 attempts left" in wrong.json()["detail"]
        # Someone else's request does not exist for Bob.
        assert confirm(client, bob, request_id, code).status_code == 404

        done = confirm(client, alice, request_id, code)
        assert done.status_code == 200, done.text
        download = done.json()["download"]
        assert datetime.fromisoformat(download["expires_at"]) > datetime.now(UTC)
        assert confirm(client, alice, request_id, code).status_code == 400  # single use

    fetched = httpx.get(download["url"])
    assert fetched.status_code == 200
    archive = json.loads(fetched.content)
    assert archive["format"] == "veil-export/1"
    assert archive["profile"]["email"] == alice["email"]
    assert "password_hash" not in archive["profile"]
    assert "1 messages sent" in archive["summary"] and "1 attachments" in archive["summary"]
    assert [s["session_id"] for s in archive["sessions"]] == [alice["session_id"]]
    assert archive["sessions"][0]["ip"] == "127.0.0.1"
    assert archive["devices"][0]["identity_key"] == bundle_identity(archive)
    assert [c["conversation_id"] for c in archive["conversations"]] == [cid]
    [message] = archive["messages_sent"]
    assert message["ciphertext_bytes"] == 64
    assert "ciphertext" not in message
    assert [a["attachment_id"] for a in archive["attachments"]] == [attachment_id]
    assert [r["type"] for r in archive["account_requests"]] == ["export"]
    # The encrypted backup's size and time, never its object (or where it is).
    assert archive["backup"] == [{"size": 999, "created_at": backup["created_at"]}]
    assert "backup of 999 bytes" in archive["summary"]


def test_an_export_that_takes_longer_is_built_in_the_background(
    make_server: ServerFactory, settings: Settings
) -> None:
    """With no time to wait, the confirmation answers 202 and the request shows the download once
    a builder has finished the archive."""
    server = make_server(VEIL_EXPORT_WAIT="0", VEIL_AUTH_RATE="1000", VEIL_AUTH_BURST="1000")
    with server.client() as client:
        alice, bob = user(client), user(client)
        request_id = ask(client, alice, type="export").json()["request_id"]
        accepted = confirm(client, alice, request_id, latest_code(settings, alice["email"], count=2))
        assert accepted.status_code == 202, accepted.text
        assert accepted.json() == {"type": "export", "request_id": request_id, "purge_after": None}
        assert client.get(f"/v1/account/requests/{request_id}", headers=bearer(bob)).status_code == 404
        deadline = time.monotonic() + 10
        while True:
            view = client.get(f"/v1/account/requests/{request_id}", headers=bearer(alice)).json()
            if view["export_status"] == "ready" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert view["type"] == "export" and view["confirmed_at"] is not None
    assert view["export_status"] == "ready"
    archive = httpx.get(view["download"]["url"]).json()
    assert archive["profile"]["user_id"] == alice["user_id"]


def bundle_identity(archive: dict[str, Any]) -> str:
    identity: str = archive["devices"][0]["identity_key"]
    assert len(identity) == 44
    return identity


async def test_codes_expire_and_allow_few_attempts(
    api: LiveServer, settings: Settings, db: asyncpg.Connection[asyncpg.Record]
) -> None:
    with api.client() as client:
        alice = user(client)
        first = ask(client, alice, type="export").json()["request_id"]
        code = latest_code(settings, alice["email"], count=2)  # after her sign-up code
        for _ in range(5):
            assert confirm(client, alice, first, other_code(code)).status_code == 400
        locked = confirm(client, alice, first, code)
        assert locked.status_code == 400
        assert "Too many wrong codes" in locked.json()["detail"]

        second = ask(client, alice, type="export").json()["request_id"]
        code = latest_code(settings, alice["email"], count=3)
        await db.execute(
            "UPDATE account_requests SET expires_at = now() - interval '1 second' WHERE id = $1", second
        )
        expired = confirm(client, alice, second, code)
        assert expired.status_code == 400
        assert "expired" in expired.json()["detail"]
    stored = await db.fetch("SELECT code_hash FROM account_requests")
    assert all(len(row["code_hash"]) == 32 for row in stored)
    assert not any(code.encode() in row["code_hash"] for row in stored)


def test_email_change_goes_to_the_new_address_and_tells_the_old_one(
    api: LiveServer, settings: Settings
) -> None:
    with api.client() as client:
        alice, bob = user(client), user(client)
        new = new_email()
        assert (
            ask(client, alice, type="email_change", new_email=new, password="wrong password!").status_code
            == 403
        )
        # No oracle: a taken address answers like a free one; the conflict shows only at
        # confirmation, which needs the code mailed to that address.
        taken = ask(client, alice, type="email_change", new_email=bob["email"], password=PASSWORD)
        asked = ask(client, alice, type="email_change", new_email=new, password=PASSWORD)
        assert taken.status_code == asked.status_code == 202
        assert taken.json().keys() == asked.json().keys() == {"request_id"}
        bobs_code = latest_code(settings, bob["email"], count=2)  # after Bob's sign-up code
        conflict = confirm(client, alice, taken.json()["request_id"], bobs_code)
        assert conflict.status_code == 409
        code = latest_code(settings, new)
        assert len(messages_to(settings, alice["email"])) == 1  # only Alice's own sign-up code
        # Until confirmed, the old address is the login.
        login(client, alice["email"])
        assert login_status(client, new) == 401

        done = confirm(client, alice, asked.json()["request_id"], code)
        assert done.status_code == 200, done.text
        assert done.json()["email"] == new
        login(client, new)
        assert (
            client.post("/v1/auth/login", json={"email": alice["email"], "password": PASSWORD}).status_code
            == 401
        )
        account = client.get("/v1/account", headers=bearer(alice)).json()
        assert (account["email"], account["email_verified"]) == (new, True)
    notice = wait_for_mail(settings, alice["email"], count=2)[-1]
    assert "changed" in body(notice)
    assert new not in body(notice)


async def test_erasure_disables_at_once_and_the_purge_leaves_nothing(
    api: LiveServer,
    settings: Settings,
    db: asyncpg.Connection[asyncpg.Record],
    blobs: BlobStore,
    database_url: str,
) -> None:
    with api.client() as client:
        alice, bob = user(client), user(client)
        second_device = login(client, alice["email"], device_name="phone")
        client.put("/v1/keys", json=bundle(), headers=bearer(alice))
        cid = direct(client, alice, bob)
        assert send(client, alice, cid, envelope()).status_code == 201
        assert send(client, bob, cid, envelope()).status_code == 201
        attachment_id = upload(client, alice, cid, os.urandom(500))
        kept_attachment = upload(client, bob, cid, os.urandom(500))
        # Her encrypted backup, and a newer one uploaded but never completed.
        back_up(client, alice, os.urandom(600))
        unfinished = os.urandom(700)
        newer = reserve_backup(client, alice, unfinished).json()["upload"]
        assert put_to_store(newer, unfinished).status_code == 200
        backup_keys = [
            row["object_key"]
            for row in await db.fetch(
                "SELECT object_key FROM backups WHERE user_id = $1::uuid", alice["user_id"]
            )
        ]
        assert len(backup_keys) == 2
        team = group(client, alice, bob)  # alice invited bob: membership events name her
        alone = group(client, alice)
        object_key = await db.fetchval(
            "SELECT object_key FROM attachments WHERE id = $1::uuid", attachment_id
        )
        assert ask(client, alice, type="erasure", password="not my password").status_code == 403

        async with ws_connect(api, alice) as ws:
            await registered(ws)
            asked = ask(client, alice, type="erasure", password=PASSWORD)
            assert asked.status_code == 202
            code = latest_code(settings, alice["email"], count=2)  # after her sign-up code
            done = confirm(client, alice, asked.json()["request_id"], code)
            assert done.status_code == 202, done.text
            purge_after = datetime.fromisoformat(done.json()["purge_after"])
            assert timedelta(days=29) < purge_after - datetime.now(UTC) <= timedelta(days=30)
            with pytest.raises(ConnectionClosed) as closed:
                await frames_until_closed(ws)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401

        for session in (alice, second_device):
            assert client.get("/v1/account", headers=bearer(session)).status_code == 401
        assert (
            client.post("/v1/auth/login", json={"email": alice["email"], "password": PASSWORD}).status_code
            == 401
        )
        # Nothing is purged during the grace window.
        counts = await run_maintenance(database_url, blobs, datetime.now(UTC) + timedelta(days=29), LONG)
        assert counts["accounts_purged"] == 0
        assert (
            await db.fetchval("SELECT status FROM users WHERE id = $1::uuid", alice["user_id"]) == "disabled"
        )

    later = datetime.now(UTC) + timedelta(days=30, minutes=1)
    counts = await run_maintenance(database_url, blobs, later, LONG)
    assert counts["accounts_purged"] == 1
    needles = [alice["user_id"], alice["session_id"], second_device["session_id"], alice["email"]]
    assert await tables_mentioning(db, needles) == []
    assert await blobs.stat(object_key) is None
    listed = s3_client(settings).list_objects_v2(Bucket=settings.s3_bucket).get("Contents", [])
    assert not {object_key, *backup_keys} & {o["Key"] for o in listed}
    assert await db.fetchval("SELECT count(*) FROM backups") == 0
    tombstone = await db.fetchrow("SELECT * FROM erasure_tombstones")
    assert tombstone is not None and set(tombstone.keys()) == {"id", "requested_at", "purged_at"}
    # What was shared with others stays theirs; the conversation only Alice had is gone.
    assert await db.fetchval("SELECT count(*) FROM attachments WHERE id = $1::uuid", kept_attachment) == 1
    assert (
        await db.fetchval("SELECT count(*) FROM conversations WHERE id = $1::uuid", alone["conversation_id"])
        == 0
    )
    assert (
        await db.fetchval("SELECT count(*) FROM conversations WHERE id = $1::uuid", team["conversation_id"])
        == 1
    )

    with api.client() as client:
        register(client, alice["email"])
        assert login(client, alice["email"])["user_id"] != alice["user_id"]


async def test_retention_removes_old_messages_sessions_and_attachments(
    api: LiveServer, db: asyncpg.Connection[asyncpg.Record], blobs: BlobStore, database_url: str
) -> None:
    with api.client() as client:
        alice, bob = user(client), user(client)
        cid = direct(client, alice, bob)
        assert send(client, alice, cid, envelope()).status_code == 201
        attachment_id = upload(client, alice, cid, os.urandom(300))
        client.post("/v1/auth/logout", headers=bearer(bob))
    object_key = await db.fetchval("SELECT object_key FROM attachments WHERE id = $1::uuid", attachment_id)

    soon = await run_maintenance(database_url, blobs, datetime.now(UTC) + timedelta(days=29))
    assert (soon["messages_deleted"], soon["sessions_deleted"], soon["attachments_removed"]) == (0, 0, 0)
    later = await run_maintenance(database_url, blobs, datetime.now(UTC) + timedelta(days=30, minutes=1))
    assert later["messages_deleted"] == 1
    assert later["sessions_deleted"] == 1  # Bob's ended session; Alice's is still live
    assert later["attachments_removed"] == 1
    assert await blobs.stat(object_key) is None
    assert await db.fetchval("SELECT count(*) FROM messages") == 0
