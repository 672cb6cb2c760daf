"""SQL for device keys, one-time prekeys, device messages, key changes, master keys and device
certificates."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from veil.core.db import Connection


@dataclass(frozen=True)
class DeviceRecord:
    device_id: uuid.UUID
    identity_key: bytes
    signing_key: bytes
    signed_prekey_id: int
    signed_prekey: bytes
    signed_prekey_signature: bytes
    # The master key's signature over the device's keys; None until the device is certified.
    certificate: bytes | None = None


@dataclass(frozen=True)
class MasterKey:
    user_id: uuid.UUID
    master_key: bytes
    changed_at: datetime


@dataclass(frozen=True)
class QueuedMessage:
    id: int
    sender_user_id: uuid.UUID
    sender_device_id: uuid.UUID
    content_type: str
    ciphertext: bytes
    nonce: bytes
    auth_tag: bytes
    created_at: datetime


@dataclass(frozen=True)
class GapRecord:
    dropped: int
    first_dropped_at: datetime


_DEVICE_COLUMNS = (
    "device_id, identity_key, signing_key, signed_prekey_id, signed_prekey, signed_prekey_signature"
)
# What is read back: the published columns and the certificate (written on its own).
_READ_COLUMNS = f"{_DEVICE_COLUMNS}, certificate"


async def lock_user_devices(conn: Connection, user_id: uuid.UUID) -> None:
    """Serialise key publication per user, so the device limit cannot be raced past."""
    await conn.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", user_id)


async def device(
    conn: Connection, device_id: uuid.UUID, owner: uuid.UUID | None = None
) -> DeviceRecord | None:
    """A device's keys; with `owner`, only if that user owns the device."""
    query = f"""SELECT {_READ_COLUMNS} FROM device_keys
                WHERE device_id = $1 AND ($2::uuid IS NULL OR user_id = $2)"""  # noqa: S608 - constant
    row = await conn.fetchrow(query, device_id, owner)
    return DeviceRecord(**dict(row)) if row else None


async def lock_own_device(conn: Connection, device_id: uuid.UUID, owner: uuid.UUID) -> DeviceRecord | None:
    """The owner's device, locked until commit: its keys cannot change while it is certified."""
    query = f"""SELECT {_READ_COLUMNS} FROM device_keys
                WHERE device_id = $1 AND user_id = $2 FOR UPDATE"""  # noqa: S608 - constant
    row = await conn.fetchrow(query, device_id, owner)
    return DeviceRecord(**dict(row)) if row else None


async def user_is_active(conn: Connection, user_id: uuid.UUID) -> bool:
    return await conn.fetchval("SELECT 1 FROM users WHERE id = $1 AND status = 'active'", user_id) is not None


async def notify_prekeys_low(conn: Connection, device_id: uuid.UUID, remaining: int) -> None:
    """The owner's socket hears it (a `prekeys_low` frame) when the transaction commits."""
    await conn.execute("SELECT pg_notify('veil_events', $1)", f"prekeys:{device_id}:{remaining}")


async def devices_of(conn: Connection, user_id: uuid.UUID) -> list[DeviceRecord]:
    rows = await conn.fetch(
        f"SELECT {_READ_COLUMNS} FROM device_keys WHERE user_id = $1 ORDER BY created_at",  # noqa: S608
        user_id,
    )
    return [DeviceRecord(**dict(row)) for row in rows]


async def count_devices(conn: Connection, user_id: uuid.UUID) -> int:
    count: int = await conn.fetchval("SELECT count(*) FROM device_keys WHERE user_id = $1", user_id)
    return count


async def upsert_device(conn: Connection, user_id: uuid.UUID, record: DeviceRecord, now: datetime) -> None:
    """Insert or replace a device's published keys. A certificate covers the identity and signing
    keys: if either changes, it is dropped in the same statement."""
    await conn.execute(
        f"""INSERT INTO device_keys (user_id, {_DEVICE_COLUMNS}, created_at, updated_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
            ON CONFLICT (device_id) DO UPDATE SET
                certificate = CASE
                    WHEN device_keys.identity_key = EXCLUDED.identity_key
                         AND device_keys.signing_key = EXCLUDED.signing_key
                    THEN device_keys.certificate END,
                identity_key = EXCLUDED.identity_key, signing_key = EXCLUDED.signing_key,
                signed_prekey_id = EXCLUDED.signed_prekey_id, signed_prekey = EXCLUDED.signed_prekey,
                signed_prekey_signature = EXCLUDED.signed_prekey_signature,
                updated_at = EXCLUDED.updated_at""",  # noqa: S608 - constant column list
        user_id,
        record.device_id,
        record.identity_key,
        record.signing_key,
        record.signed_prekey_id,
        record.signed_prekey,
        record.signed_prekey_signature,
        now,
    )


