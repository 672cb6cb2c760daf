"""SQL for password resets (table `password_resets`) and what a confirmed reset changes.

Knows nothing of HTTP, mail or codes: it stores and compares hashes the service computed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from veil.core.db import Connection


@dataclass(frozen=True)
class ResetRecord:
    user_id: uuid.UUID
    id: uuid.UUID
    code_hash: bytes
    attempts: int
    expires_at: datetime
    # Of the account: a reset only ever completes for an active one.
    status: str


async def active_user_id(conn: Connection, email: str) -> uuid.UUID | None:
    """The account with this address, if it exists and may sign in."""
    user_id: uuid.UUID | None = await conn.fetchval(
        "SELECT id FROM users WHERE email = $1 AND status = 'active'", email
    )
    return user_id


async def delete_expired(conn: Connection, now: datetime) -> int:
    """Pending resets nobody confirmed in time hold nothing useful any more."""
    status = await conn.execute("DELETE FROM password_resets WHERE expires_at <= $1", now)
    return int(status.split()[-1])


async def add_reset(
    conn: Connection,
    user_id: uuid.UUID,
    reset_id: uuid.UUID,
    code_hash: bytes,
    now: datetime,
    expires_at: datetime,
    *,
    keep: int,
) -> None:
    """Add a pending reset; the account keeps its `keep` newest ones, older codes stop working.
    Codes of other requests stay valid: a request someone else made for the address must not
    void the code its owner is about to type."""
    await conn.execute(
        """INSERT INTO password_resets (id, user_id, code_hash, attempts, created_at, expires_at)
           VALUES ($1, $2, $3, 0, $4, $5)""",
        reset_id,
        user_id,
        code_hash,
        now,
        expires_at,
    )
    await conn.execute(
        """DELETE FROM password_resets WHERE user_id = $1 AND id NOT IN (
               SELECT id FROM password_resets WHERE user_id = $1
               ORDER BY created_at DESC, id LIMIT $2)""",
        user_id,
        keep,
    )


async def lock_resets(conn: Connection, email: str) -> list[ResetRecord]:
    """The pending resets of the account with this address, locked until the transaction ends,
    so that concurrent confirmations queue and at most one of them sees them."""
    rows = await conn.fetch(
        """SELECT r.user_id, r.id, r.code_hash, r.attempts, r.expires_at, u.status
           FROM password_resets r JOIN users u ON u.id = r.user_id
           WHERE u.email = $1 ORDER BY r.id FOR UPDATE OF r""",
        email,
    )
    return [ResetRecord(**dict(row)) for row in rows]


async def count_attempts(conn: Connection, reset_ids: list[uuid.UUID]) -> None:
    await conn.execute(
        "UPDATE password_resets SET attempts = attempts + 1 WHERE id = ANY($1::uuid[])", reset_ids
    )


async def delete_resets(conn: Connection, user_id: uuid.UUID) -> None:
    """Every pending reset of the account: after a reset, or a password change (a code mailed
    before the change must not undo it later)."""
    await conn.execute("DELETE FROM password_resets WHERE user_id = $1", user_id)


async def end_every_session(conn: Connection, user_id: uuid.UUID, now: datetime) -> list[uuid.UUID]:
    """Revoke all of the account's sessions; the ids of those that were active. Each session's
    device (keys, queued device messages) goes with it, by the `sessions_end_device` trigger."""
    rows = await conn.fetch(
        """UPDATE sessions SET revoked_at = $2, revoke_reason = 'password_reset'
           WHERE user_id = $1 AND revoked_at IS NULL RETURNING id""",
        user_id,
        now,
    )
    return [row["id"] for row in rows]
