"""Purging erased accounts once their grace window is over, and expired export archives.

Run by the maintenance round. Accounts go in batches, each in one transaction: every row that
refers to the user is removed and a tombstone without any identifier is left. Objects in the store
(attachments, backups, export archives) lose their owner in that transaction and are deleted by the sweeps
that follow, objects first and rows after, like every removal of stored bytes.
"""

from __future__ import annotations

from datetime import datetime

from veil.account import store
from veil.auth import lockout
from veil.auth.signup import signup_mail_key
from veil.core import outbox
from veil.core.blobstore import BlobStore
from veil.core.db import Connection, Database
from veil.core.security.ratelimit import limiter_key, messaging_budget_key
from veil.core.sweep import sweep_objects

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
                    limiter_key("groups", str(account.id)),
                    limiter_key("invitations", str(account.id)),
                    lockout.account_key(account.email),
                    signup_mail_key(account.email),
                    limiter_key("password-change", str(account.id)),
                    limiter_key("password-reset", account.email),
                    limiter_key("backups", str(account.id)),
                ]
                await store.purge_account(conn, account.id, keys)
                # Mail still queued for the address (a notice during the grace window) goes too.
                await outbox.purge_recipient(conn, account.email)
                await store.insert_tombstone(conn, account.disabled_at, now)
        purged += len(due)
        if len(due) < _BATCH:
            return purged


async def sweep_export_archives(db: Database, blobs: BlobStore, now: datetime) -> int:
    """Archives whose download window is over, whose owner is gone, or that nobody built in time."""

    async def claim(conn: Connection, limit: int) -> list[str]:
        return await store.lock_expired_archives(conn, now, limit)

    return await sweep_objects(db, blobs, "export_archive_sweep", claim, store.delete_archives)