async def add_one_time_prekeys(
    conn: Connection, device_id: uuid.UUID, keys: list[tuple[int, bytes]], now: datetime
) -> list[int]:
    """Insert new keys in order; an identical re-upload is a no-op. Returns the key ids that
    already exist with *different* bytes (the caller refuses the whole request then)."""
    if not keys:
        return []
    ids = [key_id for key_id, _ in keys]
    publics = [public for _, public in keys]
    conflicts = await conn.fetch(
        """SELECT o.key_id FROM one_time_prekeys o
           JOIN unnest($2::bigint[], $3::bytea[]) AS k(key_id, public_key) ON k.key_id = o.key_id
           WHERE o.device_id = $1 AND o.public_key <> k.public_key""",
        device_id,
        ids,
        publics,
    )
    if conflicts:
        return [row["key_id"] for row in conflicts]
    await conn.execute(
        """INSERT INTO one_time_prekeys (device_id, key_id, public_key, created_at)
           SELECT $1, key_id, public_key, $4 FROM unnest($2::bigint[], $3::bytea[])
               WITH ORDINALITY AS k(key_id, public_key, position)
           ORDER BY position
           ON CONFLICT (device_id, key_id) DO NOTHING""",
        device_id,
        ids,
        publics,
        now,
    )
    return []


async def remaining_prekeys(conn: Connection, device_id: uuid.UUID) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM one_time_prekeys WHERE device_id = $1 AND claimed_at IS NULL", device_id
    )
    return count


async def claim_one_time_prekey(
    conn: Connection, device_id: uuid.UUID, now: datetime
) -> tuple[int, bytes] | None:
    """Hand out the oldest unclaimed key exactly once. SKIP LOCKED lets concurrent claimers take
    the next key instead of waiting for (and then losing) the same one."""
    row = await conn.fetchrow(
        """WITH next AS (
               SELECT key_id FROM one_time_prekeys
               WHERE device_id = $1 AND claimed_at IS NULL
               ORDER BY upload_seq LIMIT 1 FOR UPDATE SKIP LOCKED)
           UPDATE one_time_prekeys o SET claimed_at = $2 FROM next
           WHERE o.device_id = $1 AND o.key_id = next.key_id
           RETURNING o.key_id, o.public_key""",
        device_id,
        now,
    )
    return (row["key_id"], row["public_key"]) if row else None


async def record_key_change(
    conn: Connection, user_id: uuid.UUID, device_id: uuid.UUID, change: str, now: datetime
) -> None:
    await conn.execute(
        "INSERT INTO key_changes (user_id, device_id, change, created_at) VALUES ($1, $2, $3, $4)",
        user_id,
        device_id,
        change,
        now,
    )
    await conn.execute("SELECT pg_notify('veil_events', $1)", f"keys:{user_id}:{device_id}:{change}")


