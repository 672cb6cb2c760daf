"""Purging erased accounts once their grace window is over, and expired export archives.

Run by the maintenance round. Accounts go in batches, each in one transaction: every row that
refers to the user is removed and a tombstone without any identifier is left. Objects in the store
(attachments, export archives) lose their owner in that transaction and are deleted by the sweeps
that follow, objects first and rows after, like every removal of stored bytes.
"""

from __future__ import annotations

from datetime import datetime

from veil.account import store
from veil.core.blobstore import BlobStore
from veil.core.db import Database
from veil.core.security.ratelimit import limiter_key, messaging_budget_key

_BATCH = 20


async def purge_due_accounts(db: Database, now: datetime) -> int:
    purged = 0
    while True:
        async with db.transaction("account_purge") as conn:
            due = await store.lock_due_for_purge(conn, now, _BATCH)
            for account in due:
                keys = [
                    messaging_budget_key(account.id),
                    limiter_key("account-requests", str(account.id)),
                    limiter_key("login-failures", account.email),
                ]
                await store.purge_account(conn, account.id, keys)
                await store.insert_tombstone(conn, account.disabled_at, now)
        purged += len(due)
        if len(due) < _BATCH:
            return purged


async def sweep_export_archives(db: Database, blobs: BlobStore, now: datetime) -> int:
    removed = 0
    while True:
        async with db.transaction("export_archive_sweep") as conn:
            keys = await store.lock_expired_archives(conn, now, 500)
            if keys:
                await blobs.delete(keys)
                await store.delete_archives(conn, keys)
        removed += len(keys)
        if len(keys) < 500:
            return removed
