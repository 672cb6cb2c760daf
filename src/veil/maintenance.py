"""Periodic housekeeping every process offers and one process at a time performs.

Each round runs in one transaction behind `pg_try_advisory_xact_lock`: whichever process gets the
lock does the work, the others skip that round. The round ends sessions whose 30 days are over
(which, through the `end_device` trigger, removes their keys and mailboxes), drops expired device
messages into gap markers, and forgets rate-limiter keys and WebSocket tickets that carry no
information any more, as well as sign-ups never confirmed, spent invites and expired known-device
tokens and password resets, and applies the retention periods (`veil.retention`). The process that did
the round then purges accounts whose erasure grace window is over, and sweeps attachments
(reservations never completed, attachments whose owner or conversation is gone or whose retention
is over) and expired export archives, in transactions of their own because that work waits on the
object store. This is the one scheduled job for housekeeping and retention; it logs counts only.
"""

from __future__ import annotations

from collections.abc import Coroutine

from veil.account.purge import purge_due_accounts, sweep_export_archives
from veil.auth import recovery_store, signup_store
from veil.core.blobstore import BlobStore
from veil.core.clock import Clock
from veil.core.db import Database
from veil.core.logging import get_logger
from veil.core.problems import BackendUnavailable
from veil.core.security.sessions import notify_revoked
from veil.core.web.app import ServiceModule
from veil.core.worker import Worker
from veil.files import service as files_service
from veil.keys import store as keys_store
from veil.retention import RetentionPolicy, apply_retention

log = get_logger(__name__)

_LOCK_ID = 0x7E11_0002


class Maintenance:
    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        clock: Clock,
        retention: RetentionPolicy = RetentionPolicy.DEFAULT,
        interval_seconds: float = 60.0,
    ) -> None:
        self._db = db
        self._blobs = blobs
        self._clock = clock
        self._retention = retention
        self._worker = Worker("maintenance", self._round, interval_seconds)

    async def start(self) -> None:
        self._worker.start(idle_first=True)

    async def close(self) -> None:
        await self._worker.close()

    async def _round(self) -> bool:
        await self.run_once()
        return False  # one round per interval

    async def run_once(self) -> dict[str, int] | None:
        """One round; None if another process holds the lock."""
        now = self._clock.now()
        async with self._db.transaction("maintenance") as conn:
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _LOCK_ID):
                return None
            expired = [
                row["id"]
                for row in await conn.fetch(
                    """UPDATE sessions SET revoked_at = $1, revoke_reason = 'expired'
                       WHERE revoked_at IS NULL AND expires_at <= $1 RETURNING id""",
                    now,
                )
            ]
            await notify_revoked(conn, expired)
            devices_with_drops = await keys_store.expire_queued(conn, None, now)
            limiter = await conn.execute("DELETE FROM rate_limits WHERE tat < $1", now.timestamp())
            tickets = await conn.execute("DELETE FROM ws_tickets WHERE expires_at <= $1", now)
            signups = await signup_store.delete_expired_signups(conn, now)
            invites = await signup_store.delete_spent_invites(conn, now)
            device_tokens = await signup_store.delete_expired_device_tokens(conn, now)
            resets = await recovery_store.delete_expired(conn, now)
            retained = await apply_retention(conn, self._retention, now)
        counts = {
            "sessions_expired": len(expired),
            "devices_with_expired_messages": devices_with_drops,
            "limiter_rows_dropped": int(limiter.split()[-1]),
            "ws_passes_dropped": int(tickets.split()[-1]),
            "signups_expired": signups,
            "invites_dropped": invites,
            "device_tokens_expired": device_tokens,
            "password_resets_expired": resets,
            **retained,
            "accounts_purged": await purge_due_accounts(self._db, now),
            "attachments_removed": await self._store_sweep(
                files_service.sweep(self._db, self._blobs, now, self._retention.attachments)
            ),
            "export_archives_removed": await self._store_sweep(
                sweep_export_archives(self._db, self._blobs, now)
            ),
        }
        log.info("maintenance_done", **counts)
        return counts

    @staticmethod
    async def _store_sweep(sweep: Coroutine[None, None, int]) -> int:
        try:
            return await sweep
        except BackendUnavailable as exc:  # the next round tries again
            log.warning("store_sweep_skipped", reason=str(exc))
            return 0


# Runs in every process that serves anything; the advisory lock keeps it to one at a time.
MODULE = ServiceModule(
    "maintenance",
    [],
    build=lambda resources: Maintenance(
        resources.db, resources.blobs, resources.clock, RetentionPolicy.from_settings(resources.settings)
    ),
)
