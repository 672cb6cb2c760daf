"""SQL for backup records. No HTTP, no object-store calls.

"Unlinking" a row sets its `user_id` to NULL: the user no longer has it, and what is left of it is
an object key waiting for its object to be deleted (see the migration, 0020_backups.sql).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from veil.core.db import Connection

_BACKUP = "object_key, user_id, state, size, sha256, reserved_at, expires_at, created_at"


@dataclass(frozen=True)
class BackupRecord:
    object_key: str
    user_id: uuid.UUID | None
    state: str  # 'pending' or 'current'
    size: int
    sha256: bytes
    reserved_at: datetime
    expires_at: datetime | None
    created_at: datetime | None


@dataclass(frozen=True)
class Unlinked:
    """Rows a user no longer has, by what may still happen to their keys."""

    # Nothing can write to these any more: object and row may go at once.
    finished: list[str]
    # Their upload URL may still be used: the object goes now, the row when it expires.
    pending: list[str]

    @property
    def object_keys(self) -> list[str]:
        return [*self.finished, *self.pending]


def _record(row: asyncpg.Record) -> BackupRecord:
    return BackupRecord(*(row[name] for name in _BACKUP.split(", ")))


async def lock_user(conn: Connection, user_id: uuid.UUID) -> None:
    """Serialise one user's reservations, completions and deletions."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('backups:' || $1::uuid::text, 0))", user_id
    )


async def insert(conn: Connection, record: BackupRecord) -> None:
    await conn.execute(
        f"INSERT INTO backups ({_BACKUP}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",  # noqa: S608 - constant columns
        record.object_key,
        record.user_id,
        record.state,
        record.size,
        record.sha256,
        record.reserved_at,
        record.expires_at,
        record.created_at,
    )


async def pending(conn: Connection, user_id: uuid.UUID, now: datetime) -> BackupRecord | None:
    """The user's upload reservation, unless it has expired."""
    row = await conn.fetchrow(
        f"""SELECT {_BACKUP} FROM backups
            WHERE user_id = $1 AND state = 'pending' AND expires_at > $2""",  # noqa: S608 - constant columns
        user_id,
        now,
    )
    return None if row is None else _record(row)


async def current(conn: Connection, user_id: uuid.UUID) -> BackupRecord | None:
    row = await conn.fetchrow(
        f"SELECT {_BACKUP} FROM backups WHERE user_id = $1 AND state = 'current'",  # noqa: S608 - constant columns
        user_id,
    )
    return None if row is None else _record(row)


async def unlink(conn: Connection, user_id: uuid.UUID, states: tuple[str, ...]) -> Unlinked:
    """Take the user's rows in these states away from them."""
    rows = await conn.fetch(
        """UPDATE backups SET user_id = NULL
           WHERE user_id = $1 AND state = ANY($2::text[])
           RETURNING object_key, state""",
        user_id,
        list(states),
    )
    return Unlinked(
        finished=[row["object_key"] for row in rows if row["state"] == "current"],
        pending=[row["object_key"] for row in rows if row["state"] == "pending"],
    )


async def promote(conn: Connection, user_id: uuid.UUID, object_key: str, now: datetime) -> bool:
    """Make the user's live reservation under `object_key` their current backup; False if it was
    replaced or expired meanwhile. The previous current one must have been unlinked first."""
    status = await conn.execute(
        """UPDATE backups SET state = 'current', created_at = $3, expires_at = NULL
           WHERE object_key = $2 AND user_id = $1 AND state = 'pending' AND expires_at > $3""",
        user_id,
        object_key,
        now,
    )
    return bool(status == "UPDATE 1")


async def lock_doomed(
    conn: Connection, now: datetime, limit: int, among: list[str] | None = None
) -> list[str]:
    """Rows due for removal (objects first): expired reservations, and unlinked backups that were
    complete. `among` restricts the search to these keys. Rows another process holds are skipped."""
    rows = await conn.fetch(
        """SELECT object_key FROM backups
           WHERE ((state = 'pending' AND expires_at <= $1) OR (state = 'current' AND user_id IS NULL))
             AND ($3::text[] IS NULL OR object_key = ANY($3::text[]))
           ORDER BY object_key
           LIMIT $2
           FOR UPDATE SKIP LOCKED""",
        now,
        limit,
        among,
    )
    return [row["object_key"] for row in rows]


async def delete_by_keys(conn: Connection, object_keys: list[str]) -> None:
    await conn.execute("DELETE FROM backups WHERE object_key = ANY($1::text[])", object_keys)
