"""The encrypted backup slot end to end: the Veil server signs, the real S3 server (SeaweedFS)
enforces, and bytes go between the client and the store only.

One server and one database serve the whole module (each test makes its own users); the maximum
backup size is lowered so that the limit can be tested without 100 MiB bodies.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.support.databases import server_url, with_database
from tests.support.files import back_up, maintenance_round_at, put_to_store, s3_client
from tests.support.files import reserve_backup as reserve
from tests.support.keys import b64
from tests.support.server import LiveServer, free_port, start_server
from tests.support.users import bearer, login, register
from veil.core.blobstore import BlobStore
from veil.core.config import Settings
from veil.devstack.tls import DevCertificates

LIMIT = 1024 * 1024


@pytest.fixture(scope="module")
def slot_database(settings: Settings, template_database: str) -> Iterator[str]:
    name = f"veil_test_backups_{uuid.uuid4().hex[:12]}"

    async def admin(statement: str) -> None:
        conn = await asyncpg.connect(server_url(settings))
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"'))
    try:
        yield with_database(server_url(settings), name)
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def api(
    settings: Settings,
    slot_database: str,
    certificates: DevCertificates,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LiveServer]:
    log_file: Path = tmp_path_factory.mktemp("backup-slot") / "veil.log"
    env = {"VEIL_AUTH_RATE": "10000", "VEIL_AUTH_BURST": "10000", "VEIL_BACKUP_MAX_BYTES": str(LIMIT)}
    server = start_server(settings, slot_database, certificates, log_file=log_file, extra_env=env)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def db(slot_database: str) -> AsyncIterator[asyncpg.Connection[asyncpg.Record]]:
    conn = await asyncpg.connect(slot_database)
    try:
        yield conn
    finally:
        await conn.close()


def user(client: httpx.Client) -> dict[str, Any]:
    email = register(client)
    return {**login(client, email), "email": email}


def complete(client: httpx.Client, who: dict[str, Any]) -> httpx.Response:
    return client.post("/v1/backup/complete", headers=bearer(who))


def download(client: httpx.Client, who: dict[str, Any]) -> bytes:
    got = client.get("/v1/backup", headers=bearer(who))
    assert got.status_code == 200, got.text
    fetched = httpx.get(got.json()["download"]["url"], timeout=30)
    assert fetched.status_code == 200
    return fetched.content


async def keys_of(db: asyncpg.Connection[asyncpg.Record], who: dict[str, Any]) -> dict[str, str]:
    """The user's backup object keys, by state."""
    rows = await db.fetch(
        "SELECT state, object_key FROM backups WHERE user_id = $1", uuid.UUID(who["user_id"])
    )
    return {row["state"]: row["object_key"] for row in rows}


