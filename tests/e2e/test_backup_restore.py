"""`veil backup`, `veil restore` and `veil doctor` as an operator runs them (subprocesses with the
configuration only), on a populated stack: the backup restored into a new database serves the same
users and history, no one-time prekey handed out after the backup is handed out again, and doctor
finds and repairs what a restore leaves between the database and the bucket.

The test has a bucket of its own, so doctor sees only this test's objects."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import struct
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.conftest import ServerFactory
from tests.support.databases import query, server_url, with_database
from tests.support.files import back_up, direct, s3_client, upload
from tests.support.keys import b64, one_time_prekeys, x25519_public
from tests.support.messaging import envelope, send
from tests.support.server import LiveServer, start_server
from tests.support.users import PASSWORD, bearer, login, register
from tests.support.ws import next_frame, registered, ws_connect
from veil.core.config import Settings
from veil.devstack.tls import DevCertificates

LIMITS = {"VEIL_AUTH_RATE": "10000", "VEIL_AUTH_BURST": "10000"}


@pytest.fixture
def bucket(settings: Settings) -> Iterator[str]:
    name = f"veil-backup-{uuid.uuid4().hex[:12]}"
    s3 = s3_client(settings)
    s3.create_bucket(Bucket=name)
    try:
        yield name
    finally:
        for item in s3.list_objects_v2(Bucket=name).get("Contents", []):
            s3.delete_object(Bucket=name, Key=item["Key"])
        s3.delete_bucket(Bucket=name)


@pytest.fixture
def new_database(settings: Settings) -> Iterator[Callable[[], str]]:
    """Makes new databases on the test server, as `createdb` does: nothing in them."""
    made: list[str] = []

    async def admin(statement: str) -> None:
        conn = await asyncpg.connect(server_url(settings))
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    def make() -> str:
        made.append(f"veil_restored_{uuid.uuid4().hex[:12]}")
        asyncio.run(admin(f'CREATE DATABASE "{made[-1]}"'))
        return with_database(server_url(settings), made[-1])

    try:
        yield make
    finally:
        for name in made:
            asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def veil(settings: Settings, bucket: str, database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`veil ARGS...` with the stack's configuration and nothing of this process's."""
    assert settings.s3_endpoint and settings.s3_access_key and settings.s3_secret_key
    ours = ("VEIL_", "S3_", "DATABASE_", "SMTP_", "MAIL_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    env.update(
        VEIL_ENV="test",
        DATABASE_URL=database_url,
        S3_ENDPOINT=settings.s3_endpoint,
        S3_ACCESS_KEY=settings.s3_access_key.get_secret_value(),
        S3_SECRET_KEY=settings.s3_secret_key.get_secret_value(),
        S3_BUCKET=bucket,
        VEIL_JWT_KEYS_FILE=str(settings.jwt_keys_file),
        VEIL_TRANSPARENCY_KEYS_FILE=str(settings.transparency_keys_file),
    )
    return subprocess.run(
        [sys.executable, "-m", "veil", "--env-file", "/dev/null", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, (done.stdout, done.stderr)
    return done.stdout


def problem(done: subprocess.CompletedProcess[str]) -> str:
    """The one line a refused command prints (exit status 1)."""
    assert done.returncode == 1, (done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def publish_keys(client: httpx.Client, device: dict[str, Any], first_id: int) -> None:
    """Three classical and two ML-KEM one-time prekeys, and a last-resort ML-KEM key."""
    signing = Ed25519PrivateKey.generate()
    signed_prekey = x25519_public()

    def pq(key_id: int) -> dict[str, Any]:
        public = MLKEM768PrivateKey.generate().public_key().public_bytes_raw()
        signature = signing.sign(b"veil/pq-prekey/v1" + struct.pack(">I", key_id) + public)
        return {"key_id": key_id, "public_key": b64(public), "signature": b64(signature)}

    body = {
        "identity_key": b64(x25519_public()),
        "signing_key": b64(signing.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)),
        "signed_prekey": {
            "key_id": 1,
            "public_key": b64(signed_prekey),
            "signature": b64(signing.sign(signed_prekey)),
        },
        "one_time_prekeys": one_time_prekeys(3, first_id),
        "pq_last_resort_prekey": pq(first_id + 500),
        "pq_one_time_prekeys": [pq(first_id), pq(first_id + 1)],
    }
    assert client.put("/v1/keys", json=body, headers=bearer(device)).status_code == 200


def claim(client: httpx.Client, claimer: dict[str, Any], owner: dict[str, Any]) -> dict[str, Any]:
    url = f"/v1/users/{owner['user_id']}/devices/{owner['session_id']}/claim"
    response = client.post(url, headers=bearer(claimer))
    assert response.status_code == 200, response.text
    claimed: dict[str, Any] = response.json()
    return claimed


def history(client: httpx.Client, reader: dict[str, Any], conversation_id: str) -> list[str]:
    response = client.get(f"/v1/conversations/{conversation_id}/messages", headers=bearer(reader))
    assert response.status_code == 200, response.text
    return [item["message_id"] for item in response.json()["items"]]


def object_key(database_url: str, attachment_id: str) -> str:
    rows = query(database_url, "SELECT object_key FROM attachments WHERE id = $1", uuid.UUID(attachment_id))
    return str(rows[0]["object_key"])


def backup_key(database_url: str, owner: dict[str, Any]) -> str:
    rows = query(
        database_url,
        "SELECT object_key FROM backups WHERE user_id = $1 AND state = 'current'",
        uuid.UUID(owner["user_id"]),
    )
    return str(rows[0]["object_key"])


def test_backup_restore_and_doctor(
    settings: Settings,
    make_server: ServerFactory,
    database_url: str,
    new_database: Callable[[], str],
    certificates: DevCertificates,
    bucket: str,
    tmp_path: Path,
) -> None:
    original = make_server(S3_BUCKET=bucket, **LIMITS)
    with original.client() as client:
        alice_email, bob_email = register(client), register(client)
        alice, bob = login(client, alice_email), login(client, bob_email)
        publish_keys(client, alice, first_id=1)
        publish_keys(client, bob, first_id=1)
        conversation_id = direct(client, alice, bob)
        sent = []
        for author in (alice, bob, alice):
            message = envelope()
            assert send(client, author, conversation_id, message).status_code == 201
            sent.append(message["message_id"])
        kept_file = os.urandom(3000)
        kept = upload(client, alice, conversation_id, kept_file)
        kept_backup = os.urandom(1500)
        back_up(client, bob, kept_backup)
        bob_backup_key = backup_key(database_url, bob)

    backup = tmp_path / "backup"
    ok(veil(settings, bucket, database_url, "backup", str(backup)))
    assert backup.stat().st_mode & 0o777 == 0o700
    manifest = json.loads((backup / "manifest.json").read_text())
    listed = {o["key"] for o in manifest["bucket"]["objects"]}
    assert listed == {object_key(database_url, kept), bob_backup_key}
    token_keys = settings.jwt_keys_file
    assert token_keys is not None
    assert manifest["keys"]["token"]["sha256"] == hashlib.sha256(token_keys.read_bytes()).hexdigest()
    # Fingerprints, never the keys.
    private_parts = [key["d"] for key in json.loads(token_keys.read_text())["keys"]]
    assert not any(part in (backup / "manifest.json").read_text() for part in private_parts)

    # After the backup: one bundle of Bob's handed out, and an attachment uploaded.
    with original.client() as client:
        spent = claim(client, alice, bob)
        assert spent["one_time_prekey"]["key_id"] == 1 and spent["pq_prekey"]["key_id"] == 1
        lost = upload(client, alice, conversation_id, os.urandom(2000))
        lost_key = object_key(database_url, lost)
        back_up(client, alice, os.urandom(1000))
        lost_backup_key = backup_key(database_url, alice)
    original.stop()

    refused = veil(settings, bucket, database_url, "restore", str(backup))
    assert problem(refused).startswith("veil: the database is not empty")
    # Doctor cannot mistake a database that was never restored for one that lost every row.
    unrestored = new_database()
    assert "has no Veil tables" in problem(veil(settings, bucket, unrestored, "doctor", "--fix"))
    ok(veil(settings, bucket, unrestored, "migrate", "up"))
    assert "refers to no object" in problem(veil(settings, bucket, unrestored, "doctor", "--fix"))
    assert s3_client(settings).list_objects_v2(Bucket=bucket)["KeyCount"] == 4

    empty_database_url = new_database()

    retired = "6 one-time prekeys and 4 ML-KEM one-time prekeys of 2 devices retired"
    assert retired in ok(veil(settings, bucket, empty_database_url, "restore", str(backup)))
    # Restoring again over it takes --force, and replaces what it holds.
    assert retired in ok(veil(settings, bucket, empty_database_url, "restore", "--force", str(backup)))

    restored = start_server(
        settings,
        empty_database_url,
        certificates,
        log_file=tmp_path / "restored.log",
        extra_env={"S3_BUCKET": bucket, **LIMITS},
    )
    try:
        with restored.client() as client:
            # Users sign in with their passwords and read the history of the backup.
            assert login(client, alice_email, PASSWORD)["user_id"] == alice["user_id"]
            reader = login(client, bob_email, PASSWORD)
            assert history(client, reader, conversation_id) == sent
            download = client.get(f"/v1/attachments/{kept}", headers=bearer(reader))
            assert httpx.get(download.json()["download"]["url"], timeout=10).content == kept_file
            # Bob's encrypted backup is there too; Alice's was made after the backup.
            restored_backup = client.get("/v1/backup", headers=bearer(reader))
            assert httpx.get(restored_backup.json()["download"]["url"], timeout=10).content == kept_backup
            assert client.get("/v1/backup", headers=bearer(alice)).status_code == 404

            # No prekey on offer at the backup is handed out again: claims fall back to the signed
            # prekey and the last-resort ML-KEM key, and Bob's device is told to upload more ...
            again, told = asyncio.run(claim_while_listening(restored, alice, bob))
            assert again["one_time_prekey"] is None
            assert again["pq_prekey"]["last_resort"] is True
            assert told == {"type": "prekeys_low", "one_time_prekeys": 0}
            assert client.get("/v1/keys/count", headers=bearer(bob)).json() == {
                "one_time_prekeys": 0,
                "pq_one_time_prekeys": 0,
            }
            # ... until the device uploads new ones; replaying the old upload puts none back.
            top_up = {"one_time_prekeys": [spent["one_time_prekey"], *one_time_prekeys(2, 100)]}
            assert client.post("/v1/keys/one-time", json=top_up, headers=bearer(bob)).json()["count"] == 2
            assert claim(client, alice, bob)["one_time_prekey"]["key_id"] == 100

        # Doctor: the objects uploaded after the backup have no row; remove kept objects too.
        kept_key = object_key(empty_database_url, kept)
        s3_client(settings).delete_object(Bucket=bucket, Key=kept_key)
        s3_client(settings).delete_object(Bucket=bucket, Key=bob_backup_key)
        found = veil(settings, bucket, empty_database_url, "doctor", "--json")
        assert found.returncode == 1, found.stderr
        findings = json.loads(found.stdout)
        assert {o["key"] for o in findings["objects_without_rows"]} == {lost_key, lost_backup_key}
        assert [r["attachment_id"] for r in findings["rows_without_objects"]] == [kept]
        assert [b["object_key"] for b in findings["backups_without_objects"]] == [bob_backup_key]

        ok(veil(settings, bucket, empty_database_url, "doctor", "--fix"))
        assert "0 with a row" in ok(veil(settings, bucket, empty_database_url, "doctor"))
        assert s3_client(settings).list_objects_v2(Bucket=bucket).get("KeyCount") == 0
        with restored.client() as client:
            assert client.get(f"/v1/attachments/{kept}", headers=bearer(reader)).status_code == 404
            assert client.get("/v1/backup", headers=bearer(reader)).status_code == 404
    finally:
        restored.stop()


async def claim_while_listening(
    server: LiveServer, claimer: dict[str, Any], owner: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A claim of the owner's bundle, and what the owner's socket hears of it."""
    async with ws_connect(server, owner) as ws:
        await registered(ws)
        with server.client() as client:
            claimed = claim(client, claimer, owner)
        return claimed, await next_frame(ws, "prekeys_low")
