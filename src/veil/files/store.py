"""SQL for attachment records. No HTTP, no object-store calls."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from veil.core.db import Connection

_ATTACHMENT = (
    "id, owner_id, conversation_id, object_key, size, sha256, state, created_at, expires_at, completed_at"
)


@dataclass(frozen=True)
class AttachmentRecord:
    id: uuid.UUID
    owner_id: uuid.UUID | None
    conversation_id: uuid.UUID | None
    object_key: str
    size: int
    sha256: bytes
    state: str
    created_at: datetime
    expires_at: datetime | None
    completed_at: datetime | None


@dataclass(frozen=True)
class Usage:
    """What one owner holds: live reservations and bytes stored or reserved."""

    pending: int
    bytes: int
    next_expiry: datetime | None


@dataclass(frozen=True)
class Sighting:
    """An attachment as one user sees it: whether they own it and may read its conversation."""

    attachment: AttachmentRecord
    owned: bool
    member: bool


async def lock_owner(conn: Connection, owner_id: uuid.UUID) -> None:
    """Serialise one owner's reservations so that quota checks and inserts cannot interleave."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('attachments:' || $1::uuid::text, 0))", owner_id
    )


async def is_joined(conn: Connection, conversation_id: uuid.UUID, user_id: uuid.UUID) -> bool:
    return bool(
        await conn.fetchval(
            """SELECT EXISTS (SELECT 1 FROM members
                              WHERE conversation_id = $1 AND user_id = $2 AND state = 'joined')""",
            conversation_id,
            user_id,
        )
    )


async def usage(conn: Connection, owner_id: uuid.UUID, now: datetime) -> Usage:
    row = await conn.fetchrow(
        """SELECT count(*) FILTER (WHERE state = 'pending') AS pending,
                  coalesce(sum(size), 0) AS bytes,
                  min(expires_at) AS next_expiry
           FROM attachments
           WHERE owner_id = $1 AND (state = 'complete' OR expires_at > $2)""",
        owner_id,
        now,
    )
    assert row is not None
    return Usage(pending=row["pending"], bytes=row["bytes"], next_expiry=row["next_expiry"])


async def insert(conn: Connection, record: AttachmentRecord) -> None:
    await conn.execute(
        f"INSERT INTO attachments ({_ATTACHMENT}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",  # noqa: S608
        record.id,
        record.owner_id,
        record.conversation_id,
        record.object_key,
        record.size,
        record.sha256,
        record.state,
        record.created_at,
        record.expires_at,
        record.completed_at,
    )


async def sighting(
    conn: Connection, attachment_id: uuid.UUID, user_id: uuid.UUID, now: datetime
) -> Sighting | None:
    """The attachment as `user_id` sees it; None if there is none or it is an expired reservation."""
    row = await conn.fetchrow(
        f"""SELECT {_ATTACHMENT},
                   owner_id IS NOT DISTINCT FROM $2 AS owned,
                   EXISTS (SELECT 1 FROM members m
                           WHERE m.conversation_id = attachments.conversation_id
                             AND m.user_id = $2 AND m.state = 'joined') AS member
            FROM attachments
            WHERE id = $1 AND (state = 'complete' OR expires_at > $3)""",  # noqa: S608 - constant columns
        attachment_id,
        user_id,
        now,
    )
    if row is None:
        return None
    attachment = AttachmentRecord(*(row[name] for name in _ATTACHMENT.split(", ")))
    return Sighting(attachment, owned=row["owned"], member=row["member"])


async def mark_complete(conn: Connection, attachment_id: uuid.UUID, now: datetime) -> bool:
    """Complete a live reservation; False if it expired or was deleted meanwhile."""
    status = await conn.execute(
        """UPDATE attachments SET state = 'complete', completed_at = $2, expires_at = NULL
           WHERE id = $1 AND state = 'pending' AND expires_at > $2""",
        attachment_id,
        now,
    )
    return status == "UPDATE 1"


async def lock_for_removal(conn: Connection, attachment_id: uuid.UUID) -> str | None:
    """Lock one attachment row until the transaction ends; its object key, or None if gone."""
    key: str | None = await conn.fetchval(
        "SELECT object_key FROM attachments WHERE id = $1 FOR UPDATE", attachment_id
    )
    return key


async def lock_doomed(conn: Connection, now: datetime, created_before: datetime, limit: int) -> list[str]:
    """Attachments due for removal: reservations never completed in time, attachments whose owner
    or conversation is gone, and those past retention. Rows another process is removing are
    skipped."""
    rows = await conn.fetch(
        """SELECT object_key FROM attachments
           WHERE (state = 'pending' AND expires_at <= $1) OR owner_id IS NULL OR conversation_id IS NULL
              OR created_at < $2
           ORDER BY id
           LIMIT $3
           FOR UPDATE SKIP LOCKED""",
        now,
        created_before,
        limit,
    )
    return [row["object_key"] for row in rows]


async def delete(conn: Connection, attachment_id: uuid.UUID) -> None:
    await conn.execute("DELETE FROM attachments WHERE id = $1", attachment_id)


async def delete_by_keys(conn: Connection, object_keys: list[str]) -> None:
    await conn.execute("DELETE FROM attachments WHERE object_key = ANY($1::text[])", object_keys)
