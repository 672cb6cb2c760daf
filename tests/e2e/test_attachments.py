"""Attachments end to end: the Veil server signs, the real S3 server (SeaweedFS) enforces.

Every upload and download here goes straight to the object store with the presigned request the
server returned, as a client's would; the server never sees file bytes.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import ServerFactory
from tests.support.files import direct, maintenance_round_at, put_to_store, reserve, s3_client, upload
from tests.support.keys import b64
from tests.support.messaging import group
from tests.support.server import LiveServer, free_port
from tests.support.users import bearer, login, register
from veil.core.blobstore import BlobStore
from veil.core.config import Settings

MiB = 1024 * 1024


def user(client: httpx.Client) -> dict[str, Any]:
    return login(client, register(client))


async def object_key(db: asyncpg.Connection[asyncpg.Record], attachment_id: str) -> str | None:
    key: str | None = await db.fetchval("SELECT object_key FROM attachments WHERE id = $1", attachment_id)
    return key


async def test_upload_and_download_round_trip_through_the_store(
    api: LiveServer, db: asyncpg.Connection[asyncpg.Record], blobs: BlobStore, settings: Settings
) -> None:
    ciphertext = os.urandom(3 * MiB + 17)
    with api.client() as client:
        alice, bob = user(client), user(client)
        conversation_id = direct(client, alice, bob)

        reserved = reserve(client, alice, conversation_id, ciphertext)
        assert reserved.status_code == 201, reserved.text
        body = reserved.json()
        assert set(body) == {"attachment_id", "upload"}
        request = body["upload"]
        assert request["method"] == "PUT"
        assert request["headers"] == {
            "Content-Length": str(len(ciphertext)),
            "x-amz-checksum-sha256": b64(hashlib.sha256(ciphertext).digest()),
        }
        assert settings.s3_endpoint
        assert request["url"].startswith(f"{settings.s3_endpoint}/{settings.s3_bucket}/")
        # The signature covers the length and the digest, so the store can hold us to them.
        assert "content-length%3Bhost%3Bx-amz-checksum-sha256" in request["url"]
        expires = datetime.fromisoformat(request["expires_at"])
        assert timedelta(minutes=4) < expires - datetime.now(UTC) <= timedelta(minutes=5)
        assert "X-Amz-Expires=300&" in request["url"]

        assert put_to_store(request, ciphertext).status_code == 200
        attachment_id = body["attachment_id"]
        completed = client.post(f"/v1/attachments/{attachment_id}/complete", headers=bearer(alice))
        assert completed.status_code == 200, completed.text
        view = completed.json()
        assert view["attachment_id"] == attachment_id
        assert view["size"] == len(ciphertext)
        assert view["sha256"] == b64(hashlib.sha256(ciphertext).digest())
        # Completing again is harmless and answers the same.
        again = client.post(f"/v1/attachments/{attachment_id}/complete", headers=bearer(alice))
        assert again.status_code == 200
        assert again.json() == view

        got = client.get(f"/v1/attachments/{attachment_id}", headers=bearer(bob))
        assert got.status_code == 200, got.text
        download = got.json()["download"]
        assert {k: v for k, v in got.json().items() if k != "download"} == view
        expires = datetime.fromisoformat(download["expires_at"])
        assert timedelta(minutes=4) < expires - datetime.now(UTC) <= timedelta(minutes=5)
        fetched = httpx.get(download["url"], timeout=30)
        assert fetched.status_code == 200
        assert fetched.content == ciphertext
        # Forced by the signed request, whatever the bytes look like.
        assert fetched.headers["content-type"] == "application/octet-stream"
        assert fetched.headers["content-disposition"] == "attachment"

    row = await db.fetchrow("SELECT * FROM attachments WHERE id = $1", attachment_id)
    assert row is not None
    assert set(row.keys()) == {
        "id",
        "owner_id",
        "conversation_id",
        "object_key",
        "size",
        "sha256",
        "state",
        "created_at",
        "expires_at",
        "completed_at",
    }
    assert row["state"] == "complete"
    key = row["object_key"]
    # Random, at least 128 bits, and nothing of who or where.
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", key)
    for identifier in (alice["user_id"], bob["user_id"], conversation_id, attachment_id):
        assert identifier not in key
        assert identifier.replace("-", "") not in key
    stored = await blobs.stat(key)
    assert stored is not None
    assert (stored.size, stored.sha256) == (len(ciphertext), hashlib.sha256(ciphertext).digest())


def test_the_store_refuses_a_body_of_another_length_or_digest(api: LiveServer) -> None:
    ciphertext = os.urandom(64 * 1024)
    with api.client() as client:
        alice, bob = user(client), user(client)
        conversation_id = direct(client, alice, bob)
        reserved = reserve(client, alice, conversation_id, ciphertext)
        assert reserved.status_code == 201
        request = reserved.json()["upload"]
        altered = bytes([ciphertext[0] ^ 1]) + ciphertext[1:]
        longer, shorter = ciphertext + b"\0", ciphertext[:-1]
        refusals = {
            "longer": put_to_store(request, longer, **{"Content-Length": str(len(longer))}),
            "shorter": put_to_store(request, shorter, **{"Content-Length": str(len(shorter))}),
            "altered": put_to_store(request, altered),
            "other digest": put_to_store(
                request, altered, **{"x-amz-checksum-sha256": b64(hashlib.sha256(altered).digest())}
            ),
        }
        statuses = {name: response.status_code for name, response in refusals.items()}
        assert statuses == {"longer": 403, "shorter": 403, "altered": 400, "other digest": 403}
        assert "BadDigest" in refusals["altered"].text
        # Nothing was stored, so there is nothing to complete.
        attachment_id = reserved.json()["attachment_id"]
        early = client.post(f"/v1/attachments/{attachment_id}/complete", headers=bearer(alice))
        assert early.status_code == 409
        assert client.get(f"/v1/attachments/{attachment_id}", headers=bearer(bob)).status_code == 404
        assert client.get(f"/v1/attachments/{attachment_id}", headers=bearer(alice)).status_code == 409


async def test_complete_deletes_an_object_that_does_not_match(
    api: LiveServer, db: asyncpg.Connection[asyncpg.Record], blobs: BlobStore, settings: Settings
) -> None:
    """If something other than the presigned PUT wrote the object, completion notices."""
    ciphertext = os.urandom(4096)
    with api.client() as client:
        alice, bob = user(client), user(client)
        reserved = reserve(client, alice, direct(client, alice, bob), ciphertext)
        attachment_id = reserved.json()["attachment_id"]
        key = await object_key(db, attachment_id)
        assert key is not None
        s3_client(settings).put_object(Bucket=settings.s3_bucket, Key=key, Body=os.urandom(4096))
        mismatch = client.post(f"/v1/attachments/{attachment_id}/complete", headers=bearer(alice))
        assert mismatch.status_code == 422
        assert mismatch.json()["type"].endswith("/upload-mismatch")
    assert await blobs.stat(key) is None
    assert await db.fetchval("SELECT state FROM attachments WHERE id = $1", attachment_id) == "pending"


async def test_over_the_size_limit_is_413_before_anything_is_signed(
    api: LiveServer, db: asyncpg.Connection[asyncpg.Record]
) -> None:
    limit = 52_428_800
    digest = b64(hashlib.sha256(b"x").digest())
    with api.client() as client:
        alice, bob = user(client), user(client)
        conversation_id = direct(client, alice, bob)
        too_big = client.post(
            "/v1/attachments",
            json={"conversation_id": conversation_id, "size": limit + 1, "sha256": digest},
            headers=bearer(alice),
        )
        assert too_big.status_code == 413
        assert too_big.headers["content-type"] == "application/problem+json"
        assert str(limit) in too_big.json()["detail"]
        assert await db.fetchval("SELECT count(*) FROM attachments") == 0
        exactly = client.post(
            "/v1/attachments",
            json={"conversation_id": conversation_id, "size": limit, "sha256": digest},
            headers=bearer(alice),
        )
        assert exactly.status_code == 201


@pytest.mark.parametrize(
    "change",
    [
        {"size": 0},
        {"size": "10"},
        {"size": 10.0},
        {"sha256": b64(b"\0" * 31)},
        {"sha256": "not base64!"},
        {"conversation_id": "nope"},
        {"name": "holiday.jpg"},
    ],
)
async def test_bad_reservations_are_422_and_store_nothing(
    api: LiveServer, db: asyncpg.Connection[asyncpg.Record], change: dict[str, Any]
) -> None:
    with api.client() as client:
        alice, bob = user(client), user(client)
        response = reserve(client, alice, direct(client, alice, bob), b"0123456789", **change)
        assert response.status_code == 422, response.text
        assert response.json()["errors"]
    assert await db.fetchval("SELECT count(*) FROM attachments") == 0


def test_expired_urls_are_refused_by_the_store(make_server: ServerFactory) -> None:
    # Three seconds: long enough for the upload below on a loaded machine, short enough to wait out.
    server = make_server(
        VEIL_ATTACHMENT_UPLOAD_URL_TTL="3",
        VEIL_ATTACHMENT_DOWNLOAD_URL_TTL="3",
        VEIL_AUTH_RATE="1000",
        VEIL_AUTH_BURST="1000",
    )
    ciphertext = os.urandom(1024)
    with server.client() as client:
        alice, bob = user(client), user(client)
        conversation_id = direct(client, alice, bob)
        late = reserve(client, alice, conversation_id, ciphertext).json()
        attachment_id = upload(client, alice, conversation_id, ciphertext)
        download = client.get(f"/v1/attachments/{attachment_id}", headers=bearer(bob)).json()["download"]
        time.sleep(4.5)
        expired_put = put_to_store(late["upload"], ciphertext)
        assert expired_put.status_code == 403
        assert "expired" in expired_put.text.lower()
        expired_get = httpx.get(download["url"])
        assert expired_get.status_code == 403
        assert "expired" in expired_get.text.lower()


def test_only_members_see_attachments_and_only_the_owner_deletes(api: LiveServer) -> None:
    ciphertext = os.urandom(2048)
    with api.client() as client:
        alice, bob, carol, mallory = (user(client) for _ in range(4))
        conversation = group(client, alice, bob, carol)
        cid = conversation["conversation_id"]
        attachment_id = upload(client, bob, cid, ciphertext)
        path = f"/v1/attachments/{attachment_id}"

        for outsider_call in (
            client.get(path, headers=bearer(mallory)),
            client.delete(path, headers=bearer(mallory)),
            client.post(path + "/complete", headers=bearer(mallory)),
        ):
            assert outsider_call.status_code == 404
            assert outsider_call.json()["detail"] == "No such attachment."
        # Not a member: cannot attach to the conversation either (same answer as a missing one).
        assert reserve(client, mallory, cid, ciphertext).status_code == 404
        # A member who is not the uploader may download but not delete.
        assert client.get(path, headers=bearer(alice)).status_code == 200
        assert client.delete(path, headers=bearer(alice)).status_code == 403
        # Someone who left loses access.
        assert client.delete(f"/v1/conversations/{cid}/members/me", headers=bearer(carol)).status_code == 204
        assert client.get(path, headers=bearer(carol)).status_code == 404
        # A reservation is the uploader's alone until it is complete.
        pending = reserve(client, bob, cid, ciphertext).json()["attachment_id"]
        assert client.get(f"/v1/attachments/{pending}", headers=bearer(alice)).status_code == 404
        assert client.delete(f"/v1/attachments/{pending}", headers=bearer(alice)).status_code == 404
        missing = "00000000-0000-4000-8000-000000000000"
        assert client.get(f"/v1/attachments/{missing}", headers=bearer(bob)).status_code == 404


async def test_delete_removes_object_and_row(
    api: LiveServer, db: asyncpg.Connection[asyncpg.Record], blobs: BlobStore
) -> None:
    with api.client() as client:
        alice, bob = user(client), user(client)
        conversation_id = direct(client, alice, bob)
        attachment_id = upload(client, alice, conversation_id, os.urandom(1000))
        key = await object_key(db, attachment_id)
        assert key is not None
        url = client.get(f"/v1/attachments/{attachment_id}", headers=bearer(bob)).json()["download"]["url"]

        assert client.delete(f"/v1/attachments/{attachment_id}", headers=bearer(alice)).status_code == 204
        assert await blobs.stat(key) is None
        assert await object_key(db, attachment_id) is None
        assert client.get(f"/v1/attachments/{attachment_id}", headers=bearer(bob)).status_code == 404
        assert client.delete(f"/v1/attachments/{attachment_id}", headers=bearer(alice)).status_code == 404
        # A URL handed out before finds nothing now.
        assert httpx.get(url).status_code == 404


async def test_sweep_removes_unfinished_reservations_and_orphans(
    api: LiveServer, db: asyncpg.Connection[asyncpg.Record], blobs: BlobStore, database_url: str
) -> None:
    with api.client() as client:
        alice, bob, carol = user(client), user(client), user(client)
        kept = upload(client, alice, direct(client, alice, bob), os.urandom(100))
        # Uploaded but never completed, and reserved but never uploaded.
        assert reserve(client, alice, direct(client, alice, carol), os.urandom(100)).status_code == 201
        body = os.urandom(200)
        uploaded = reserve(client, alice, direct(client, alice, carol), body).json()
        assert put_to_store(uploaded["upload"], body).status_code == 200
        # A group whose every member leaves is deleted, and its attachments with it.
        abandoned = group(client, bob)["conversation_id"]
        gone = upload(client, bob, abandoned, os.urandom(300))
        gone_key = await object_key(db, gone)
        left = client.delete(f"/v1/conversations/{abandoned}/members/me", headers=bearer(bob))
        assert left.status_code == 204

    keys = {a: await object_key(db, a) for a in (kept, uploaded["attachment_id"])}
    # Before the reservations expire, only the orphan goes.
    assert (await maintenance_round_at(database_url, blobs, datetime.now(UTC)))["attachments_removed"] == 1
    assert await object_key(db, gone) is None
    assert gone_key is not None and await blobs.stat(gone_key) is None
    assert await blobs.stat(keys[uploaded["attachment_id"]] or "") is not None

    later = datetime.now(UTC) + timedelta(hours=1, seconds=5)
    assert (await maintenance_round_at(database_url, blobs, later))["attachments_removed"] == 2
    remaining = await db.fetch("SELECT id::text FROM attachments")
    assert [r["id"] for r in remaining] == [kept]
    assert await blobs.stat(keys[uploaded["attachment_id"]] or "") is None
    assert await blobs.stat(keys[kept] or "") is not None


async def test_quotas_on_pending_reservations_and_stored_bytes(
    make_server: ServerFactory, db: asyncpg.Connection[asyncpg.Record]
) -> None:
    server = make_server(
        VEIL_ATTACHMENT_PENDING_MAX="2",
        VEIL_ATTACHMENT_QUOTA_BYTES="10000",
        VEIL_AUTH_RATE="1000",
        VEIL_AUTH_BURST="1000",
    )
    with server.client() as client:
        alice, bob = user(client), user(client)
        cid = direct(client, alice, bob)
        first = reserve(client, alice, cid, os.urandom(1000))
        assert first.status_code == 201
        assert reserve(client, alice, cid, os.urandom(1000)).status_code == 201
        third = reserve(client, alice, cid, os.urandom(1000))
        assert third.status_code == 429
        assert 3500 <= int(third.headers["Retry-After"]) <= 3600
        assert third.json()["type"].endswith("/quota-exceeded")
        # Another user's quota is their own.
        assert reserve(client, bob, cid, os.urandom(1000)).status_code == 201
        # Deleting a reservation frees its place; bytes count whether pending or complete.
        gone = first.json()["attachment_id"]
        assert client.delete(f"/v1/attachments/{gone}", headers=bearer(alice)).status_code == 204
        big = reserve(client, alice, cid, os.urandom(9001))
        assert big.status_code == 429
        assert "quota" in big.json()["detail"]
        assert reserve(client, alice, cid, os.urandom(9000)).status_code == 201
    assert await db.fetchval("SELECT count(*) FROM attachments WHERE owner_id = $1", alice["user_id"]) == 2


async def test_store_down_gives_503_and_leaves_no_rows(
    make_server: ServerFactory, db: asyncpg.Connection[asyncpg.Record]
) -> None:
    """A server whose object store does not answer (nothing listens on its port)."""
    server = make_server(
        S3_ENDPOINT=f"http://127.0.0.1:{free_port()}",
        S3_TIMEOUT="1",
        VEIL_AUTH_RATE="1000",
        VEIL_AUTH_BURST="1000",
    )
    with server.client() as client:
        assert client.get("/readyz").status_code == 503
        alice, bob = user(client), user(client)
        cid = direct(client, alice, bob)
        started = time.monotonic()
        refused = reserve(client, alice, cid, os.urandom(100))
        assert time.monotonic() - started < 5
        assert refused.status_code == 503
        assert refused.headers["Retry-After"]
        assert refused.json()["status"] == 503
    assert await db.fetchval("SELECT count(*) FROM attachments") == 0


async def test_store_down_during_complete_and_delete_changes_nothing(
    make_server: ServerFactory, api: LiveServer, db: asyncpg.Connection[asyncpg.Record]
) -> None:
    """Reserved and uploaded through a working server; then a server that cannot reach the store
    (same database) refuses to complete or delete, and the row stays as it was."""
    body = os.urandom(500)
    with api.client() as client:
        alice, bob = user(client), user(client)
        cid = direct(client, alice, bob)
        done = upload(client, alice, cid, body)
        reserved = reserve(client, alice, cid, body).json()
        assert put_to_store(reserved["upload"], body).status_code == 200
    broken = make_server(S3_ENDPOINT=f"http://127.0.0.1:{free_port()}", S3_TIMEOUT="1")
    with broken.client() as client:
        pending = reserved["attachment_id"]
        assert client.post(f"/v1/attachments/{pending}/complete", headers=bearer(alice)).status_code == 503
        assert client.delete(f"/v1/attachments/{done}", headers=bearer(alice)).status_code == 503
    states = dict(await db.fetch("SELECT id::text, state FROM attachments"))
    assert states == {done: "complete", pending: "pending"}
