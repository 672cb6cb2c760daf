"""SQL for pending sign-ups, invitations and known-device tokens. Knows nothing of HTTP or mail."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from veil.core.db import Connection


class EmailTaken(Exception):
    pass


@dataclass(frozen=True)
class Signup:
    id: uuid.UUID
    email: str
    password_hash: str
    code_hash: bytes
    invite_id: uuid.UUID | None
    attempts: int
    expires_at: datetime


async def email_in_use(conn: Connection, email: str) -> bool:
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM users WHERE email = $1)", email))


async def insert_signup(conn: Connection, signup: Signup, now: datetime) -> None:
    await conn.execute(
        """INSERT INTO signups
               (id, email, password_hash, code_hash, invite_id, attempts, created_at, expires_at)
           VALUES ($1, $2, $3, $4, $5, 0, $6, $7)""",
        signup.id,
        signup.email,
        signup.password_hash,
        signup.code_hash,
        signup.invite_id,
        now,
        signup.expires_at,
    )


async def lock_live_signups(conn: Connection, email: str, now: datetime, max_attempts: int) -> list[Signup]:
    """The address's sign-ups that a code may still confirm, locked until the transaction ends."""
    rows = await conn.fetch(
        """SELECT id, email, password_hash, code_hash, invite_id, attempts, expires_at
           FROM signups WHERE email = $1 AND expires_at > $2 AND attempts < $3
           ORDER BY created_at FOR UPDATE""",
        email,
        now,
        max_attempts,
    )
    return [Signup(**dict(row)) for row in rows]


async def count_attempt(conn: Connection, ids: list[uuid.UUID]) -> None:
    await conn.execute("UPDATE signups SET attempts = attempts + 1 WHERE id = ANY($1::uuid[])", ids)


async def delete_signups_of(conn: Connection, email: str) -> None:
    await conn.execute("DELETE FROM signups WHERE email = $1", email)


async def delete_expired_signups(conn: Connection, now: datetime) -> int:
    status = await conn.execute("DELETE FROM signups WHERE expires_at <= $1", now)
    return int(status.split()[-1])


async def create_verified_user(
    conn: Connection, user_id: uuid.UUID, email: str, password_hash: str, now: datetime
) -> None:
    try:
        await conn.execute(
            """INSERT INTO users (id, email, email_verified, password_hash, created_at, updated_at)
               VALUES ($1, $2, true, $3, $4, $4)""",
            user_id,
            email,
            password_hash,
            now,
        )
    except asyncpg.UniqueViolationError:
        raise EmailTaken from None


async def insert_invite(
    conn: Connection, invite_id: uuid.UUID, code_hash: bytes, uses: int, now: datetime, expires_at: datetime
) -> None:
    await conn.execute(
        """INSERT INTO invites (id, code_hash, uses_left, created_at, expires_at)
           VALUES ($1, $2, $3, $4, $5)""",
        invite_id,
        code_hash,
        uses,
        now,
        expires_at,
    )


async def usable_invite(conn: Connection, code_hash: bytes, now: datetime) -> uuid.UUID | None:
    invite_id: uuid.UUID | None = await conn.fetchval(
        "SELECT id FROM invites WHERE code_hash = $1 AND uses_left > 0 AND expires_at > $2", code_hash, now
    )
    return invite_id


async def use_invite(conn: Connection, invite_id: uuid.UUID, now: datetime) -> bool:
    """Take one use; False if none is left or the invite expired meanwhile."""
    status = await conn.execute(
        """UPDATE invites SET uses_left = uses_left - 1
           WHERE id = $1 AND uses_left > 0 AND expires_at > $2""",
        invite_id,
        now,
    )
    return bool(status == "UPDATE 1")


async def delete_spent_invites(conn: Connection, now: datetime) -> int:
    status = await conn.execute("DELETE FROM invites WHERE uses_left = 0 OR expires_at <= $1", now)
    return int(status.split()[-1])


async def known_device(conn: Connection, token_hash: bytes, user_id: uuid.UUID, now: datetime) -> bool:
    return bool(
        await conn.fetchval(
            """SELECT EXISTS (SELECT 1 FROM device_tokens
                              WHERE token_hash = $1 AND user_id = $2 AND expires_at > $3)""",
            token_hash,
            user_id,
            now,
        )
    )


async def remember_device(
    conn: Connection, token_hash: bytes, user_id: uuid.UUID, now: datetime, expires_at: datetime
) -> None:
    """Record (or refresh the lifetime of) a known-device token."""
    await conn.execute(
        """INSERT INTO device_tokens (token_hash, user_id, created_at, last_used_at, expires_at)
           VALUES ($1, $2, $3, $3, $4)
           ON CONFLICT (token_hash) DO UPDATE SET last_used_at = $3, expires_at = $4
           WHERE device_tokens.user_id = $2""",
        token_hash,
        user_id,
        now,
        expires_at,
    )


async def forget_devices(conn: Connection, user_id: uuid.UUID) -> None:
    """Every known-device token of the account (a password reset starts from scratch)."""
    await conn.execute("DELETE FROM device_tokens WHERE user_id = $1", user_id)


async def delete_expired_device_tokens(conn: Connection, now: datetime) -> int:
    status = await conn.execute("DELETE FROM device_tokens WHERE expires_at <= $1", now)
    return int(status.split()[-1])
