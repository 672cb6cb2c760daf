"""SQL for accounts and data-subject requests. No HTTP, no mail, no object store."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from veil.core.db import Connection

# Notified when an export job is queued (veil.account.exports).
EXPORT_CHANNEL = "veil_exports"


class EmailTaken(Exception):
    pass


@dataclass(frozen=True)
class AccountRecord:
    id: uuid.UUID
    email: str
    email_verified: bool
    password_hash: str
    status: str
    role: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class RequestRecord:
    id: uuid.UUID
    user_id: uuid.UUID
    type: str
    new_email: str | None
    code_hash: bytes
    attempts: int
    created_at: datetime
    expires_at: datetime
    confirmed_at: datetime | None


async def account(conn: Connection, user_id: uuid.UUID) -> AccountRecord | None:
    row = await conn.fetchrow(
        """SELECT id, email, email_verified, password_hash, status, role, created_at, updated_at
           FROM users WHERE id = $1""",
        user_id,
    )
    return AccountRecord(**dict(row)) if row else None


async def email_in_use(conn: Connection, email: str) -> bool:
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM users WHERE email = $1)", email))


async def insert_request(conn: Connection, request: RequestRecord) -> None:
    await conn.execute(
        """INSERT INTO account_requests
               (id, user_id, type, new_email, code_hash, attempts, created_at, expires_at, confirmed_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
        request.id,
        request.user_id,
        request.type,
        request.new_email,
        request.code_hash,
        request.attempts,
        request.created_at,
        request.expires_at,
        request.confirmed_at,
    )


async def lock_request(conn: Connection, request_id: uuid.UUID, user_id: uuid.UUID) -> RequestRecord | None:
    row = await conn.fetchrow(
        """SELECT id, user_id, type, new_email, code_hash, attempts, created_at, expires_at, confirmed_at
           FROM account_requests WHERE id = $1 AND user_id = $2 FOR UPDATE""",
        request_id,
        user_id,
    )
    return RequestRecord(**dict(row)) if row else None


async def count_attempt(conn: Connection, request_id: uuid.UUID) -> None:
    await conn.execute("UPDATE account_requests SET attempts = attempts + 1 WHERE id = $1", request_id)


async def mark_confirmed(conn: Connection, request_id: uuid.UUID, now: datetime) -> None:
    await conn.execute("UPDATE account_requests SET confirmed_at = $2 WHERE id = $1", request_id, now)


async def change_email(conn: Connection, user_id: uuid.UUID, email: str, now: datetime) -> None:
    try:
        await conn.execute(
            "UPDATE users SET email = $2, email_verified = true, updated_at = $3 WHERE id = $1",
            user_id,
            email,
            now,
        )
    except asyncpg.UniqueViolationError:
        raise EmailTaken from None


async def disable_for_erasure(
    conn: Connection, user_id: uuid.UUID, now: datetime, purge_after: datetime
) -> list[uuid.UUID]:
    """Disable the account and end every session at once; the ids of the sessions ended."""
    await conn.execute(
        """UPDATE users SET status = 'disabled', disabled_at = $2, purge_after = $3, updated_at = $2
           WHERE id = $1""",
        user_id,
        now,
        purge_after,
    )
    rows = await conn.fetch(
        """UPDATE sessions SET revoked_at = $2, revoke_reason = 'account_disabled'
           WHERE user_id = $1 AND revoked_at IS NULL RETURNING id""",
        user_id,
        now,
    )
    return [row["id"] for row in rows]


@dataclass(frozen=True)
class ExportJob:
    object_key: str
    user_id: uuid.UUID | None
    request_id: uuid.UUID | None
    state: str
    expires_at: datetime


async def queue_export(
    conn: Connection,
    object_key: str,
    user_id: uuid.UUID,
    request_id: uuid.UUID,
    now: datetime,
    give_up_at: datetime,
) -> None:
    """A job for the export workers, who hear of it when the transaction commits; if none
    finishes it by `give_up_at`, the sweep removes it."""
    await conn.execute(
        """INSERT INTO export_archives (object_key, user_id, request_id, state, created_at, expires_at)
           VALUES ($1, $2, $3, 'building', $4, $5)""",
        object_key,
        user_id,
        request_id,
        now,
        give_up_at,
    )
    await conn.execute("SELECT pg_notify($1, '')", EXPORT_CHANNEL)