async def test_a_backup_round_trips_and_a_new_one_replaces_it_only_once_complete(
    api: LiveServer, db: asyncpg.Connection[asyncpg.Record], blobs: BlobStore, settings: Settings
) -> None:
    first, second = os.urandom(300 * 1024 + 7), os.urandom(200 * 1024 + 3)
    with api.client() as client:
        alice = user(client)
        reserved = reserve(client, alice, first)
        assert reserved.status_code == 201, reserved.text
        assert set(reserved.json()) == {"upload"}
        request = reserved.json()["upload"]
        assert request["method"] == "PUT"
        assert request["headers"] == {
            "Content-Length": str(len(first)),
            "x-amz-checksum-sha256": b64(hashlib.sha256(first).digest()),
        }
        assert request["url"].startswith(f"{settings.s3_endpoint}/{settings.s3_bucket}/")
        assert "content-length%3Bhost%3Bx-amz-checksum-sha256" in request["url"]
        expires = datetime.fromisoformat(request["expires_at"])
        assert timedelta(minutes=4) < expires - datetime.now(UTC) <= timedelta(minutes=5)
        assert put_to_store(request, first).status_code == 200
        completed = complete(client, alice)
        assert completed.status_code == 200, completed.text
        view = completed.json()
        assert set(view) == {"size", "sha256", "created_at"}
        assert (view["size"], view["sha256"]) == (len(first), b64(hashlib.sha256(first).digest()))

        # Another session of the same user (a new device) downloads it.
        new_device = login(client, alice["email"], device_name="new laptop")
        got = client.get("/v1/backup", headers=bearer(new_device))
        assert got.status_code == 200
        assert {k: v for k, v in got.json().items() if k != "download"} == view
        expires = datetime.fromisoformat(got.json()["download"]["expires_at"])
        assert timedelta(minutes=4) < expires - datetime.now(UTC) <= timedelta(minutes=5)
        fetched = httpx.get(got.json()["download"]["url"], timeout=30)
        assert fetched.content == first
        assert fetched.headers["content-type"] == "application/octet-stream"
        assert fetched.headers["content-disposition"] == "attachment"
        first_key = (await keys_of(db, alice))["current"]
        # Random, 256 bits, nothing of whose it is.
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", first_key)
        assert alice["user_id"] not in first_key and alice["user_id"].replace("-", "") not in first_key

        # A second backup, uploaded but not completed: the first is still the one served.
        again = reserve(client, alice, second)
        assert again.status_code == 201
        assert put_to_store(again.json()["upload"], second).status_code == 200
        pending_key = (await keys_of(db, alice))["pending"]
        assert pending_key != first_key
        assert download(client, new_device) == first
        assert await blobs.stat(first_key) is not None

        replaced = complete(client, alice)
        assert replaced.status_code == 200
        assert replaced.json()["size"] == len(second)
        assert download(client, alice) == second
        # Only now is the first backup gone, object and row.
        assert await blobs.stat(first_key) is None
        assert await keys_of(db, alice) == {"current": pending_key}
        assert await db.fetchval("SELECT count(*) FROM backups WHERE object_key = $1", first_key) == 0
        # Completing again finds nothing pending.
        assert complete(client, alice).status_code == 404
    # Presigned URLs are handed to the client, never written to the logs.
    assert "X-Amz-Signature" not in api.logs()


async def test_a_new_reservation_drops_an_unfinished_one(
    api: LiveServer, db: asyncpg.Connection[asyncpg.Record], blobs: BlobStore
) -> None:
    abandoned, kept = os.urandom(5000), os.urandom(6000)
    with api.client() as client:
        alice = user(client)
        first = reserve(client, alice, abandoned).json()["upload"]
        assert put_to_store(first, abandoned).status_code == 200
        abandoned_key = (await keys_of(db, alice))["pending"]
        second = reserve(client, alice, kept).json()["upload"]
        # The earlier upload's object is deleted at once; completion now wants the new one.
        assert await blobs.stat(abandoned_key) is None
        assert complete(client, alice).status_code == 422
        assert put_to_store(second, kept).status_code == 200
        assert complete(client, alice).json()["size"] == len(kept)
        assert download(client, alice) == kept


def test_the_store_refuses_a_body_of_another_length_or_digest(api: LiveServer) -> None:
    body = os.urandom(64 * 1024)
    with api.client() as client:
        alice = user(client)
        request = reserve(client, alice, body).json()["upload"]
        altered = bytes([body[0] ^ 1]) + body[1:]
        longer, shorter = body + b"\0", body[:-1]
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
        # Nothing was stored: completion says so, and there is still no backup.
        refused = complete(client, alice)
        assert refused.status_code == 422
        assert refused.json()["type"].endswith("/upload-missing")
        assert client.get("/v1/backup", headers=bearer(alice)).status_code == 404


async def test_completing_a_mismatching_object_is_422_and_changes_nothing(
    api: LiveServer, db: asyncpg.Connection[asyncpg.Record], blobs: BlobStore, settings: Settings
) -> None:
    """If something other than the presigned PUT wrote the object, completion notices."""
    good = os.urandom(4096)
    with api.client() as client:
        alice = user(client)
        view = back_up(client, alice, good)
        assert reserve(client, alice, os.urandom(4096)).status_code == 201
        keys = await keys_of(db, alice)
        s3_client(settings).put_object(Bucket=settings.s3_bucket, Key=keys["pending"], Body=os.urandom(4096))
        mismatch = complete(client, alice)
        assert mismatch.status_code == 422
        assert mismatch.json()["type"].endswith("/upload-mismatch")
        assert await blobs.stat(keys["pending"]) is None
        # The current backup is untouched.
        got = client.get("/v1/backup", headers=bearer(alice)).json()
        assert {k: v for k, v in got.items() if k != "download"} == view
        assert download(client, alice) == good
        assert (await keys_of(db, alice))["current"] == keys["current"]


