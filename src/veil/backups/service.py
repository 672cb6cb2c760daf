"""Backup slot use cases: reserve an upload, complete it, hand out the download, delete, sweep.

Each user has at most one current backup and one pending upload. A reservation always gets a fresh
random object key, so the current backup is never written over: it stays downloadable until a new
upload has been checked with the store and takes its place, and a failed or abandoned upload loses
nothing. Backup bytes never pass through here: the PUT is presigned with the exact length and
SHA-256, which the store enforces, and completion asks the store what it holds.

Rows are taken from the user (unlinked) in the transaction that changes their slot, and their
objects deleted after it commits; whatever the store does not delete then, the maintenance sweep
deletes later (objects first, then rows, veil.core.sweep). So a store failure can delay the removal
of a replaced or deleted backup by a round, but never cost the user the backup they still have.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from veil.backups import store
from veil.backups.store import BackupRecord, Unlinked
from veil.core.blobstore import BlobStore
from veil.core.clock import Clock
from veil.core.db import Connection, Database
from veil.core.logging import get_logger
from veil.core.problems import BackendUnavailable, Problem, not_found, too_many_requests
from veil.core.security.authn import Principal
from veil.core.security.ratelimit import Rate, RateLimiter, limiter_key
from veil.core.sweep import sweep_objects

log = get_logger(__name__)


@dataclass(frozen=True)
class BackupLimits:
    max_bytes: int
    # Reservations per user: each one may be a `max_bytes` upload.
    reservations: Rate
    upload_url_ttl: int
    # How long a reservation may be completed: the upload URL's life plus time for a slow upload.
    reservation_ttl: int
    download_url_ttl: int


@dataclass(frozen=True)
class Upload:
    url: str
    headers: dict[str, str]
    expires_at: datetime


@dataclass(frozen=True)
class Download:
    backup: BackupRecord
    url: str
    expires_at: datetime


def backup_budget_key(user_id: object) -> str:
    return limiter_key("backups", str(user_id))


def _new_object_key() -> str:
    """256 random bits, nothing else: no user id in the store."""
    return secrets.token_urlsafe(32)


class BackupService:
    def __init__(
        self, db: Database, blobs: BlobStore, clock: Clock, limiter: RateLimiter, limits: BackupLimits
    ) -> None:
        self._db = db
        self._blobs = blobs
        self._clock = clock
        self._limiter = limiter
        self._limits = limits

    async def reserve(self, principal: Principal, size: int, sha256: bytes) -> Upload:
        """A fresh pending upload for the caller; an earlier pending one is dropped (its object
        deleted), the current backup is left alone."""
        limits = self._limits
        if size > limits.max_bytes:
            raise Problem(413, f"A backup may be at most {limits.max_bytes} bytes.")
        # Refuse while the store is down rather than record a reservation nobody can upload to (and
        # before the budget is charged: the outage is not the user's doing).
        await self._blobs.ensure_reachable()
        now = self._clock.now()
        verdict = await self._limiter.hit(
            backup_budget_key(principal.user_id), limits.reservations, now.timestamp()
        )
        if not verdict.allowed:
            raise too_many_requests(verdict.retry_after_seconds)
        record = BackupRecord(
            object_key=_new_object_key(),
            user_id=principal.user_id,
            state="pending",
            size=size,
            sha256=sha256,
            reserved_at=now,
            expires_at=now + timedelta(seconds=limits.reservation_ttl),
            created_at=None,
        )
        async with self._db.transaction("backups_reserve") as conn:
            await store.lock_user(conn, principal.user_id)
            replaced = await store.unlink(conn, principal.user_id, ("pending",))
            await store.insert(conn, record)
        await self._remove(replaced, now)
        presigned = self._blobs.presign_put(record.object_key, size, sha256, limits.upload_url_ttl)
        return Upload(presigned.url, presigned.headers, now + timedelta(seconds=limits.upload_url_ttl))

    async def complete(self, principal: Principal) -> BackupRecord:
        """Check with the store that the pending object is exactly what was reserved, then make it
        the current backup and remove the previous one."""
        now = self._clock.now()
        async with self._db.connection() as conn:
            pending = await store.pending(conn, principal.user_id, now)
        if pending is None:
            raise not_found("No backup upload is pending: reserve one with PUT /v1/backup first.")
        stored = await self._blobs.stat(pending.object_key)
        if stored is None:
            raise Problem(422, "Nothing has been uploaded for the pending backup yet.", slug="upload-missing")
        if stored.size != pending.size or stored.sha256 != pending.sha256:
            # Only something other than the presigned PUT can have written it.
            await self._blobs.delete([pending.object_key])
            raise Problem(
                422,
                "The uploaded object does not match the reserved size and SHA-256; it was deleted.",
                slug="upload-mismatch",
            )
        async with self._db.transaction("backups_complete") as conn:
            await store.lock_user(conn, principal.user_id)
            replaced = await store.unlink(conn, principal.user_id, ("current",))
            if not await store.promote(conn, principal.user_id, pending.object_key, now):
                raise not_found("The pending backup upload was replaced or has expired.")
        await self._remove(replaced, now)
        return BackupRecord(
            object_key=pending.object_key,
            user_id=principal.user_id,
            state="current",
            size=pending.size,
            sha256=pending.sha256,
            reserved_at=pending.reserved_at,
            expires_at=None,
            created_at=now,
        )

    async def download(self, principal: Principal) -> Download:
        """A short-lived GET of the caller's current backup."""
        now = self._clock.now()
        async with self._db.connection() as conn:
            backup = await store.current(conn, principal.user_id)
        if backup is None:
            raise not_found("You have no backup.")
        ttl = self._limits.download_url_ttl
        url = self._blobs.presign_get(backup.object_key, ttl)
        return Download(backup, url, now + timedelta(seconds=ttl))

    async def delete(self, principal: Principal) -> None:
        """The current backup and any pending upload, objects and rows; nothing to delete is fine."""
        now = self._clock.now()
        async with self._db.transaction("backups_delete") as conn:
            await store.lock_user(conn, principal.user_id)
            unlinked = await store.unlink(conn, principal.user_id, ("pending", "current"))
        await self._remove(unlinked, now)

    async def _remove(self, unlinked: Unlinked, now: datetime) -> None:
        """Delete the objects of rows just unlinked, and the rows nothing can write to any more. A
        pending row stays until it expires, so an upload still under way through its URL is swept.
        If the store fails, the maintenance sweep removes them later."""
        if not unlinked.object_keys:
            return
        try:
            if unlinked.pending:
                await self._blobs.delete(unlinked.pending)
            if unlinked.finished:

                async def claim(conn: Connection, limit: int) -> list[str]:
                    return await store.lock_doomed(conn, now, limit, among=unlinked.finished)

                await sweep_objects(self._db, self._blobs, "backups_remove", claim, store.delete_by_keys)
        except BackendUnavailable as exc:
            log.warning("backup_removal_deferred", count=len(unlinked.object_keys), reason=str(exc))


async def sweep(db: Database, blobs: BlobStore, now: datetime) -> int:
    """Remove reservations past their time and backups no user has any more (replaced, deleted,
    or their user purged) whose removal did not finish, objects first. How many were removed."""

    async def claim(conn: Connection, limit: int) -> list[str]:
        return await store.lock_doomed(conn, now, limit)

    return await sweep_objects(db, blobs, "backups_sweep", claim, store.delete_by_keys)
