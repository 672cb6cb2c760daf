"""SQL for the operator role, users' metadata, the incident log and the audit trail. No HTTP, no
JSON. The incident and audit tables are append-only in the database itself (migration 0008)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime

from veil.core.db import Connection


@dataclass(frozen=True)
class UserMetadata:
    """What an operator may know about an account: no keys, no content, no IP addresses."""

    id: uuid.UUID
    email: str
    status: str
    role: str
    email_verified: bool
    created_at: datetime
    updated_at: datetime
    last_seen_at: datetime | None
    active_sessions: int
    devices: int
    conversations: int
    messages_sent: int
    attachments: int


@dataclass(frozen=True)
class Incident:
    id: uuid.UUID
    number: int
    title: str
    scope: str
    mitigation: str
    detected_at: datetime
    created_at: datetime
    created_by: uuid.UUID | None


@dataclass(frozen=True)
class IncidentEntry:
    seq: int
    kind: str
    body: str
    created_at: datetime
    author_id: uuid.UUID | None


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    operator_id: uuid.UUID | None
    action: str
    target_user_id: uuid.UUID | None
    incident_id: uuid.UUID | None
    created_at: datetime


@dataclass(frozen=True)
class Recipient:
    user_id: uuid.UUID
    email: str
    already_notified: bool


# Counts per user as correlated subqueries, each answered by an index on the user column.
_USER_METADATA = """
    SELECT u.id, u.email, u.status, u.role, u.email_verified, u.created_at, u.updated_at,
           (SELECT max(s.last_seen_at) FROM sessions s WHERE s.user_id = u.id) AS last_seen_at,
           (SELECT count(*) FROM sessions s
            WHERE s.user_id = u.id AND s.revoked_at IS NULL AND s.expires_at > $1) AS active_sessions,
           (SELECT count(*) FROM device_keys d WHERE d.user_id = u.id) AS devices,
           (SELECT count(*) FROM members m
            WHERE m.user_id = u.id AND m.state = 'joined') AS conversations,
           (SELECT count(*) FROM messages g WHERE g.sender_id = u.id) AS messages_sent,
           (SELECT count(*) FROM attachments a
            WHERE a.owner_id = u.id AND a.state = 'complete') AS attachments
    FROM users u
