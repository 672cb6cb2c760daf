"""Building export archives in the background.

A confirmed export request queues a job (`export_archives`, state `building`). Every process that
serves the account API runs one builder; a builder claims the oldest job with SKIP LOCKED, reads
the user's data, writes the archive to the object store under the job's random key and marks the
job ready, all in one transaction: a builder that dies mid-way leaves the job to another.

Queuing a job notifies `EXPORT_CHANNEL` in the same transaction, so every builder hears of it when
it commits and one of them starts at once. A slow round remains for what wakes nobody: a job whose
builder died mid-way (its rollback notifies no one); and a builder whose listener was down looks
when the listener is back.
"""

from __future__ import annotations

from datetime import timedelta

from veil.account import archive, store
from veil.core.blobstore import BlobStore
from veil.core.clock import Clock
from veil.core.db import Database
from veil.core.listener import Notifications
from veil.core.logging import get_logger
from veil.core.worker import Worker

log = get_logger(__name__)

EXPORT_CHANNEL = store.EXPORT_CHANNEL
_IDLE_SECONDS = 60.0


class ExportBuilder:
    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        clock: Clock,
        archive_ttl: timedelta,
        notifications: Notifications,
        idle_seconds: float = _IDLE_SECONDS,
    ) -> None:
        self._db = db
        self._blobs = blobs
        self._clock = clock
        # How long a built archive stays downloadable (its URLs live shorter; see AccountService).
        self._archive_ttl = archive_ttl
        self._worker = Worker("export-builder", self.build_next, idle_seconds)
        self._notifications = notifications

    async def start(self) -> None:
        await self._notifications.subscribe(
            [EXPORT_CHANNEL], lambda _channel, _payload: self._worker.wake(), on_up=self._worker.wake
        )
        self._worker.start()

    async def close(self) -> None:
        await self._worker.close()

    async def build_next(self) -> bool:
        """Build one queued archive; False if there was none to build."""
        now = self._clock.now()
        async with self._db.transaction("export_build") as conn:
            job = await store.claim_export(conn, now)
            if job is None or job.user_id is None:
                return False
            account = await store.account(conn, job.user_id)
            if account is None:
                return False
            document = archive.build(account, await store.export_sections(conn, account.id), now)
            await self._blobs.put(job.object_key, document)
            await store.mark_export_ready(conn, job.object_key, now, now + self._archive_ttl)
        log.info("export_built", bytes=len(document))
        return True
