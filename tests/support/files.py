"""Attachments over the public API, and the object store as clients see it (presigned URLs)."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

import boto3
import httpx
from mypy_boto3_s3 import S3Client

from tests.support.keys import b64
from tests.support.users import bearer
from veil.core.blobstore import BlobStore
from veil.core.clock import FakeClock
from veil.core.config import Settings
from veil.core.db import Database
from veil.core.metrics import Metrics
from veil.maintenance import Maintenance


def reserve(
    client: httpx.Client, who: dict[str, Any], conversation_id: str, body: bytes, /, **overrides: Any
) -> httpx.Response:
    request = {
        "conversation_id": conversation_id,
        "size": len(body),
        "sha256": b64(hashlib.sha256(body).digest()),
        **overrides,
    }
    return client.post("/v1/attachments", json=request, headers=bearer(who))


def put_to_store(upload: dict[str, Any], body: bytes, **header_overrides: str) -> httpx.Response:
    """The client's PUT straight to the object store, with the headers the server listed."""
    assert upload["method"] == "PUT"
    headers = {**upload["headers"], **header_overrides}
    return httpx.put(upload["url"], content=body, headers=headers, timeout=30)


def upload(client: httpx.Client, who: dict[str, Any], conversation_id: str, body: bytes) -> str:
    """Reserve, upload and complete; the attachment id."""
    reserved = reserve(client, who, conversation_id, body)
    assert reserved.status_code == 201, reserved.text
    stored = put_to_store(reserved.json()["upload"], body)
    assert stored.status_code == 200, stored.text
    attachment_id: str = reserved.json()["attachment_id"]
    completed = client.post(f"/v1/attachments/{attachment_id}/complete", headers=bearer(who))
    assert completed.status_code == 200, completed.text
    return attachment_id


def reserve_backup(
    client: httpx.Client, who: dict[str, Any], body: bytes, **overrides: Any
) -> httpx.Response:
    request = {"size": len(body), "sha256": b64(hashlib.sha256(body).digest()), **overrides}
    return client.put("/v1/backup", json=request, headers=bearer(who))


def back_up(client: httpx.Client, who: dict[str, Any], body: bytes) -> dict[str, Any]:
    """Reserve, upload and complete the user's encrypted backup; its view `{size, sha256, created_at}`."""
    reserved = reserve_backup(client, who, body)
    assert reserved.status_code == 201, reserved.text
    assert put_to_store(reserved.json()["upload"], body).status_code == 200
    completed = client.post("/v1/backup/complete", headers=bearer(who))
    assert completed.status_code == 200, completed.text
    view: dict[str, Any] = completed.json()
    return view


def direct(client: httpx.Client, a: dict[str, Any], b: dict[str, Any]) -> str:
    created = client.post(
        "/v1/conversations", json={"type": "direct", "member_id": b["user_id"]}, headers=bearer(a)
    )
    assert created.status_code in (200, 201), created.text
    conversation_id: str = created.json()["conversation_id"]
    return conversation_id


def s3_client(settings: Settings) -> S3Client:
    """The test stack's S3 server with the server's own credentials (what an insider could read)."""
    assert settings.s3_access_key and settings.s3_secret_key
    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint,
        aws_access_key_id=settings.s3_access_key.get_secret_value(),
        aws_secret_access_key=settings.s3_secret_key.get_secret_value(),
        region_name=settings.s3_region,
    )


async def maintenance_round_at(database_url: str, blobs: BlobStore, at: datetime) -> dict[str, int]:
    """One maintenance round (sweeps of attachments, backups and archives included) as of `at`."""
    db = Database(database_url, max_size=2, timeout=5, metrics=Metrics())
    await db.open()
    try:
        counts = await Maintenance(db, blobs, FakeClock(at)).run_once()
    finally:
        await db.close()
    assert counts is not None
    return counts