"""


async def is_operator(conn: Connection, user_id: uuid.UUID) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM users WHERE id = $1 AND role = 'operator' AND status = 'active')",
            user_id,
        )
    )


async def set_role(conn: Connection, email: str, role: str, now: datetime) -> tuple[uuid.UUID, bool] | None:
    """Give the account with this (normalised) email the role; its id and whether that changed
    anything, or None if there is no such account."""
    row = await conn.fetchrow("SELECT id, role FROM users WHERE email = $1 FOR UPDATE", email)
    if row is None:
        return None
    if row["role"] == role:
        return row["id"], False
    await conn.execute("UPDATE users SET role = $2, updated_at = $3 WHERE id = $1", row["id"], role, now)
    return row["id"], True


async def users(conn: Connection, after: uuid.UUID | None, limit: int, now: datetime) -> list[UserMetadata]:
    rows = await conn.fetch(
        _USER_METADATA + "WHERE $2::uuid IS NULL OR u.id > $2 ORDER BY u.id LIMIT $3", now, after, limit
    )
    return [UserMetadata(**dict(row)) for row in rows]


async def user(conn: Connection, user_id: uuid.UUID, now: datetime) -> UserMetadata | None:
    row = await conn.fetchrow(_USER_METADATA + "WHERE u.id = $2", now, user_id)
    return UserMetadata(**dict(row)) if row else None


async def user_by_email(conn: Connection, email: str, now: datetime) -> UserMetadata | None:
    row = await conn.fetchrow(_USER_METADATA + "WHERE u.email = $2", now, email)
    return UserMetadata(**dict(row)) if row else None


async def lock_user(conn: Connection, user_id: uuid.UUID) -> tuple[str, str] | None:
    """Lock the account row until the transaction ends; its (status, role), or None if gone."""
    row = await conn.fetchrow("SELECT status, role FROM users WHERE id = $1 FOR UPDATE", user_id)
    return (row["status"], row["role"]) if row else None


async def set_status(conn: Connection, user_id: uuid.UUID, status: str, now: datetime) -> None:
    await conn.execute("UPDATE users SET status = $2, updated_at = $3 WHERE id = $1", user_id, status, now)


async def revoke_sessions(
    conn: Connection, user_id: uuid.UUID, reason: str, now: datetime
) -> list[uuid.UUID]:
    """End every live session of the user (their devices go with them, see 0003); their ids."""
    rows = await conn.fetch(
        """UPDATE sessions SET revoked_at = $2, revoke_reason = $3
           WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2
           RETURNING id""",
        user_id,
        now,
        reason,
    )
    return [row["id"] for row in rows]


async def insert_incident(conn: Connection, incident: Incident) -> Incident:
    number = await conn.fetchval(
        """INSERT INTO incidents (id, title, scope, mitigation, detected_at, created_at, created_by)
           VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING number""",
        incident.id,
        incident.title,
        incident.scope,
        incident.mitigation,
        incident.detected_at,
        incident.created_at,
        incident.created_by,
    )
    return replace(incident, number=number)


_INCIDENT = "SELECT id, number, title, scope, mitigation, detected_at, created_at, created_by FROM incidents"


async def incidents(conn: Connection, before: int | None, limit: int) -> list[Incident]:
    """Newest first; `before` is the number of the last incident of the previous page."""
    rows = await conn.fetch(
        _INCIDENT + " WHERE $1::bigint IS NULL OR number < $1 ORDER BY number DESC LIMIT $2", before, limit
    )
    return [Incident(**dict(row)) for row in rows]


async def incident(conn: Connection, incident_id: uuid.UUID) -> Incident | None:
    row = await conn.fetchrow(_INCIDENT + " WHERE id = $1", incident_id)
    return Incident(**dict(row)) if row else None


async def incident_exists(conn: Connection, incident_id: uuid.UUID) -> bool:
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM incidents WHERE id = $1)", incident_id))


async def lock_incident(conn: Connection, incident_id: uuid.UUID) -> bool:
    """Whether the incident exists; if so its row stays locked until the transaction ends, so that
    concurrent notifications of it queue and each sees who the previous one told."""
    found = await conn.fetchval("SELECT 1 FROM incidents WHERE id = $1 FOR UPDATE", incident_id)
    return found is not None


async def entries(conn: Connection, incident_id: uuid.UUID) -> list[IncidentEntry]:
    rows = await conn.fetch(
        """SELECT id AS seq, kind, body, created_at, author_id FROM incident_entries
           WHERE incident_id = $1 ORDER BY id""",
        incident_id,
    )
    return [IncidentEntry(**dict(row)) for row in rows]


async def insert_entry(
    conn: Connection,
    incident_id: uuid.UUID,
    kind: str,
    body: str,
    author_id: uuid.UUID | None,
    now: datetime,
) -> IncidentEntry:
    seq = await conn.fetchval(
        """INSERT INTO incident_entries (incident_id, kind, body, created_at, author_id)
           VALUES ($1, $2, $3, $4, $5) RETURNING id""",
        incident_id,
        kind,
        body,
        now,
        author_id,
    )
    return IncidentEntry(seq, kind, body, now, author_id)


async def users_notified(conn: Connection, incident_id: uuid.UUID) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM incident_notifications WHERE incident_id = $1", incident_id
    )
    return count


async def recipients(conn: Connection, incident_id: uuid.UUID, user_ids: list[uuid.UUID]) -> list[Recipient]:
    """The existing accounts among `user_ids`, each with whether it was told of this incident."""
    rows = await conn.fetch(
        """SELECT u.id, u.email,
                  EXISTS (SELECT 1 FROM incident_notifications n
                          WHERE n.incident_id = $1 AND n.user_id = u.id) AS already_notified
           FROM users u WHERE u.id = ANY($2::uuid[]) ORDER BY u.id""",
        incident_id,
        user_ids,
    )
    return [Recipient(row["id"], row["email"], row["already_notified"]) for row in rows]


async def insert_notifications(
    conn: Connection, incident_id: uuid.UUID, told: list[tuple[uuid.UUID, datetime]]
) -> None:
    """One row per user told, with the time their notice was queued for sending (veil.core.outbox)."""
    await conn.execute(
        """INSERT INTO incident_notifications (incident_id, user_id, notified_at)
           SELECT $1, t.user_id, t.notified_at
           FROM unnest($2::uuid[], $3::timestamptz[]) AS t (user_id, notified_at)""",
        incident_id,
        [user_id for user_id, _ in told],
        [at for _, at in told],
    )


async def audit(
    conn: Connection,
    operator_id: uuid.UUID | None,
    action: str,
    now: datetime,
    *,
    target_user_id: uuid.UUID | None = None,
    incident_id: uuid.UUID | None = None,
) -> None:
    await conn.execute(
        """INSERT INTO operator_audit (operator_id, action, target_user_id, incident_id, created_at)
           VALUES ($1, $2, $3, $4, $5)""",
        operator_id,
        action,
        target_user_id,
        incident_id,
        now,
    )


async def audit_entries(conn: Connection, before: int | None, limit: int) -> list[AuditEntry]:
    """Newest first; `before` is the seq of the last entry of the previous page."""
    rows = await conn.fetch(
        """SELECT id AS seq, operator_id, action, target_user_id, incident_id, created_at
           FROM operator_audit WHERE $1::bigint IS NULL OR id < $1 ORDER BY id DESC LIMIT $2""",
        before,
        limit,
    )
    return [AuditEntry(**dict(row)) for row in rows]