async def claim_export(conn: Connection, now: datetime) -> ExportJob | None:
    """The oldest export still to build, locked until the transaction ends (others skip it)."""
    row = await conn.fetchrow(
        """SELECT object_key, user_id, request_id, state, expires_at FROM export_archives
           WHERE state = 'building' AND expires_at > $1 AND user_id IS NOT NULL
           ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED""",
        now,
    )
    return ExportJob(**dict(row)) if row else None


async def mark_export_ready(conn: Connection, object_key: str, now: datetime, expires_at: datetime) -> None:
    await conn.execute(
        "UPDATE export_archives SET state = 'ready', ready_at = $2, expires_at = $3 WHERE object_key = $1",
        object_key,
        now,
        expires_at,
    )


async def export_of_request(conn: Connection, request_id: uuid.UUID) -> ExportJob | None:
    row = await conn.fetchrow(
        """SELECT object_key, user_id, request_id, state, expires_at FROM export_archives
           WHERE request_id = $1""",
        request_id,
    )
    return ExportJob(**dict(row)) if row else None


async def request_of(conn: Connection, request_id: uuid.UUID, user_id: uuid.UUID) -> RequestRecord | None:
    row = await conn.fetchrow(
        """SELECT id, user_id, type, new_email, code_hash, attempts, created_at, expires_at, confirmed_at
           FROM account_requests WHERE id = $1 AND user_id = $2""",
        request_id,
        user_id,
    )
    return RequestRecord(**dict(row)) if row else None


async def lock_expired_archives(conn: Connection, now: datetime, limit: int) -> list[str]:
    """Export archives whose download window is over or whose owner is gone."""
    rows = await conn.fetch(
        """SELECT object_key FROM export_archives WHERE expires_at <= $1 OR user_id IS NULL
           ORDER BY object_key LIMIT $2 FOR UPDATE SKIP LOCKED""",
        now,
        limit,
    )
    return [row["object_key"] for row in rows]


async def delete_archives(conn: Connection, keys: list[str]) -> None:
    await conn.execute("DELETE FROM export_archives WHERE object_key = ANY($1::text[])", keys)


# What an export holds, section by section (docs/privacy.md lists the same tables). Ciphertext,
# and anything that could serve as a content key, is never selected: only metadata and public keys.
_EXPORT_QUERIES: dict[str, str] = {
    "sessions": """SELECT id AS session_id, device_name, host(ip) AS ip, user_agent, created_at, last_seen_at,
                          expires_at, revoked_at, revoke_reason
                   FROM sessions WHERE user_id = $1 ORDER BY created_at""",
    "devices": """SELECT k.device_id, k.identity_key, k.signing_key, k.signed_prekey_id, k.signed_prekey,
                         k.certificate, k.created_at, k.updated_at,
                         (SELECT count(*) FROM one_time_prekeys o
                          WHERE o.device_id = k.device_id AND o.claimed_at IS NULL) AS one_time_prekeys_left,
                         l.key_id AS pq_last_resort_prekey_id, l.public_key AS pq_last_resort_prekey,
                         (SELECT count(*) FROM pq_one_time_prekeys p
                          WHERE p.device_id = k.device_id) AS pq_one_time_prekeys_left
                  FROM device_keys k LEFT JOIN pq_last_resort_prekeys l ON l.device_id = k.device_id
                  WHERE k.user_id = $1 ORDER BY k.created_at""",
    "identity": "SELECT master_key, created_at, changed_at FROM master_keys WHERE user_id = $1",
    "conversations": """SELECT m.conversation_id, c.type, m.role, m.state, m.created_at
                        FROM members m JOIN conversations c ON c.id = m.conversation_id
                        WHERE m.user_id = $1 ORDER BY m.created_at""",
    "messages_sent": """SELECT message_id, conversation_id, seq, content_type, key_epoch, parent_id,
                               length(ciphertext) AS ciphertext_bytes, created_at
                        FROM messages WHERE sender_id = $1 ORDER BY created_at, seq""",
    "receipts": """SELECT conversation_id, type, up_to_seq, updated_at
                   FROM receipts WHERE user_id = $1 ORDER BY conversation_id, type""",
    "attachments": """SELECT id AS attachment_id, conversation_id, size, sha256, state, created_at,
                             completed_at
                      FROM attachments WHERE owner_id = $1 ORDER BY created_at""",
    # The encrypted backup's size and time only: its object is ciphertext under the user's own key.
    "backup": """SELECT size, created_at FROM backups WHERE user_id = $1 AND state = 'current'""",
    "account_requests": """SELECT id AS request_id, type, created_at, confirmed_at
                           FROM account_requests WHERE user_id = $1 ORDER BY created_at""",
    # Whom the account blocked; who blocked the account is that other person's data.
    "blocks": """SELECT blocked_id AS user_id, created_at
                 FROM blocks WHERE blocker_id = $1 ORDER BY created_at, blocked_id""",
}


