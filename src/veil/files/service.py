"""Attachment use cases: reserve an upload, complete it, hand out downloads, delete, sweep.

File bytes never pass through here. A reservation returns a PUT presigned with the exact length and
SHA-256, which the object store enforces; completion asks the store what it holds. Objects are
always deleted before their rows, so a failure in between leaves a row that the sweep (or a retry)
finishes, never an object nobody can find.
"""

from __future__ import annotations

import math
import secrets
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from veil.core.blobstore import BlobStore
from veil.core.clock import Clock
from veil.core.db import Connection, Database
from veil.core.logging import get_logger
from veil.core.problems import Problem, conflict, forbidden, not_found
from veil.core.security.authn import Principal
from veil.core.sweep import sweep_objects
from veil.files import store
from veil.files.store import AttachmentRecord

log = get_logger(__name__)


@dataclass(frozen=True)
class AttachmentLimits:
    max_bytes: int
    quota_bytes: int
    pending_max: int
    upload_url_ttl: int
    reservation_ttl: int
    download_url_ttl: int


@dataclass(frozen=True)
class Upload:
    attachment_id: uuid.UUID
    url: str
    headers: dict[str, str]
    expires_at: datetime


@dataclass(frozen=True)
class Download:
    attachment: AttachmentRecord
    url: str
    expires_at: datetime


def new_object_key() -> str:
    """256 random bits, nothing else: no user, conversation or file name in the store."""
    return secrets.token_urlsafe(32)


def _quota_exceeded(detail: str, retry_after: float) -> Problem:
    wait = str(max(1, math.ceil(retry_after)))
    return Problem(429, detail, slug="quota-exceeded", title="Quota exceeded", headers={"Retry-After": wait})


class AttachmentService:
    def __init__(self, db: Database, blobs: BlobStore, clock: Clock, limits: AttachmentLimits) -> None:
        self._db = db
        self._blobs = blobs
        self._clock = clock
        self._limits = limits

    async def reserve(
        self, principal: Principal, conversation_id: uuid.UUID, size: int, sha256: bytes
    ) -> Upload:
        limits = self._limits
        if size > limits.max_bytes:
            raise Problem(413, f"An attachment may be at most {limits.max_bytes} bytes.")
        # Refuse while the store is down rather than record a reservation nobody can upload to
        # (a reservation made in the seconds before an outage is noticed is swept when it expires).
        await self._blobs.ensure_reachable()
        now = self._clock.now()
        record = AttachmentRecord(
            id=uuid.uuid4(),
            owner_id=principal.user_id,
            conversation_id=conversation_id,
            object_key=new_object_key(),
            size=size,
            sha256=sha256,
            state="pending",
            created_at=now,
            expires_at=now + timedelta(seconds=limits.reservation_ttl),
            completed_at=None,
        )
        async with self._db.transaction("attachments_reserve") as conn:
            if not await store.is_joined(conn, conversation_id, principal.user_id):
                raise not_found("No such conversation.")
            await store.lock_owner(conn, principal.user_id)
            usage = await store.usage(conn, principal.user_id, now)
            wait = (usage.next_expiry - now).total_seconds() if usage.next_expiry else limits.reservation_ttl
            if usage.pending >= limits.pending_max:
                raise _quota_exceeded(
                    f"At most {limits.pending_max} uploads may be unfinished at once; complete one first.",
                    wait,
                )
            if usage.bytes + size > limits.quota_bytes:
                raise _quota_exceeded(
                    f"Storage quota of {limits.quota_bytes} bytes reached; delete attachments to make room.",
                    wait,
                )
            await store.insert(conn, record)
        presigned = self._blobs.presign_put(record.object_key, size, sha256, limits.upload_url_ttl)
        return Upload(
            record.id, presigned.url, presigned.headers, now + timedelta(seconds=limits.upload_url_ttl)
        )

    async def complete(self, principal: Principal, attachment_id: uuid.UUID) -> AttachmentRecord:
        """Check with the store that the object is exactly what was reserved, then mark it
        complete. Idempotent: completing a completed attachment returns it again."""
        now = self._clock.now()
        async with self._db.connection() as conn:
            seen = await store.sighting(conn, attachment_id, principal.user_id, now)
        attachment = self._owned(seen)
        if attachment.state == "complete":
            return attachment
        stored = await self._blobs.stat(attachment.object_key)
        if stored is None:
            raise conflict("Nothing has been uploaded for this attachment yet.")
        if stored.size != attachment.size or stored.sha256 != attachment.sha256:
            await self._blobs.delete([attachment.object_key])
            raise Problem(
                422,
                "The uploaded object does not match the reserved size and SHA-256; it was deleted.",
                slug="upload-mismatch",
            )
        async with self._db.transaction("attachments_complete") as conn:
            if not await store.mark_complete(conn, attachment_id, now):
                raise not_found("The reservation expired or the attachment was deleted.")
        return replace(attachment, state="complete", expires_at=None, completed_at=now)

    async def download(self, principal: Principal, attachment_id: uuid.UUID) -> Download:
        """A short-lived GET for members of the attachment's conversation."""
        now = self._clock.now()
        async with self._db.connection() as conn:
            seen = await store.sighting(conn, attachment_id, principal.user_id, now)
        if seen is None or not seen.member:
            raise not_found("No such attachment.")
        if seen.attachment.state != "complete":
            if not seen.owned:
                raise not_found("No such attachment.")
            raise conflict("The upload has not been completed.")
        ttl = self._limits.download_url_ttl
        url = self._blobs.presign_get(seen.attachment.object_key, ttl)
        return Download(seen.attachment, url, now + timedelta(seconds=ttl))

    async def delete(self, principal: Principal, attachment_id: uuid.UUID) -> None:
        """Owner only: the object goes first, then the row (in one transaction holding the row)."""
        now = self._clock.now()
        async with self._db.transaction("attachments_delete") as conn:
            seen = await store.sighting(conn, attachment_id, principal.user_id, now)
            self._owned(seen)
            object_key = await store.lock_for_removal(conn, attachment_id)
            if object_key is None:
                raise not_found("No such attachment.")
            await self._blobs.delete([object_key])
            await store.delete(conn, attachment_id)

    @staticmethod
    def _owned(seen: store.Sighting | None) -> AttachmentRecord:
        """The attachment if the caller owns it. Others get 404, or 403 when they can see it."""
        if seen is None or not (seen.owned or (seen.member and seen.attachment.state == "complete")):
            raise not_found("No such attachment.")
        if not seen.owned:
            raise forbidden("Only the uploader may do this.")
        return seen.attachment


async def sweep(db: Database, blobs: BlobStore, now: datetime, retention: timedelta) -> int:
    """Remove reservations never completed in time, attachments whose owner or conversation is
    gone and attachments older than `retention`, objects first. Returns how many were removed."""

    async def claim(conn: Connection, limit: int) -> list[str]:
        return await store.lock_doomed(conn, now, now - retention, limit)

    return await sweep_objects(db, blobs, "attachments_sweep", claim, store.delete_by_keys)