@pytest.mark.parametrize(
    "change",
    [
        {"size": 0},
        {"size": "10"},
        {"sha256": b64(b"\0" * 31)},
        {"sha256": "not base64!"},
        {"user_id": "00000000-0000-4000-8000-000000000000"},
    ],
)
async def test_bad_reservations_are_422_and_record_nothing(
    api: LiveServer, db: asyncpg.Connection[asyncpg.Record], change: dict[str, Any]
) -> None:
    with api.client() as client:
        alice = user(client)
        response = reserve(client, alice, b"0123456789", **change)
        assert response.status_code == 422, response.text
        assert response.json()["errors"]
        assert await keys_of(db, alice) == {}


async def test_over_the_size_limit_is_413_before_anything_is_signed(
    api: LiveServer, db: asyncpg.Connection[asyncpg.Record]
) -> None:
    digest = b64(hashlib.sha256(b"x").digest())
    with api.client() as client:
        alice = user(client)
        too_big = client.put("/v1/backup", json={"size": LIMIT + 1, "sha256": digest}, headers=bearer(alice))
        assert too_big.status_code == 413
        assert too_big.headers["content-type"] == "application/problem+json"
        assert str(LIMIT) in too_big.json()["detail"]
        assert await keys_of(db, alice) == {}
        exactly = client.put("/v1/backup", json={"size": LIMIT, "sha256": digest}, headers=bearer(alice))
        assert exactly.status_code == 201


async def test_delete_removes_the_backup_and_the_unfinished_upload(
    api: LiveServer, db: asyncpg.Connection[asyncpg.Record], blobs: BlobStore
) -> None:
    with api.client() as client:
        alice = user(client)
        assert client.get("/v1/backup", headers=bearer(alice)).status_code == 404
        assert complete(client, alice).status_code == 404
        assert client.delete("/v1/backup", headers=bearer(alice)).status_code == 204  # nothing there

        back_up(client, alice, os.urandom(1000))
        unfinished = os.urandom(2000)
        assert (
            put_to_store(reserve(client, alice, unfinished).json()["upload"], unfinished).status_code == 200
        )
        keys = await keys_of(db, alice)
        url = client.get("/v1/backup", headers=bearer(alice)).json()["download"]["url"]

        assert client.delete("/v1/backup", headers=bearer(alice)).status_code == 204
        listed = {o.key for o in await blobs.list_objects()}
        assert not {keys["current"], keys["pending"]} & listed
        assert await keys_of(db, alice) == {}
        assert await db.fetchval("SELECT count(*) FROM backups WHERE object_key = $1", keys["current"]) == 0
        assert client.get("/v1/backup", headers=bearer(alice)).status_code == 404
        assert complete(client, alice).status_code == 404
        assert httpx.get(url).status_code == 404  # a URL handed out before finds nothing


def test_the_slot_is_only_ever_the_callers_own(api: LiveServer) -> None:
    secret = os.urandom(1500)
    with api.client() as client:
        alice, mallory = user(client), user(client)
        back_up(client, alice, secret)
        assert client.get("/v1/backup", headers=bearer(mallory)).status_code == 404
        assert complete(client, mallory).status_code == 404
        assert client.delete("/v1/backup", headers=bearer(mallory)).status_code == 204
        assert download(client, alice) == secret
        for anonymous in (
            client.put("/v1/backup", json={"size": 1, "sha256": b64(bytes(32))}),
            client.post("/v1/backup/complete"),
            client.get("/v1/backup"),
            client.delete("/v1/backup"),
        ):
            assert anonymous.status_code == 401


