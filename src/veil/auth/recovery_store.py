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


async def replace_reset(
    conn: Connection,
    user_id: uuid.UUID,
    reset_id: uuid.UUID,
    code_hash: bytes,
    now: datetime,
    expires_at: datetime,
) -> None:
    """The account's one pending reset is this one from now on: older codes stop working."""
    await conn.execute(
        """INSERT INTO password_resets (user_id, id, code_hash, attempts, created_at, expires_at)
           VALUES ($1, $2, $3, 0, $4, $5)
           ON CONFLICT (user_id) DO UPDATE
           SET id = EXCLUDED.id, code_hash = EXCLUDED.code_hash, attempts = 0,
               created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at""",
        user_id,
        reset_id,
        code_hash,
        now,
        expires_at,
    )


async def lock_reset(conn: Connection, email: str) -> ResetRecord | None:
    """The pending reset of the account with this address, locked until the transaction ends, so
    that concurrent confirmations queue and at most one of them sees it."""
    row = await conn.fetchrow(
        """SELECT r.user_id, r.id, r.code_hash, r.attempts, r.expires_at, u.status
           FROM password_resets r JOIN users u ON u.id = r.user_id
           WHERE u.email = $1 FOR UPDATE OF r""",
        email,
    )
    return ResetRecord(**dict(row)) if row else None


async def count_attempt(conn: Connection, user_id: uuid.UUID) -> None:
    await conn.execute("UPDATE password_resets SET attempts = attempts + 1 WHERE user_id = $1", user_id)


async def delete_reset(conn: Connection, user_id: uuid.UUID) -> None:
    await conn.execute("DELETE FROM password_resets WHERE user_id = $1", user_id)


async def set_password_hash(conn: Connection, user_id: uuid.UUID, password_hash: str, now: datetime) -> None:
    await conn.execute(
        "UPDATE users SET password_hash = $2, updated_at = $3 WHERE id = $1", user_id, password_hash, now
    )


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


async def forget_limiter_keys(conn: Connection, keys: list[str]) -> None:
    await conn.execute("DELETE FROM rate_limits WHERE key = ANY($1::text[])", keys)
