"""Periodic housekeeping every process offers and one process at a time performs.

Each round runs in one transaction behind `pg_try_advisory_xact_lock`: whichever process gets the
lock does the work, the others skip that round. The round ends sessions whose 30 days are over
(which, through the `end_device` trigger, removes their keys and mailboxes), drops expired device
messages into gap markers, and forgets rate-limiter keys and WebSocket tickets that carry no
information any more, as well as sign-ups never confirmed, spent invites and expired known-device
tokens and password resets, and applies the retention periods (`veil.retention`). The process that did
the round then purges accounts whose erasure grace window is over, and sweeps attachments
(reservations never completed, attachments whose owner or conversation is gone or whose retention
is over), backups (reservations never completed, backups replaced, deleted or whose user is gone)
and expired export archives, in transactions of their own because that work waits on the
object store. This is the one scheduled job for housekeeping and retention; it logs counts only.

Every process also counts, every `_QUEUE_SECONDS`, the queues other processes drain (device
messages, export jobs), in one query, for the queue gauges; each task's runs and failures
are counted too (docs/operations.md, "Metrics").
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from typing import TypeVar

from veil.account.purge import purge_due_accounts, sweep_export_archives
from veil.auth import recovery_store, signup_store
from veil.backups import service as backups_service
from veil.core.blobstore import BlobStore
from veil.core.clock import Clock
from veil.core.db import Connection, Database
from veil.core.logging import get_logger
from veil.core.metrics import Metrics
from veil.core.problems import BackendUnavailable
from veil.core.security.sessions import notify_revoked
from veil.core.web.app import ServiceModule
from veil.core.worker import Worker
from veil.files import service as files_service
from veil.keys import store as keys_store
from veil.retention import RetentionPolicy, apply_retention

log = get_logger(__name__)

_LOCK_ID = 0x7E11_0002
# How often each process re-counts the queues: one query, so a scrape every 15 s sees fresh values.
_QUEUE_SECONDS = 15.0

T = TypeVar("T")


class Maintenance:
    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        clock: Clock,
        retention: RetentionPolicy = RetentionPolicy.DEFAULT,
        interval_seconds: float = 60.0,
        metrics: Metrics | None = None,
    ) -> None:
        self._db = db
        self._blobs = blobs
        self._clock = clock
        self._retention = retention
        self._metrics = metrics or Metrics()
        self._worker = Worker("maintenance", self._round, interval_seconds)
        self._queues = Worker("queue-depths", self.count_queues, _QUEUE_SECONDS)

    async def start(self) -> None:
        self._worker.start(idle_first=True)
        self._queues.start()

    async def close(self) -> None:
        await self._queues.close()
        await self._worker.close()

    async def count_queues(self) -> bool:
        """Set the queue gauges from one query; False (the worker then waits its interval)."""
        async with self._db.connection() as conn:
            depths = await _queue_depths(conn)
        self._metrics.device_messages_queued.set(depths["device_messages"])
        self._metrics.export_jobs_queued.set(depths["export_jobs"])
        self._metrics.export_jobs_oldest.set(max(0.0, float(depths["export_oldest"])))
        return False

    async def _task(self, name: str, work: Callable[[], Awaitable[T]]) -> T:
        """Run one task, counting it as done, skipped (it returned None) or failed (re-raised)."""
        task = self._metrics.maintenance[name]
        try:
            result = await work()
        except Exception:
            task.failed.inc()
            raise
        if result is None:
            task.skipped.inc()
        else:
            task.ok.inc()
            task.last_success.set(time.time())
        return result

    async def _round(self) -> bool:
        await self.run_once()
        return False  # one round per interval

    async def run_once(self) -> dict[str, int] | None:
        """One round; None if another process holds the lock."""
        now = self._clock.now()
        counts = await self._task("housekeeping", lambda: self._housekeeping(now))
        if counts is None:
            return None
        counts |= {
            "accounts_purged": await self._task("account_purge", lambda: purge_due_accounts(self._db, now)),
            "attachments_removed": await self._store_sweep(
                "attachment_sweep",
                lambda: files_service.sweep(self._db, self._blobs, now, self._retention.attachments),
            ),
            "backups_removed": await self._store_sweep(
                "backup_sweep", lambda: backups_service.sweep(self._db, self._blobs, now)
            ),
            "export_archives_removed": await self._store_sweep(
                "export_archive_sweep", lambda: sweep_export_archives(self._db, self._blobs, now)
            ),
        }
        log.info("maintenance_done", **counts)
        return counts

    async def _housekeeping(self, now: datetime) -> dict[str, int] | None:
        """The locked round's transaction; None if another process has the lock."""
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
        return {
            "sessions_expired": len(expired),
            "devices_with_expired_messages": devices_with_drops,
            "limiter_rows_dropped": int(limiter.split()[-1]),
            "ws_passes_dropped": int(tickets.split()[-1]),
            "signups_expired": signups,
            "invites_dropped": invites,
            "device_tokens_expired": device_tokens,
            "password_resets_expired": resets,
            **retained,
        }

    async def _store_sweep(self, name: str, sweep: Callable[[], Coroutine[None, None, int]]) -> int:
        try:
            return await self._task(name, sweep)
        except BackendUnavailable as exc:  # the next round tries again
            log.warning("store_sweep_skipped", reason=str(exc))
            return 0


async def _queue_depths(conn: Connection) -> dict[str, float]:
    row = await conn.fetchrow(
        """SELECT (SELECT count(*) FROM device_messages) AS device_messages,
                  count(*) AS export_jobs,
                  coalesce(extract(epoch FROM clock_timestamp() - min(created_at)), 0) AS export_oldest
           FROM export_archives WHERE state = 'building' AND user_id IS NOT NULL"""
    )
    assert row is not None
    return {name: float(value) for name, value in row.items()}


# Runs in every process that serves anything; the advisory lock keeps it to one at a time.
MODULE = ServiceModule(
    "maintenance",
    [],
    build=lambda resources: Maintenance(
        resources.db,
        resources.blobs,
        resources.clock,
        RetentionPolicy.from_settings(resources.settings),
        metrics=resources.metrics,
    ),
)
