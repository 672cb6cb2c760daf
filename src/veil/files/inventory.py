"""SQL for taking stock of the object store: which object keys the database refers to.

Three tables point into the bucket, each row at one object: attachments (the files service),
backups (the backup slot) and export archives (the account service); they share the bucket and the
key format. An object that none refers to belongs to nobody.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from veil.core.db import Connection


@dataclass(frozen=True)
class StoredAttachment:
    """A completed attachment: the store confirmed its object when it was completed."""

    id: uuid.UUID
    object_key: str
    size: int


@dataclass(frozen=True)
class StoredBackup:
    """A user's current backup: the store confirmed its object when it was completed."""

    object_key: str
    size: int


async def referenced_object_keys(conn: Connection) -> set[str]:
    """Every object key a row refers to, whatever its state (a pending reservation or an export
    being built names an object that may appear at any moment)."""
    rows = await conn.fetch(
        """SELECT object_key FROM attachments
           UNION ALL SELECT object_key FROM backups
           UNION ALL SELECT object_key FROM export_archives"""
    )
    return {row["object_key"] for row in rows}


async def completed_attachments(conn: Connection) -> list[StoredAttachment]:
    rows = await conn.fetch(
        "SELECT id, object_key, size FROM attachments WHERE state = 'complete' ORDER BY object_key"
    )
    return [StoredAttachment(**dict(row)) for row in rows]


async def delete_attachments(conn: Connection, attachment_ids: list[uuid.UUID]) -> int:
    """Delete these rows; how many there were."""
    status = await conn.execute("DELETE FROM attachments WHERE id = ANY($1::uuid[])", attachment_ids)
    return int(status.split()[-1])


async def current_backups(conn: Connection) -> list[StoredBackup]:
    """Users' current backups (those no user has any more are the sweep's, missing object or not)."""
    rows = await conn.fetch(
        """SELECT object_key, size FROM backups
           WHERE state = 'current' AND user_id IS NOT NULL ORDER BY object_key"""
    )
    return [StoredBackup(**dict(row)) for row in rows]


async def delete_backups(conn: Connection, object_keys: list[str]) -> int:
    """Delete these rows; how many there were."""
    status = await conn.execute("DELETE FROM backups WHERE object_key = ANY($1::text[])", object_keys)
    return int(status.split()[-1])
