"""SQL for users, sessions and refresh tokens. Knows nothing of HTTP or JSON."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from veil.core.db import Connection


@dataclass(frozen=True)
class UserRecord:
    id: uuid.UUID
    password_hash: str
    status: str


@dataclass(frozen=True)
class SessionRecord:
    id: uuid.UUID
    user_id: uuid.UUID
    device_name: str | None
    ip: str | None
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime


async def user_by_email(conn: Connection, email: str) -> UserRecord | None:
    row = await conn.fetchrow("SELECT id, password_hash, status FROM users WHERE email = $1", email)
    return UserRecord(row["id"], row["password_hash"], row["status"]) if row else None


async def lock_password_hash(conn: Connection, user_id: uuid.UUID) -> str | None:
    """The account's password hash, share-locked until the transaction ends (None if the account
    is gone or not active)."""
    password_hash: str | None = await conn.fetchval(
        "SELECT password_hash FROM users WHERE id = $1 AND status = 'active' FOR SHARE", user_id
    )
    return password_hash


async def update_password_hash(
    conn: Connection, user_id: uuid.UUID, password_hash: str, now: datetime
) -> None:
    await conn.execute(
        "UPDATE users SET password_hash = $2, updated_at = $3 WHERE id = $1", user_id, password_hash, now
    )


async def insert_session(
    conn: Connection,
    *,
    session_id: uuid.UUID,
    user_id: uuid.UUID,
    device_name: str | None,
    ip: str | None,
    user_agent: str | None,
    now: datetime,
    expires_at: datetime,
) -> None:
    await conn.execute(
        """INSERT INTO sessions
               (id, user_id, device_name, ip, user_agent, created_at, last_seen_at, expires_at)
           VALUES ($1, $2, $3, $4::inet, $5, $6, $6, $7)""",
        session_id,
        user_id,
        device_name,
        ip,
        user_agent,
        now,
        expires_at,
    )


async def insert_refresh_token(
    conn: Connection, token_hash: bytes, session_id: uuid.UUID, now: datetime
) -> None:
    await conn.execute(
        "INSERT INTO refresh_tokens (token_hash, session_id, issued_at) VALUES ($1, $2, $3)",
        token_hash,
        session_id,
        now,
    )


async def consume_refresh_token(conn: Connection, token_hash: bytes, now: datetime) -> uuid.UUID | None:
    """Mark the token used if it was not; the session it belonged to, or None if already used or
    unknown. The row lock makes concurrent consumers queue: exactly one sees `used_at IS NULL`."""
    session_id: uuid.UUID | None = await conn.fetchval(
        """UPDATE refresh_tokens SET used_at = $2
           WHERE token_hash = $1 AND used_at IS NULL RETURNING session_id""",
        token_hash,
        now,
    )
    return session_id


async def session_of_used_token(conn: Connection, token_hash: bytes) -> uuid.UUID | None:
    session_id: uuid.UUID | None = await conn.fetchval(
        "SELECT session_id FROM refresh_tokens WHERE token_hash = $1 AND used_at IS NOT NULL", token_hash
    )
    return session_id


async def active_session(conn: Connection, session_id: uuid.UUID, now: datetime) -> SessionRecord | None:
    row = await conn.fetchrow(
        """SELECT s.id, s.user_id, s.device_name, host(s.ip) AS ip, s.created_at, s.last_seen_at, s.expires_at
           FROM sessions s JOIN users u ON u.id = s.user_id
           WHERE s.id = $1 AND s.revoked_at IS NULL AND s.expires_at > $2 AND u.status = 'active'""",
        session_id,
        now,
    )
    return SessionRecord(**dict(row)) if row else None


async def touch_session(conn: Connection, session_id: uuid.UUID, ip: str | None, now: datetime) -> None:
    await conn.execute(
        "UPDATE sessions SET last_seen_at = $2, ip = COALESCE($3::inet, ip) WHERE id = $1",
        session_id,
        now,
        ip,
    )


async def revoke_session(conn: Connection, session_id: uuid.UUID, reason: str, now: datetime) -> bool:
    status = await conn.execute(
        "UPDATE sessions SET revoked_at = $2, revoke_reason = $3 WHERE id = $1 AND revoked_at IS NULL",
        session_id,
        now,
        reason,
    )
    return bool(status == "UPDATE 1")


async def revoke_user_session(
    conn: Connection, user_id: uuid.UUID, session_id: uuid.UUID, reason: str, now: datetime
) -> bool:
    status = await conn.execute(
        """UPDATE sessions SET revoked_at = $3, revoke_reason = $4
           WHERE id = $2 AND user_id = $1 AND revoked_at IS NULL AND expires_at > $3""",
        user_id,
        session_id,
        now,
        reason,
    )
    return bool(status == "UPDATE 1")


async def active_sessions_of(conn: Connection, user_id: uuid.UUID, now: datetime) -> list[SessionRecord]:
    rows = await conn.fetch(
        """SELECT id, user_id, device_name, host(ip) AS ip, created_at, last_seen_at, expires_at
           FROM sessions WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2
           ORDER BY created_at""",
        user_id,
        now,
    )
    return [SessionRecord(**dict(row)) for row in rows]