def test_reservations_are_rate_limited_per_user(api: LiveServer) -> None:
    with api.client() as client:
        alice, bob = user(client), user(client)
        statuses = [reserve(client, alice, os.urandom(10)).status_code for _ in range(11)]
        assert statuses == [201] * 10 + [429]
        refused = reserve(client, alice, os.urandom(10))
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
        assert reserve(client, bob, os.urandom(10)).status_code == 201


async def test_the_sweep_removes_expired_uploads_and_late_writes_to_replaced_ones(
    api: LiveServer, db: asyncpg.Connection[asyncpg.Record], blobs: BlobStore, slot_database: str
) -> None:
    with api.client() as client:
        alice, bob = user(client), user(client)
        kept = os.urandom(700)
        back_up(client, alice, kept)
        # Alice: uploaded but never completed. Bob: an upload replaced by a second reservation,
        # then written through its still-valid URL after all.
        unfinished = os.urandom(800)
        assert (
            put_to_store(reserve(client, alice, unfinished).json()["upload"], unfinished).status_code == 200
        )
        late = os.urandom(900)
        replaced = reserve(client, bob, late).json()["upload"]
        replaced_key = (await keys_of(db, bob))["pending"]
        assert reserve(client, bob, os.urandom(100)).status_code == 201
        assert put_to_store(replaced, late).status_code == 200
        keys = await keys_of(db, alice)

    # Before the reservations expire, nothing goes; after, their objects and rows do.
    await maintenance_round_at(slot_database, blobs, datetime.now(UTC))
    assert await blobs.stat(keys["pending"]) is not None
    assert await blobs.stat(replaced_key) is not None
    later = datetime.now(UTC) + timedelta(hours=1, seconds=5)
    assert (await maintenance_round_at(slot_database, blobs, later))["backups_removed"] >= 3
    assert await blobs.stat(keys["pending"]) is None
    assert await blobs.stat(replaced_key) is None
    remaining = await db.fetchval(
        "SELECT count(*) FROM backups WHERE object_key = ANY($1::text[])", [keys["pending"], replaced_key]
    )
    assert remaining == 0
    # The completed backup stays.
    assert await keys_of(db, alice) == {"current": keys["current"]}
    assert await blobs.stat(keys["current"]) is not None


async def test_with_the_store_down_the_backup_is_never_lost(
    api: LiveServer,
    db: asyncpg.Connection[asyncpg.Record],
    blobs: BlobStore,
    settings: Settings,
    slot_database: str,
    certificates: DevCertificates,
    tmp_path: Path,
) -> None:
    """A second server on the same database whose object store does not answer: reserving and
    completing are 503 and change nothing; a delete takes the backup from the user at once, and
    the sweep deletes the objects once the store is back."""
    kept, newer = os.urandom(1100), os.urandom(1200)
    with api.client() as client:
        alice = user(client)
        back_up(client, alice, kept)
        assert put_to_store(reserve(client, alice, newer).json()["upload"], newer).status_code == 200
    keys = await keys_of(db, alice)
    env = {"S3_ENDPOINT": f"http://127.0.0.1:{free_port()}", "S3_TIMEOUT": "1"}
    broken = start_server(
        settings, slot_database, certificates, log_file=tmp_path / "broken.log", extra_env=env
    )
    try:
        with broken.client() as client:
            assert reserve(client, alice, os.urandom(10)).status_code == 503
            assert complete(client, alice).status_code == 503
            assert await keys_of(db, alice) == keys
            assert client.delete("/v1/backup", headers=bearer(alice)).status_code == 204
    finally:
        broken.stop()
    with api.client() as client:
        assert client.get("/v1/backup", headers=bearer(alice)).status_code == 404
    # The objects wait for the sweep: the completed backup's at once, the upload's when it expires.
    assert await blobs.stat(keys["current"]) is not None
    await maintenance_round_at(slot_database, blobs, datetime.now(UTC))
    assert await blobs.stat(keys["current"]) is None
    await maintenance_round_at(slot_database, blobs, datetime.now(UTC) + timedelta(hours=1, seconds=5))
    assert await blobs.stat(keys["pending"]) is None
    remaining = await db.fetchval(
        "SELECT count(*) FROM backups WHERE object_key = ANY($1::text[])", list(keys.values())
    )
    assert remaining == 0