async def existing_devices(conn: Connection, device_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    rows = await conn.fetch("SELECT device_id FROM device_keys WHERE device_id = ANY($1::uuid[])", device_ids)
    return {row["device_id"] for row in rows}


async def blocking_devices(
    conn: Connection, device_ids: list[uuid.UUID], sender_user_id: uuid.UUID
) -> set[uuid.UUID]:
    """Those of `device_ids` whose owner blocked the sender: `enqueue` leaves their envelopes out."""
    rows = await conn.fetch(
        """SELECT k.device_id FROM device_keys k JOIN blocks b ON b.blocker_id = k.user_id
           WHERE k.device_id = ANY($1::uuid[]) AND b.blocked_id = $2""",
        device_ids,
        sender_user_id,
    )
    return {row["device_id"] for row in rows}


@dataclass(frozen=True)
class QueueUsage:
    """What one recipient device holds: its whole queue, and the envelopes of one sender."""

    total: int
    from_sender: int


async def queue_usage(
    conn: Connection, device_ids: list[uuid.UUID], sender_user_id: uuid.UUID, now: datetime
) -> dict[uuid.UUID, QueueUsage]:
    """Live (unexpired) queued envelopes per recipient device, in total and from this sender."""
    rows = await conn.fetch(
        """SELECT recipient_device_id, count(*) AS total,
                  count(*) FILTER (WHERE sender_user_id = $2) AS from_sender
           FROM device_messages
           WHERE recipient_device_id = ANY($1::uuid[]) AND expires_at > $3
           GROUP BY recipient_device_id""",
        device_ids,
        sender_user_id,
        now,
    )
    return {row["recipient_device_id"]: QueueUsage(row["total"], row["from_sender"]) for row in rows}


async def lock_devices(conn: Connection, device_ids: list[uuid.UUID]) -> None:
    """Serialise enqueuers per recipient device (in id order, so two senders cannot deadlock).

    Two things rest on it: the per-sender and total queue bounds hold under concurrency, and a
    device's envelope ids are assigned in commit order, so that reading by cursor and
    acknowledging `up_to_id` can never pass over an envelope that commits late with a lower id.
    NO KEY UPDATE: one-time prekey uploads for the device (foreign-key checks) are not held up."""
    await conn.execute(
        """SELECT 1 FROM device_keys WHERE device_id = ANY($1::uuid[])
           ORDER BY device_id FOR NO KEY UPDATE""",
        device_ids,
    )


async def enqueue(
    conn: Connection,
    messages: list[tuple[uuid.UUID, bytes, bytes, bytes]],
    *,
    sender_user_id: uuid.UUID,
    sender_device_id: uuid.UUID,
    content_type: str,
    now: datetime,
    expires_at: datetime,
) -> int:
    """Queue the envelopes in request order and wake their recipients' sockets, in one statement.

    An envelope for a device whose owner blocked the sender is left out right here (the caller
    answers 202 all the same, so the sender cannot tell), with no extra round trip per envelope.
    Returns how many were stored."""
    rows = await conn.fetch(
        """WITH incoming AS (
               SELECT * FROM unnest($1::uuid[], $2::bytea[], $3::bytea[], $4::bytea[])
                   WITH ORDINALITY AS m(device_id, ciphertext, nonce, auth_tag, position)),
           stored AS (
               INSERT INTO device_messages (recipient_device_id, sender_user_id, sender_device_id,
                   content_type, ciphertext, nonce, auth_tag, created_at, expires_at)
               SELECT m.device_id, $5, $6, $7, m.ciphertext, m.nonce, m.auth_tag, $8, $9
               FROM incoming m
               WHERE NOT EXISTS (
                   SELECT 1 FROM device_keys k JOIN blocks b ON b.blocker_id = k.user_id
                   WHERE k.device_id = m.device_id AND b.blocked_id = $5)
               ORDER BY m.position
               RETURNING recipient_device_id)
           -- Delivered on commit, to whichever process holds the recipient's socket.
           SELECT count(*) AS stored, pg_notify('veil_device_messages', recipient_device_id::text)
           FROM stored GROUP BY recipient_device_id""",
        [device for device, _, _, _ in messages],
        [ct for _, ct, _, _ in messages],
        [nonce for _, _, nonce, _ in messages],
        [tag for _, _, _, tag in messages],
        sender_user_id,
        sender_device_id,
        content_type,
        now,
        expires_at,
    )
    return sum(int(row["stored"]) for row in rows)


async def expire_queued(conn: Connection, device_id: uuid.UUID | None, now: datetime) -> int:
    """Delete expired messages (of one device, or all) and count them into the gap markers."""
    rows = await conn.fetch(
        """WITH gone AS (
               DELETE FROM device_messages
               WHERE expires_at <= $2 AND ($1::uuid IS NULL OR recipient_device_id = $1)
               RETURNING recipient_device_id, created_at)
           INSERT INTO device_message_gaps (recipient_device_id, dropped, first_dropped_at)
           SELECT recipient_device_id, count(*), min(created_at) FROM gone GROUP BY recipient_device_id
           ON CONFLICT (recipient_device_id) DO UPDATE
               SET dropped = device_message_gaps.dropped + EXCLUDED.dropped
           RETURNING dropped""",
        device_id,
        now,
    )
    return len(rows)


async def queued_for(
    conn: Connection, device_id: uuid.UUID, after_id: int, limit: int
) -> list[QueuedMessage]:
    rows = await conn.fetch(
        """SELECT id, sender_user_id, sender_device_id, content_type, ciphertext, nonce, auth_tag, created_at
           FROM device_messages WHERE recipient_device_id = $1 AND id > $2 ORDER BY id LIMIT $3""",
        device_id,
        after_id,
        limit,
    )
    return [QueuedMessage(**dict(row)) for row in rows]


async def gap_of(conn: Connection, device_id: uuid.UUID) -> GapRecord | None:
    row = await conn.fetchrow(
        "SELECT dropped, first_dropped_at FROM device_message_gaps WHERE recipient_device_id = $1", device_id
    )
    return GapRecord(row["dropped"], row["first_dropped_at"]) if row else None


async def acknowledge(conn: Connection, device_id: uuid.UUID, message_id: int) -> bool:
    status = await conn.execute(
        "DELETE FROM device_messages WHERE recipient_device_id = $1 AND id = $2", device_id, message_id
    )
    return bool(status == "DELETE 1")


async def acknowledge_up_to(conn: Connection, device_id: uuid.UUID, up_to_id: int) -> int:
    """Delete this device's envelopes with ids up to `up_to_id`; returns how many went."""
    status = await conn.execute(
        "DELETE FROM device_messages WHERE recipient_device_id = $1 AND id <= $2", device_id, up_to_id
    )
    return int(status.split()[-1])


async def acknowledge_ids(conn: Connection, device_id: uuid.UUID, ids: list[int]) -> int:
    """Delete those of `ids` that are this device's envelopes (anyone else's are left alone)."""
    status = await conn.execute(
        "DELETE FROM device_messages WHERE recipient_device_id = $1 AND id = ANY($2::bigint[])",
        device_id,
        ids,
    )
    return int(status.split()[-1])


async def clear_gap(conn: Connection, device_id: uuid.UUID) -> None:
    await conn.execute("DELETE FROM device_message_gaps WHERE recipient_device_id = $1", device_id)


# --- master keys and device certificates --------------------------------------------------------


async def master_key(conn: Connection, user_id: uuid.UUID, *, lock: bool = False) -> MasterKey | None:
    """The user's master key; with `lock`, held (FOR SHARE) until commit so a reset waits."""
    query = "SELECT user_id, master_key, changed_at FROM master_keys WHERE user_id = $1"
    row = await conn.fetchrow(query + (" FOR SHARE" if lock else ""), user_id)
    return MasterKey(**dict(row)) if row else None


async def active_master_key(conn: Connection, user_id: uuid.UUID) -> MasterKey | None:
    """The master key of an active account (nobody's for a disabled or unknown one)."""
    row = await conn.fetchrow(
        """SELECT m.user_id, m.master_key, m.changed_at FROM master_keys m
           JOIN users u ON u.id = m.user_id WHERE m.user_id = $1 AND u.status = 'active'""",
        user_id,
    )
    return MasterKey(**dict(row)) if row else None


async def insert_master_key(
    conn: Connection, user_id: uuid.UUID, key: bytes, now: datetime
) -> MasterKey | None:
    """Set the user's first master key; None (and nothing written) if one is set already."""
    row = await conn.fetchrow(
        """INSERT INTO master_keys (user_id, master_key, created_at, changed_at) VALUES ($1, $2, $3, $3)
           ON CONFLICT (user_id) DO NOTHING RETURNING user_id, master_key, changed_at""",
        user_id,
        key,
        now,
    )
    return MasterKey(**dict(row)) if row else None


async def replace_master_key(conn: Connection, user_id: uuid.UUID, key: bytes, now: datetime) -> MasterKey:
    """Replace the user's existing master key and drop every certificate the old one made; the
    user's contacts hear of it (`identity_changed`) when the transaction commits. The row is locked
    first, so a certification in progress (which holds it FOR SHARE) commits before its certificate
    is dropped here. The very key already set is a retry: nothing is written, nobody is told."""
    row = await conn.fetchrow(
        "SELECT user_id, master_key, changed_at FROM master_keys WHERE user_id = $1 FOR UPDATE", user_id
    )
    assert row is not None  # the caller found the row (it sets a first key itself), and it stays
    if row["master_key"] == key:
        return MasterKey(**dict(row))
    updated = await conn.fetchrow(
        """UPDATE master_keys SET master_key = $2, changed_at = $3 WHERE user_id = $1
           RETURNING user_id, master_key, changed_at""",
        user_id,
        key,
        now,
    )
    await conn.execute(
        "UPDATE device_keys SET certificate = NULL WHERE user_id = $1 AND certificate IS NOT NULL", user_id
    )
    await conn.execute("SELECT pg_notify('veil_events', $1)", f"identity:{user_id}")
    assert updated is not None  # the row is locked above
    return MasterKey(**dict(updated))


async def notify_device_pending(conn: Connection, user_id: uuid.UUID, device_id: uuid.UUID) -> None:
    """The user's other devices hear (`device_pending`) on commit that this device awaits approval."""
    await conn.execute("SELECT pg_notify('veil_events', $1)", f"pending:{user_id}:{device_id}")


async def set_certificate(conn: Connection, device_id: uuid.UUID, signature: bytes) -> None:
    await conn.execute("UPDATE device_keys SET certificate = $2 WHERE device_id = $1", device_id, signature)


async def password_hash(conn: Connection, user_id: uuid.UUID, *, lock: bool = False) -> str | None:
    """The active account's password hash (to re-check the password); with `lock`, the users row
    is held (FOR SHARE) until commit, so a password change cannot slip in between."""
    query = "SELECT password_hash FROM users WHERE id = $1 AND status = 'active'"
    value: str | None = await conn.fetchval(query + (" FOR SHARE" if lock else ""), user_id)
    return value