async def export_sections(conn: Connection, user_id: uuid.UUID) -> dict[str, list[dict[str, object]]]:
    """Every row an export holds, by section, as plain dicts (values still Python types)."""
    sections: dict[str, list[dict[str, object]]] = {}
    for name, query in _EXPORT_QUERIES.items():
        sections[name] = [dict(row) for row in await conn.fetch(query, user_id)]
    return sections


@dataclass(frozen=True)
class DueForPurge:
    id: uuid.UUID
    email: str
    disabled_at: datetime


async def lock_due_for_purge(conn: Connection, now: datetime, limit: int) -> list[DueForPurge]:
    rows = await conn.fetch(
        """SELECT id, email, disabled_at FROM users WHERE purge_after <= $1
           ORDER BY purge_after LIMIT $2 FOR UPDATE SKIP LOCKED""",
        now,
        limit,
    )
    return [DueForPurge(row["id"], row["email"], row["disabled_at"]) for row in rows]


async def purge_account(conn: Connection, user_id: uuid.UUID, limiter_keys: list[str]) -> None:
    """Remove every row that refers to the user (docs/privacy.md, `veil.account.registry`).

    Most of it goes by ON DELETE CASCADE from `users`; attachments, backups and export archives lose
    their owner (SET NULL) and the maintenance sweep removes their objects and rows. What refers to
    the user without a foreign key is handled here first.
    """
    conversations = [
        row["conversation_id"]
        for row in await conn.fetch("SELECT conversation_id FROM members WHERE user_id = $1", user_id)
    ]
    await conn.execute("DELETE FROM membership_events WHERE subject_id = $1", user_id)
    # The acting device and the commit it signed name the user too (the commit is opaque: it may
    # hold any of the user's ids), so they go with the actor.
    await conn.execute(
        """UPDATE membership_events SET actor_id = NULL, actor_device_id = NULL, commit = NULL
           WHERE actor_id = $1""",
        user_id,
    )
    await conn.execute("UPDATE members SET invited_by = NULL WHERE invited_by = $1", user_id)
    await conn.execute("DELETE FROM rate_limits WHERE key = ANY($1::text[])", limiter_keys)
    # A direct conversation's pair key names both users; the other keeps the conversation.
    await conn.execute(
        "UPDATE conversations SET direct_pair = NULL WHERE id = ANY($1::uuid[]) AND direct_pair IS NOT NULL",
        conversations,
    )
    await conn.execute("DELETE FROM users WHERE id = $1", user_id)
    # Conversations nobody has joined any more go too, as when the last member leaves.
    await conn.execute(
        """DELETE FROM conversations c WHERE c.id = ANY($1::uuid[])
           AND NOT EXISTS (SELECT 1 FROM members m WHERE m.conversation_id = c.id AND m.state = 'joined')""",
        conversations,
    )


async def insert_tombstone(conn: Connection, requested_at: datetime, now: datetime) -> None:
    await conn.execute(
        "INSERT INTO erasure_tombstones (requested_at, purged_at) VALUES ($1, $2)", requested_at, now
    )


async def replace_password_hash(
    conn: Connection, user_id: uuid.UUID, old_hash: str, new_hash: str, now: datetime
) -> bool:
    """Set the new hash only if the stored one is still the one the current password was checked
    against: of two concurrent changes, the second finds it replaced and changes nothing."""
    status = await conn.execute(
        "UPDATE users SET password_hash = $3, updated_at = $4 WHERE id = $1 AND password_hash = $2",
        user_id,
        old_hash,
        new_hash,
        now,
    )
    return bool(status == "UPDATE 1")


async def end_other_sessions(
    conn: Connection, user_id: uuid.UUID, keep: uuid.UUID, now: datetime
) -> list[uuid.UUID]:
    """Revoke every session of the user but `keep`; the ids revoked. Their devices (keys, queued
    device messages) go with them, by the `sessions_end_device` trigger."""
    rows = await conn.fetch(
        """UPDATE sessions SET revoked_at = $3, revoke_reason = 'password_changed'
           WHERE user_id = $1 AND id <> $2 AND revoked_at IS NULL RETURNING id""",
        user_id,
        keep,
        now,
    )
    return [row["id"] for row in rows]
